"""Serving support: the site history the BentoML service reads (online store and yearly files)."""

from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl

from routeaq_assets.core.features import MAX_HORIZON, MAX_LOOKBACK_HOURS
from routeaq_assets.core.sites import site_attributes
from routeaq_assets.defs.ingest import raw_aurn, raw_weather
from routeaq_assets.online_store import OnlineStore
from routeaq_assets.warehouse import WarehouseResource
from routeaq_assets.weather_sources import WeatherSource


class OnlineFeaturesConfig(dg.Config):
    history_days: int = 14


@dg.asset(group_name="serving", deps=[raw_aurn, raw_weather], kinds={"parquet"})
def online_features(config: OnlineFeaturesConfig, warehouse: WarehouseResource, weather: WeatherSource, online_store: OnlineStore) -> dg.MaterializeResult:
    """Recent hourly history of every site (pollutants, weather, site attributes) plus the
    weather forecast for the next 48 hours, so the service forecasts without touching the warehouse;
    and the yearly history files for forecasts of older hours, rewritten where data changed."""
    (newest,) = warehouse.query("SELECT max(time) FROM observations WHERE value IS NOT NULL").row(0)
    if newest is None:
        raise dg.Failure("online_features: no observations stored yet; materialize raw_aurn first")
    forecast_hour = newest + timedelta(hours=1)
    start = forecast_hour - timedelta(days=config.history_days, hours=MAX_LOOKBACK_HOURS)
    sites = site_attributes(warehouse.query("SELECT * FROM sites"))
    end = forecast_hour + timedelta(hours=MAX_HORIZON)
    ahead = pl.concat([weather.window(site, forecast_hour, end, kind="forecast") for site in sites.iter_rows(named=True)])
    panel = warehouse.stored_panel(start, end, weather_ahead=ahead)
    path = online_store.publish(panel)
    rewritten = _refresh_history(warehouse, online_store)
    return dg.MaterializeResult(
        metadata={
            "path": path,
            "history_years_rewritten": ", ".join(map(str, rewritten)) or "none",
            "newest_observation": newest.isoformat(),
            "forecast_hour": forecast_hour.isoformat(),
            "rows": panel.height,
            "sites": panel["site_id"].n_unique(),
        }
    )


def _refresh_history(warehouse: WarehouseResource, online_store: OnlineStore) -> list[int]:
    """Rewrite each year's history file that is missing or older than its newest ingested row."""
    history = online_store.history()
    changed = warehouse.query(
        "SELECT year(time) AS year, min(time) AS first, max(time) AS last, max(ingested_at) AS ingested "
        "FROM observations GROUP BY ALL ORDER BY year"
    )
    rewritten = []
    for row in changed.iter_rows(named=True):
        written = history.written_at(row["year"])
        if written is not None and datetime.fromtimestamp(written, timezone.utc) >= row["ingested"]:
            continue
        history.write_year(row["year"], warehouse.stored_panel(row["first"], row["last"] + timedelta(hours=1)))
        rewritten.append(row["year"])
    return rewritten
