"""Silver features: one row per site, hour and target pollutant, built by core.features."""


from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from routeaq_assets.core.features import MAX_LOOKBACK_HOURS, SILVER_COLUMNS, build_features, check_horizon, lookback_start
from routeaq_assets.core.progress import Progress
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.defs.ingest import raw_aurn, raw_weather
from routeaq_assets.defs.partitions import hourly_partitions, single_run_backfill
from routeaq_assets.warehouse import WarehouseResource


SITES_PER_WRITE = 25
REBUILD_ATTEMPTS = 5  # builds of one window whose inputs another run keeps replacing, before failing


def require_horizon(asset: str, horizon: int) -> None:
    """Fail an asset's run, before any work, on a horizon the features cannot serve."""
    try:
        check_horizon(horizon)
    except ValueError as exc:
        raise dg.Failure(f"{asset}: {exc}") from exc


@dg.asset(
    group_name="features",
    kinds={"duckdb", "polars"},
    partitions_def=hourly_partitions,
    backfill_policy=single_run_backfill,
    deps=[raw_aurn, raw_weather],
    pool="warehouse",
)
def silver_features(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Model features for every site, hour and target pollutant of the partition window; each
    row sees observations before its hour only.

    Stored features never go stale: a feature row reads up to ``MAX_LOOKBACK_HOURS`` of earlier
    observations, so re-ingesting a window (a ratified value, a retried partition) changes the
    rows of the hours after it too. This asset therefore rewrites the window and the stored
    feature rows of the ``MAX_LOOKBACK_HOURS`` after it, all from the observations as they are
    now. Hours whose features were never built stay unbuilt (their own partition builds them)."""
    window = context.partition_time_window
    end = _dependents_end(warehouse, window.end)
    # Another run may replace observations this window reads while it is built (neighbouring
    # partitions in production, where runs write the lake at once): the features are built again
    # until the inputs they were built from are still the stored ones after the write.
    for attempt in range(1, REBUILD_ATTEMPTS + 1):
        read_from = warehouse.inputs_version(lookback_start(window.start), end)
        counts, replaced = _build_and_write(context, warehouse, window.start, window.end, end)
        if warehouse.inputs_version(lookback_start(window.start), end) == read_from:
            break
        context.log.warning(f"silver_features: observations or weather read by this window changed while it was built (attempt {attempt}); building again")
    else:
        raise dg.Failure(f"silver_features: the inputs of {window.start.isoformat()}..{end.isoformat()} kept changing over {REBUILD_ATTEMPTS} builds")
    return dg.MaterializeResult(
        metadata={
            "rows": counts["rows"],
            "rows_replaced": replaced,
            "dependent_hours_rebuilt": int((end - window.end) / timedelta(hours=1)),
            "target_missing_share": round(counts["missing"] / max(counts["rows"], 1), 4),
            "builds": attempt,
        }
    )


def _build_and_write(context: dg.AssetExecutionContext, warehouse: WarehouseResource, start: datetime, window_end: datetime, end: datetime) -> tuple[dict, int]:
    """Build the feature rows of [start, window_end) and the stored ones of [window_end, end) from
    the stored observations and replace them; the counts and the number of rows replaced."""
    panel = warehouse.panel_with_lookback(start, end)
    # Dependent hours after the window are rebuilt only where their features were built before.
    built = (
        warehouse.query("SELECT DISTINCT time FROM silver_features WHERE time >= ? AND time < ?", [window_end, end])["time"].to_list()
        if end > window_end
        else []
    )
    keep = (pl.col("time") >= start) & ((pl.col("time") < window_end) | pl.col("time").is_in(built))
    # Features are per site: built and written a group of sites and a pollutant at a time, so the
    # memory a window needs stays bounded as sites and years grow.
    site_ids = panel["site_id"].unique().sort().to_list()
    groups = [site_ids[i : i + SITES_PER_WRITE] for i in range(0, len(site_ids), SITES_PER_WRITE)]
    progress = Progress("silver_features", len(groups) * len(FORECAST_POLLUTANTS), "site groups x pollutants built", context.log.info)
    progress.note(f"panel of {panel.height:,} site-hours read")
    counts = {"rows": 0, "missing": 0}

    def frames():
        for sites in groups:
            part = panel.filter(pl.col("site_id").is_in(sites))
            for pollutant in FORECAST_POLLUTANTS:
                frame = build_features(part, pollutant).filter(keep).select(SILVER_COLUMNS)
                counts["rows"] += frame.height
                counts["missing"] += frame["target"].null_count()
                progress.advance(f"{pollutant}, {sites[0]}..{sites[-1]}")
                yield frame

    replaced = warehouse.replace_window("silver_features", frames(), start, end)
    progress.note(f"{counts['rows']:,} rows written")
    return counts, replaced


def _dependents_end(warehouse: WarehouseResource, window_end: datetime) -> datetime:
    """The end of the stored feature rows that read the window's observations: up to
    ``MAX_LOOKBACK_HOURS`` after it, no further than the newest stored feature row."""
    if not warehouse.has_table("silver_features"):
        return window_end
    (newest,) = warehouse.query(
        "SELECT max(time) FROM silver_features WHERE time >= ? AND time < ?",
        [window_end, window_end + timedelta(hours=MAX_LOOKBACK_HOURS)],
    ).row(0)
    return window_end if newest is None else newest + timedelta(hours=1)
