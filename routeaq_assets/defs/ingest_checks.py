"""The checks of the ingestion assets. Those that guard downstream data (physical range, one row
per key) are blocking: when they fail, silver_features does not run on the data and the run fails."""

from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl

from routeaq_assets.core.quality import VALUE_RANGES, daily_completeness, frozen_runs, markdown_table, out_of_range
from routeaq_assets.warehouse import WarehouseResource

CHECK_VALUE_RANGE = "values_in_physical_range"
CHECK_UNIQUE_HOURS = "one_row_per_site_hour"
CHECK_QUARANTINE = "no_rows_quarantined"
CHECK_COMPLETENESS = "daily_completeness"
CHECK_FRESHNESS = "newest_hour_is_recent"
CHECK_FROZEN = "no_frozen_values"
CHECK_NULLED = "stored_values_not_nulled"
MAX_NULLED_SHARE = 0.05  # a re-read that empties more of the stored values than this is suspect
MIN_DAILY_COMPLETENESS = 0.75  # the usual data-capture rule for a valid daily mean
MAX_AGE_HOURS = 6
FROZEN_HOURS = 12
QUARANTINE_TABLE = "observations_quarantine"
RANGES_TEXT = ", ".join(f"{p} {low:g} to {high:g}" for p, (low, high) in VALUE_RANGES.items())


def observation_check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(CHECK_VALUE_RANGE, asset=asset, blocking=True, description="Every stored value of the window within its pollutant's physical range."),
        dg.AssetCheckSpec(CHECK_UNIQUE_HOURS, asset=asset, blocking=True, description="One stored row per site, hour and pollutant."),
        dg.AssetCheckSpec(CHECK_QUARANTINE, asset=asset, description=f"No value read was outside its physical range (those go to {QUARANTINE_TABLE})."),
        dg.AssetCheckSpec(CHECK_COMPLETENESS, asset=asset, description="Each site and pollutant has values for 75 % of each day's hours."),
        dg.AssetCheckSpec(CHECK_FRESHNESS, asset=asset, description="The newest stored observation is at most 6 hours old."),
        dg.AssetCheckSpec(CHECK_FROZEN, asset=asset, description="No site repeats one value for 12 hours or more."),
        dg.AssetCheckSpec(
            CHECK_NULLED, asset=asset, description=f"A re-read turns at most {MAX_NULLED_SHARE:.0%} of the stored values it replaces into missing values."
        ),
    ]


def weather_check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(CHECK_UNIQUE_HOURS, asset=asset, blocking=True, description="One stored row per site and hour.")]


def range_check(warehouse: WarehouseResource, start: datetime, end: datetime) -> dg.AssetCheckResult:
    """The stored window, whatever wrote it (this run quarantines what it reads out of range)."""
    bounds = ", ".join(f"('{p}', {low}, {high})" for p, (low, high) in VALUE_RANGES.items())
    suspects = warehouse.query(  # filtered in DuckDB: a year of a whole network stays out of memory
        f"SELECT site_id, time, pollutant, value, source FROM observations JOIN (VALUES {bounds}) AS b(pollutant, low, high) USING (pollutant) "
        "WHERE time >= ? AND time < ? AND (value < low OR value > high)",
        [start, end],
    )
    bad = out_of_range(suspects)
    return dg.AssetCheckResult(
        check_name=CHECK_VALUE_RANGE,
        passed=bad.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if bad.is_empty() else f"{bad.height} stored values outside their physical range: {bad['reason'][0]} ({bad['source'][0]}, site {bad['site_id'][0]})",
        metadata={"out_of_range_rows": bad.height, "ranges_ugm3": RANGES_TEXT, "rows": dg.MetadataValue.md(markdown_table(bad.select("site_id", "time", "reason", "source")))},
    )


def nulled_check(changes: dict[str, int], share: float) -> dg.AssetCheckResult:
    """Warns when a re-read empties many stored values (a damaged or withdrawn file reads as
    missing values, not as an error)."""
    return dg.AssetCheckResult(
        check_name=CHECK_NULLED,
        passed=share <= MAX_NULLED_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        description=None
        if share <= MAX_NULLED_SHARE
        else f"the re-read turned {changes['value_to_null']} stored values ({share:.1%}) into missing values, more than {MAX_NULLED_SHARE:.0%}",
        metadata={"values_to_null": changes["value_to_null"], "nulled_share": round(share, 4), "max_share": MAX_NULLED_SHARE},
    )


def quarantine_check(quarantined: pl.DataFrame) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=CHECK_QUARANTINE,
        passed=quarantined.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        description=None if quarantined.is_empty() else f"{quarantined.height} values read were outside their physical range: kept out of observations, stored in {QUARANTINE_TABLE}",
        metadata={
            "quarantined_rows": quarantined.height,
            "table": QUARANTINE_TABLE,
            "ranges_ugm3": RANGES_TEXT,
            "rows": dg.MetadataValue.md(markdown_table(quarantined.select("site_id", "time", "reason", "source"))),
        },
    )


def quality_checks(warehouse: WarehouseResource, start: datetime, end: datetime):
    """Completeness of the days the window touches, frozen values over the last day, freshness."""
    day_start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    recent = warehouse.query(
        "SELECT site_id, time, pollutant, value FROM observations WHERE time >= ? AND time < ?",
        [min(day_start, end - timedelta(hours=FROZEN_HOURS * 2)), end],
    )
    # Each series is judged from its first stored hour: a window that starts mid-day, or a site
    # that starts reporting mid-day, is not incomplete for the hours before it existed.
    first = warehouse.query("SELECT site_id, pollutant, min(time) AS first FROM observations GROUP BY site_id, pollutant")
    completeness = daily_completeness(recent.filter(pl.col("time") >= day_start), end, first)
    low = completeness.filter(pl.col("completeness") < MIN_DAILY_COMPLETENESS)
    worst = low.sort("completeness").row(0, named=True) if not low.is_empty() else None
    yield dg.AssetCheckResult(
        check_name=CHECK_COMPLETENESS,
        passed=low.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        description=None if worst is None else (
            f"{low.height} of {completeness.height} site-pollutant-days in {day_start:%Y-%m-%d}..{end:%Y-%m-%d %H:00} have values for under "
            f"{MIN_DAILY_COMPLETENESS:.0%} of their hours (sensor outages); the lowest: {worst['site_id']} {worst['pollutant']} "
            f"{worst['day']:%Y-%m-%d}, {worst['hours_with_value']} of {worst['hours_expected']} hours"
        ),
        metadata={
            "threshold": MIN_DAILY_COMPLETENESS,
            "site_days_below": low.height,
            "lowest": float(completeness["completeness"].min() or 0.0),
            "examples": dg.MetadataValue.md(markdown_table(low.with_columns(pl.col("day").dt.date(), pl.col("completeness").round(2)), limit=10)),
        },
    )
    frozen = frozen_runs(recent, FROZEN_HOURS)
    yield dg.AssetCheckResult(
        check_name=CHECK_FROZEN,
        passed=frozen.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        description=None if frozen.is_empty() else f"{frozen.height} runs of {FROZEN_HOURS} or more hours with one unchanged value (a stuck sensor)",
        metadata={"threshold_hours": FROZEN_HOURS, "frozen_runs": frozen.height, "examples": dg.MetadataValue.md(markdown_table(frozen, limit=10))},
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


def unique_check(warehouse: WarehouseResource, table: str, keys: list[str], start: datetime, end: datetime) -> dg.AssetCheckResult:
    repeated = warehouse.query(
        f"SELECT {', '.join(keys)}, count(*) AS copies FROM {table} WHERE time >= ? AND time < ? GROUP BY ALL HAVING count(*) > 1 ORDER BY ALL",
        [start, end],
    )
    return dg.AssetCheckResult(
        check_name=CHECK_UNIQUE_HOURS,
        passed=repeated.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if repeated.is_empty() else f"{repeated.height} keys ({', '.join(keys)}) stored more than once in {start}..{end}",
        metadata={"duplicate_keys": repeated.height, "keys": ", ".join(keys), "threshold": 0, "examples": dg.MetadataValue.md(markdown_table(repeated, limit=10))},
    )
