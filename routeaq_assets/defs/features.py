"""Silver features: one row per site, hour and target pollutant, built by core.features."""


import dagster as dg
import polars as pl

from routeaq_assets.core.features import SILVER_COLUMNS, build_features, check_horizon, hourly_panel, lookback_start
from routeaq_assets.core.progress import Progress
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.core.sites import site_attributes
from routeaq_assets.defs.ingest import raw_aurn, raw_weather
from routeaq_assets.defs.partitions import hourly_partitions, single_run_backfill
from routeaq_assets.resources import Warehouse


def stored_panel(warehouse: Warehouse, start, end, weather_ahead: pl.DataFrame | None = None) -> pl.DataFrame:
    """The hourly panel of [start, end) from the stored observations and weather (plus
    ``weather_ahead`` for hours not stored yet)."""
    observations = warehouse.query("SELECT * FROM observations WHERE time >= ? AND time < ?", [start, end])
    weather = warehouse.query("SELECT * FROM weather WHERE time >= ? AND time < ?", [start, end])
    if weather_ahead is not None:
        weather = pl.concat([weather, weather_ahead], how="vertical_relaxed")
    sites = site_attributes(warehouse.query("SELECT * FROM sites"))
    return hourly_panel(observations, weather, sites, start, end)


def load_panel(warehouse: Warehouse, start, end) -> pl.DataFrame:
    """The hourly panel of [start, end) with the lookback its first rows' features need."""
    return stored_panel(warehouse, lookback_start(start), end)


def require_horizon(asset: str, horizon: int) -> None:
    """Fail an asset's run, before any work, on a horizon the features cannot serve."""
    try:
        check_horizon(horizon)
    except ValueError as exc:
        raise dg.Failure(f"{asset}: {exc}") from exc


def stored_features(warehouse: Warehouse, pollutant: str, start, end, horizon: int = 1) -> pl.DataFrame:
    """Feature rows of [start, end) for ``horizon`` hours ahead, in time order: the stored
    ``silver_features`` for one hour, built from the stored observations for other horizons."""
    if horizon == 1:
        return warehouse.query(
            "SELECT * FROM silver_features WHERE pollutant = ? AND time >= ? AND time < ? ORDER BY time, site_id",
            [pollutant, start, end],
        )
    return (
        build_features(load_panel(warehouse, start, end), pollutant, horizon)
        .filter(pl.col("time") >= start)
        .select(SILVER_COLUMNS)
        .sort("time", "site_id")
    )


@dg.asset(
    group_name="features",
    kinds={"duckdb", "polars"},
    partitions_def=hourly_partitions,
    backfill_policy=single_run_backfill,
    deps=[raw_aurn, raw_weather],
    pool="warehouse",
)
def silver_features(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Model features for every site, hour and target pollutant of the partition window; each
    row sees observations before its hour only."""
    window = context.partition_time_window
    progress = Progress("silver_features", len(FORECAST_POLLUTANTS), "pollutants built", context.log.info)
    panel = load_panel(warehouse, window.start, window.end)
    progress.note(f"panel of {panel.height:,} site-hours read")
    frames = []
    for pollutant in FORECAST_POLLUTANTS:
        frames.append(build_features(panel, pollutant).filter(pl.col("time") >= window.start).select(SILVER_COLUMNS))
        progress.advance(pollutant)
    frame = pl.concat(frames)
    replaced = warehouse.replace_window("silver_features", frame, window.start, window.end)
    progress.note(f"{frame.height:,} rows written")
    return dg.MaterializeResult(
        metadata={
            "rows": frame.height,
            "rows_replaced": replaced,
            "target_missing_share": round(frame["target"].null_count() / max(frame.height, 1), 4),
        }
    )
