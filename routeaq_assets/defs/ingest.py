"""Ingestion: the site registry, hourly observations (raw_aurn) and hourly weather (raw_weather)."""


from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl

from routeaq_assets.adapters.pushgateway import push
from routeaq_assets.core.environment import load_settings
from routeaq_assets.core.progress import Progress
from routeaq_assets.core.prometheus import ingest_figures
from routeaq_assets.core.quality import (
    describe_duplicates,
    describe_missing_hours,
    duplicate_hours,
    hours_missing_from_source,
    nulled_share,
    split_out_of_range,
    value_changes,
    with_replaced_values,
)
from routeaq_assets.core.schema import POLLUTANTS, WEATHER, SourceDataError
from routeaq_assets.core.sites import measures, read_site_metadata, site_attributes
from routeaq_assets.core.windows import year_span
from routeaq_assets.defs.ingest_checks import (
    QUARANTINE_TABLE,
    nulled_check,
    observation_check_specs,
    quality_checks,
    quarantine_check,
    range_check,
    unique_check,
    weather_check_specs,
)
from routeaq_assets.defs.partitions import hourly_partitions, single_run_backfill
from routeaq_assets.observation_sources import ObservationSource
from routeaq_assets.sources.http import SourceUnavailable
from routeaq_assets.warehouse import WarehouseResource
from routeaq_assets.weather_sources import WeatherSource


class SiteRegistryConfig(dg.Config):
    # Empty: the deployment's sites (ROUTEAQ_SITES, read by the observation source's settings).
    sites: list[str] = []


@dg.asset(group_name="ingest", kinds={"duckdb"}, pool="warehouse")
def site_registry(config: SiteRegistryConfig, warehouse: WarehouseResource, observations: ObservationSource) -> dg.MaterializeResult:
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


def _retry_when_unavailable(context: dg.AssetExecutionContext, asset: str, unavailable: list[str], source: ObservationSource | WeatherSource) -> None:
    """Ask Dagster to run the step again, with exponential backoff (the source's
    ``retries_when_down`` and ``retry_wait_s``: by default after 2, 4 and 8 minutes), while a
    source is down (HTTP 5xx or timeouts after the HTTP client's own retries). A file that cannot
    be read as its format is not retried: asking again gives the same file."""
    if unavailable and context.retry_number < source.retries_when_down:
        wait = source.retry_wait_s * 2**context.retry_number
        context.log.warning(f"{asset}: {len(unavailable)} source requests failed ({unavailable[0]}); asking again in {wait:.0f} s")
        raise dg.RetryRequested(max_retries=source.retries_when_down, seconds_to_wait=wait)


def _window(context: dg.AssetExecutionContext) -> tuple[datetime, datetime]:
    window = context.partition_time_window
    return window.start, window.end


def _registry(warehouse: WarehouseResource) -> pl.DataFrame:
    if not warehouse.has_table("sites"):
        raise dg.Failure("no site registry in the warehouse: materialize site_registry first")
    return warehouse.query("SELECT * FROM sites")


def _newest_by_site(warehouse: WarehouseResource, end: datetime) -> dict[str, datetime]:
    """Each site's newest stored observation with a value, looked for from 30 days before the
    window's end (a site silent for longer drops out of the figures)."""
    rows = warehouse.query(
        "SELECT site_id, max(time) AS newest FROM observations WHERE value IS NOT NULL AND time >= ? GROUP BY site_id", [end - timedelta(days=30)]
    )
    return dict(rows.iter_rows())


@dg.asset(**HOURLY_INGEST, check_specs=observation_check_specs("raw_aurn"))
def raw_aurn(context: dg.AssetExecutionContext, warehouse: WarehouseResource, observations: ObservationSource):
    """Hourly observations of every registered site (observations contract), read from the
    configured source. Only what was read is replaced, site-year by site-year: a site-year the
    source does not have (no file, a 404, a site no longer registered) is no new data and keeps
    its stored rows. A site-year that cannot be read, repeats an hour, or whose file no longer
    holds hours stored from it (truncated) keeps its stored rows and fails the partition, named;
    the other site-years are written. Values outside their physical range are kept out of the
    observations and stored with the reason in ``observations_quarantine``, beside the stored
    value each one displaced (``replaced_value``), so a re-read loses nothing that was stored.
    ``rows_changed`` counts what the re-read changed, by kind."""
    start, end = _window(context)
    unavailable: list[str] = []
    read, sources, errors, planned, progress = _read_site_years(context, observations, _registry(warehouse), start, end, unavailable)
    stored = _stored_rows(warehouse, "observations", start, end, sources, "site_id, time, pollutant, value, status, source")
    # What the write replaces: every stored row of the sites read, from any source (a live hour
    # replaced by the archive's ratified value counts as changed).
    previous = _stored_rows(warehouse, "observations", start, end, sources, "site_id, time, pollutant, value, status, source", same_source=False)
    previous_quarantine = _stored_rows(warehouse, QUARANTINE_TABLE, start, end, sources, "*", same_source=False)
    shrunk = _shrunk_sites(context, pl.concat(read.values()) if read else stored.clear(), stored, errors)
    read = {key: rows for key, rows in read.items() if key[0] not in shrunk}
    if not read and not errors:
        raise dg.Failure(f"raw_aurn: no observations for any site in {start}..{end}")
    kept, quarantined, replaced = {}, {}, 0
    for key, rows in read.items():
        kept[key], quarantined[key] = split_out_of_range(rows)
    progress.note(f"writing {sum(rows.height for rows in kept.values()):,} rows")
    for lo, hi, sites, part in _by_year(kept, start, end):
        replaced += warehouse.replace_window("observations", part, lo, hi, site_ids=sites)
    for lo, hi, sites, part in _by_year(quarantined, start, end):
        part = with_replaced_values(part, previous, previous_quarantine)
        warehouse.replace_window(QUARANTINE_TABLE, part.with_columns(pl.lit(datetime.now(timezone.utc)).alias("quarantined_at")), lo, hi, site_ids=sites)
    _retry_when_unavailable(context, "raw_aurn", unavailable, observations)
    if errors:
        raise dg.Failure(
            f"raw_aurn: {len(errors)} of {planned} site-years failed ({len(read)} written, the failed ones keep their stored rows):\n"
            + "\n".join(errors)
        )
    frame = pl.concat(kept.values())
    quarantine = pl.concat(quarantined.values())
    keys = ["site_id", "time", "pollutant"]
    changes = value_changes(previous, frame, quarantine)
    if url := load_settings().pushgateway_url:
        push(url, "ingest", ingest_figures(frame.height, _newest_by_site(warehouse, end), datetime.now(timezone.utc)), context.log)
    yield dg.MaterializeResult(
        metadata={
            "rows": frame.height,
            "rows_replaced": replaced,
            "rows_changed": dg.MetadataValue.int(sum(changes.values())),
            "rows_changed_by_kind": dg.MetadataValue.json(changes),
            "rows_quarantined": quarantine.height,
            "sites": frame["site_id"].n_unique(),
            "site_years_read": len(read),
            "missing_share": round(frame["value"].null_count() / max(frame.height, 1), 4),
            "window": f"{start.isoformat()} .. {end.isoformat()}",
        }
    )
    yield range_check(warehouse, start, end)
    yield unique_check(warehouse, "observations", keys, start, end)
    yield quarantine_check(quarantine)
    yield nulled_check(changes, nulled_share(previous, changes))
    yield from quality_checks(warehouse, start, end)


def _read_site_years(context, observations: ObservationSource, registry: pl.DataFrame, start: datetime, end: datetime, unavailable: list[str]):
    """Every site-year file of the window, fetched and parsed before anything is written:
    (rows in the window per site-year, the files read, problems named, site-years planned).
    A site-year with no file, or an empty one, is no new data; one that cannot be parsed or
    repeats an hour is a problem; one whose source is down is also added to ``unavailable``."""
    jobs = {}
    for site_id in sorted(registry["site_id"].unique()):
        for year in year_span(start, end):
            wanted = [p for p in POLLUTANTS if measures(registry, site_id, p, year)]
            if wanted:
                jobs[(site_id, year)] = wanted
            else:
                context.log.info(f"{site_id} measures no RouteAQ pollutant in {year}: skipped")

    def fetch(key: tuple[str, int]) -> pl.DataFrame | str | None:
        site_id, year = key
        try:
            return observations.hours(site_id, year, start, end, jobs[key])  # the source picks archive or live hours
        except SourceUnavailable as exc:
            unavailable.append(f"site {site_id}, year {year}: {exc}")
            return unavailable[-1]
        except (SourceDataError, OSError) as exc:
            return f"site {site_id}, year {year}: {exc}"

    read: dict[tuple[str, int], pl.DataFrame] = {}
    sources, errors = [], []
    progress = Progress("raw_aurn", len(jobs), "site-years read", context.log.info)
    with ThreadPoolExecutor(max_workers=observations.max_concurrency) as pool:
        for (site_id, year), site_year in zip(jobs, pool.map(fetch, jobs)):
            progress.advance(f"{site_id} {year}")
            if isinstance(site_year, str):
                errors.append(site_year)
                continue
            if site_year is None or site_year.is_empty():
                context.log.info(f"{site_id} {year}: the source has no file (no new data; stored rows kept)")
                continue
            lo, hi = _year_window(year, start, end)
            rows = site_year.filter(pl.col("time").is_between(lo, hi, closed="left") & pl.col("pollutant").is_in(jobs[(site_id, year)]))
            repeated = duplicate_hours(rows)
            if not repeated.is_empty():
                errors.extend(f"year {year}: {sentence}" for sentence in describe_duplicates(repeated))
                continue
            sources.append(site_year.select("site_id", "source").unique())
            read[(site_id, year)] = rows
    return read, (pl.concat(sources) if sources else None), errors, len(jobs), progress


def _year_window(year: int, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The part of [start, end) in one calendar year (site-year files hold one year each)."""
    return max(start, datetime(year, 1, 1, tzinfo=timezone.utc)), min(end, datetime(year + 1, 1, 1, tzinfo=timezone.utc))


def _stored_rows(
    warehouse: WarehouseResource, table: str, start: datetime, end: datetime, read_from: pl.DataFrame | None, columns: str, same_source: bool = True
) -> pl.DataFrame:
    """Stored rows of [start, end) of the sites read again: only those that came from the same
    files (``site_id``, ``source``), or with ``same_source=False`` every source's (live hours
    included), which is what a re-ingest replaces."""
    if read_from is None or not warehouse.has_table(table):
        return pl.DataFrame()
    stored = warehouse.query(
        f"SELECT {columns} FROM {table} WHERE time >= ? AND time < ? AND list_contains(?, site_id)", [start, end, read_from["site_id"].unique().to_list()]
    )
    return stored.join(read_from, on=["site_id", "source"], how="semi") if same_source else stored


def _shrunk_sites(context, frame: pl.DataFrame, stored: pl.DataFrame, errors: list[str]) -> set[str]:
    """Sites whose files no longer hold hours stored from them (each reported in ``errors``):
    they are not written, so their stored rows stay."""
    if stored.is_empty():
        return set()
    missing = hours_missing_from_source(stored, frame)
    for message in describe_missing_hours(missing):
        errors.append(message)
        context.log.error(message)
    return set(missing["site_id"].to_list())


def _by_year(read: dict[tuple[str, int], pl.DataFrame], start: datetime, end: datetime):
    """(start, end, sites, rows) per calendar year: the sites read that year replace their own
    rows only."""
    for year in sorted({year for _, year in read}):
        lo, hi = _year_window(year, start, end)
        sites = sorted(site for site, y in read if y == year)
        yield lo, hi, sites, pl.concat([read[(site, year)] for site in sites])


@dg.asset(**HOURLY_INGEST, check_specs=weather_check_specs("raw_weather"))
def raw_weather(context: dg.AssetExecutionContext, warehouse: WarehouseResource, weather: WeatherSource):
    """Hourly weather at every registered site (weather contract), with its kind (reanalysis or
    forecast). As for observations, only the sites read are replaced: a site the source has no
    weather for keeps its stored weather (so a site whose observation file vanished keeps both)."""
    start, end = _window(context)
    sites = site_attributes(_registry(warehouse))
    read, errors, unavailable = {}, [], []
    progress = Progress("raw_weather", sites.height, "sites read", context.log.info)
    for site in sites.iter_rows(named=True):
        try:
            rows = weather.window(site, start, end)
            progress.advance(site["site_id"])
        except (SourceDataError, SourceUnavailable, OSError) as exc:
            errors.append(f"site {site['site_id']}, {start}..{end}: {exc}")
            if isinstance(exc, SourceUnavailable):
                unavailable.append(errors[-1])
            continue
        if rows.is_empty():
            context.log.info(f"{site['site_id']}: the source has no weather for {start}..{end} (no new data; stored rows kept)")
        else:
            read[site["site_id"]] = rows
    from_files = pl.concat([rows.select("site_id", "source").unique() for rows in read.values()]) if read else None
    stored = _stored_rows(warehouse, "weather", start, end, from_files, "site_id, time, source")
    shrunk = _shrunk_sites(context, pl.concat(read.values()) if read else stored.clear(), stored, errors)
    read = {site: rows for site, rows in read.items() if site not in shrunk}
    frame = pl.concat(read.values()) if read else pl.DataFrame(schema=WEATHER)
    replaced = warehouse.replace_window("weather", frame, start, end, site_ids=sorted(read))
    _retry_when_unavailable(context, "raw_weather", unavailable, weather)
    if errors:
        raise dg.Failure(f"raw_weather: {len(errors)} sites failed ({len(read)} written, the failed ones keep their stored rows):\n" + "\n".join(errors))
    yield dg.MaterializeResult(
        metadata={"rows": frame.height, "rows_replaced": replaced, "sites": len(read), "window": f"{start.isoformat()} .. {end.isoformat()}"}
    )
    yield unique_check(warehouse, "weather", ["site_id", "time"], start, end)
