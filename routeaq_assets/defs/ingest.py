"""Ingestion: the site registry, hourly observations (raw_aurn) and hourly weather (raw_weather)."""


from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl

from routeaq_assets.core.quality import changed_rows, daily_completeness, frozen_runs
from routeaq_assets.core.schema import POLLUTANTS, SourceDataError
from routeaq_assets.core.sites import measures, read_site_metadata, site_attributes
from routeaq_assets.defs.partitions import hourly_partitions, single_run_backfill
from routeaq_assets.resources import ObservationSource, Warehouse, WeatherSource
from routeaq_assets.sources.demo_network import year_span
from routeaq_assets.sources.http import SourceUnavailable

# Published hourly values can dip a little below zero (instrument noise near the detection
# limit, e.g. -0.5 ug/m3 PM2.5 in ratified AURN data); anything outside these bounds is an error.
VALUE_RANGES = {"pm25": (-10.0, 1000.0), "pm10": (-10.0, 2000.0), "no2": (-10.0, 2000.0), "o3": (-10.0, 1000.0), "nox": (-10.0, 5000.0)}
CHECK_VALUE_RANGE = "values_in_physical_range"
CHECK_UNIQUE_HOURS = "one_row_per_site_hour"
CHECK_COMPLETENESS = "daily_completeness"
CHECK_FRESHNESS = "newest_hour_is_recent"
CHECK_FROZEN = "no_frozen_values"
MIN_DAILY_COMPLETENESS = 0.75  # the usual data-capture rule for a valid daily mean
MAX_AGE_HOURS = 6
FROZEN_HOURS = 12


class SiteRegistryConfig(dg.Config):
    # Empty: the deployment's sites (ROUTEAQ_SITES, read by the observation source's settings).
    sites: list[str] = []


@dg.asset(group_name="ingest", kinds={"duckdb"}, pool="warehouse")
def site_registry(config: SiteRegistryConfig, warehouse: Warehouse, observations: ObservationSource) -> dg.MaterializeResult:
    """The monitoring sites RouteAQ forecasts for: network, coordinates, type, and which
    pollutants each measures from when to when (the network's published metadata)."""
    try:
        registry = read_site_metadata(observations.network_metadata(), network=observations.network)
    except (SourceDataError, SourceUnavailable, OSError) as exc:
        raise dg.Failure(f"site_registry: {exc}") from exc
    wanted = [s.upper() for s in config.sites or observations.sites]
    unknown = sorted(set(wanted) - set(registry["site_id"].to_list()))
    if unknown:
        raise dg.Failure(f"site_registry: sites {unknown} are not in the {observations.network} metadata")
    registry = registry.filter(pl.col("site_id").is_in(wanted))
    warehouse.replace_table("sites", registry)
    attrs = site_attributes(registry)
    return dg.MaterializeResult(
        metadata={
            "sites": dg.MetadataValue.md(attrs.select("site_id", "site_name", "location_type").to_pandas().to_markdown(index=False)),
            "num_sites": attrs.height,
        }
    )


# Both hourly ingestion assets: written to the warehouse one window at a time, ranges in one run.
HOURLY_INGEST = dict(
    group_name="ingest",
    kinds={"duckdb"},
    partitions_def=hourly_partitions,
    backfill_policy=single_run_backfill,
    deps=[site_registry],
    pool="warehouse",
)


def _window(context: dg.AssetExecutionContext) -> tuple[datetime, datetime]:
    window = context.partition_time_window
    return window.start, window.end


def _registry(warehouse: Warehouse) -> pl.DataFrame:
    if not warehouse.has_table("sites"):
        raise dg.Failure("no site registry in the warehouse: materialize site_registry first")
    return warehouse.query("SELECT * FROM sites")


def _range_check(frame: pl.DataFrame) -> dg.AssetCheckResult:
    bounds = pl.DataFrame({"pollutant": list(VALUE_RANGES), "low": [b[0] for b in VALUE_RANGES.values()], "high": [b[1] for b in VALUE_RANGES.values()]})
    bad = frame.join(bounds, on="pollutant").filter((pl.col("value") < pl.col("low")) | (pl.col("value") > pl.col("high")))
    return dg.AssetCheckResult(
        check_name=CHECK_VALUE_RANGE,
        passed=bad.height == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"out_of_range_rows": bad.height, "ranges": str(VALUE_RANGES), "examples": str(bad.head(5).rows())},
    )


def _quality_checks(warehouse: Warehouse, start: datetime, end: datetime):
    """Completeness of the days the window touches, frozen values over the last day, freshness."""
    day_start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    recent = warehouse.query(
        "SELECT site_id, time, pollutant, value FROM observations WHERE time >= ? AND time < ?",
        [min(day_start, end - timedelta(hours=FROZEN_HOURS * 2)), end],
    )
    completeness = daily_completeness(recent.filter(pl.col("time") >= day_start), end)
    low = completeness.filter(pl.col("completeness") < MIN_DAILY_COMPLETENESS)
    yield dg.AssetCheckResult(
        check_name=CHECK_COMPLETENESS,
        passed=low.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"threshold": MIN_DAILY_COMPLETENESS, "site_days_below": low.height, "lowest": float(completeness["completeness"].min() or 0.0), "examples": str(low.head(5).rows())},
    )
    frozen = frozen_runs(recent, FROZEN_HOURS)
    yield dg.AssetCheckResult(
        check_name=CHECK_FROZEN,
        passed=frozen.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"threshold_hours": FROZEN_HOURS, "frozen_runs": frozen.height, "examples": str(frozen.head(5).rows())},
    )
    (newest,) = warehouse.query("SELECT max(time) FROM observations WHERE value IS NOT NULL").row(0)
    age = (datetime.now(timezone.utc) - newest) / timedelta(hours=1) if newest else float("inf")
    yield dg.AssetCheckResult(
        check_name=CHECK_FRESHNESS,
        passed=age <= MAX_AGE_HOURS,
        severity=dg.AssetCheckSeverity.WARN,
        description=None if age <= MAX_AGE_HOURS else f"newest observation {newest} is {age:.0f} h old (a backfill of past hours, or a feed that stopped)",
        metadata={"newest_observation": str(newest), "age_hours": round(age, 1), "threshold_hours": MAX_AGE_HOURS},
    )


def _unique_check(warehouse: Warehouse, table: str, keys: list[str], start: datetime, end: datetime) -> dg.AssetCheckResult:
    (duplicates,) = warehouse.query(
        f"SELECT count(*) AS n FROM (SELECT {', '.join(keys)} FROM {table} WHERE time >= ? AND time < ? "
        f"GROUP BY ALL HAVING count(*) > 1)",
        [start, end],
    ).row(0)
    return dg.AssetCheckResult(
        check_name=CHECK_UNIQUE_HOURS,
        passed=duplicates == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"duplicate_keys": duplicates, "keys": ", ".join(keys), "threshold": 0},
    )


@dg.asset(
    **HOURLY_INGEST,
    check_specs=[
        dg.AssetCheckSpec(CHECK_VALUE_RANGE, asset="raw_aurn", description="Every value within its pollutant's physical range."),
        dg.AssetCheckSpec(CHECK_UNIQUE_HOURS, asset="raw_aurn", description="One row per site, hour and pollutant."),
        dg.AssetCheckSpec(CHECK_COMPLETENESS, asset="raw_aurn", description="Each site and pollutant has values for 75 % of each day's hours."),
        dg.AssetCheckSpec(CHECK_FRESHNESS, asset="raw_aurn", description="The newest stored observation is at most 6 hours old."),
        dg.AssetCheckSpec(CHECK_FROZEN, asset="raw_aurn", description="No site repeats one value for 12 hours or more."),
    ],
)
def raw_aurn(context: dg.AssetExecutionContext, warehouse: Warehouse, observations: ObservationSource):
    """Hourly observations of every registered site (observations contract), read from the
    configured source. A site-year the source does not have is no data; a file that cannot be
    read fails the partition and leaves what is stored untouched."""
    start, end = _window(context)
    registry = _registry(warehouse)
    jobs = {}
    for site_id in sorted(registry["site_id"].unique()):
        for year in year_span(start, end):
            wanted = [p for p in POLLUTANTS if measures(registry, site_id, p, year)]
            if wanted:
                jobs[(site_id, year)] = wanted
            else:
                context.log.info(f"{site_id} measures no RouteAQ pollutant in {year}: skipped")

    def fetch(key: tuple[str, int]) -> pl.DataFrame | None:
        site_id, year = key
        try:
            return observations.site_year(site_id, year)
        except (SourceDataError, SourceUnavailable, OSError) as exc:
            raise dg.Failure(f"raw_aurn: site {site_id}, year {year}: {exc}") from exc

    # Every file is fetched and parsed before anything is written: one failure leaves the store as it was.
    frames = []
    with ThreadPoolExecutor(max_workers=observations.max_concurrency) as pool:
        for (site_id, year), site_year in zip(jobs, pool.map(fetch, jobs)):
            if site_year is None:
                context.log.info(f"{site_id} {year}: the source has no file (no data)")
                continue
            frames.append(site_year.filter(pl.col("time").is_between(start, end, closed="left") & pl.col("pollutant").is_in(jobs[(site_id, year)])))
    frame = pl.concat(frames) if frames else pl.DataFrame()
    if frame.is_empty():
        raise dg.Failure(f"raw_aurn: no observations for any site in {start}..{end}")
    keys = ["site_id", "time", "pollutant"]
    stored = warehouse.query("SELECT * FROM observations WHERE time >= ? AND time < ?", [start, end]) if warehouse.has_table("observations") else pl.DataFrame()
    changed = changed_rows(stored, frame, keys, ["value", "status"])
    replaced = warehouse.replace_window("observations", frame, start, end)
    yield dg.MaterializeResult(
        metadata={
            "rows": frame.height,
            "rows_replaced": replaced,
            "rows_changed": dg.MetadataValue.int(changed),
            "sites": frame["site_id"].n_unique(),
            "missing_share": round(frame["value"].null_count() / frame.height, 4),
            "window": f"{start.isoformat()} .. {end.isoformat()}",
        }
    )
    yield _range_check(frame)
    yield _unique_check(warehouse, "observations", keys, start, end)
    yield from _quality_checks(warehouse, start, end)


@dg.asset(
    **HOURLY_INGEST,
    check_specs=[dg.AssetCheckSpec(CHECK_UNIQUE_HOURS, asset="raw_weather", description="One row per site and hour.")],
)
def raw_weather(context: dg.AssetExecutionContext, warehouse: Warehouse, weather: WeatherSource):
    """Hourly weather at every registered site (weather contract), with its kind
    (reanalysis or forecast)."""
    start, end = _window(context)
    sites = site_attributes(_registry(warehouse))
    frames = []
    for site in sites.iter_rows(named=True):
        try:
            frames.append(weather.window(site, start, end))
        except (SourceDataError, SourceUnavailable, OSError) as exc:
            raise dg.Failure(f"raw_weather: site {site['site_id']}, {start}..{end}: {exc}") from exc
    frame = pl.concat(frames)
    replaced = warehouse.replace_window("weather", frame, start, end)
    yield dg.MaterializeResult(
        metadata={"rows": frame.height, "rows_replaced": replaced, "sites": frame["site_id"].n_unique(), "window": f"{start.isoformat()} .. {end.isoformat()}"}
    )
    yield _unique_check(warehouse, "weather", ["site_id", "time"], start, end)
