"""Open-Meteo hourly weather: the archive (reanalysis) and archived forecasts for the past, the
forecast API ahead.

All answer the same JSON shape: ``hourly{time: [...], temperature_2m: [...], ...}`` in GMT. The
Previous Runs API names its variables ``temperature_2m_previous_day1`` (the forecast made by the
run a day before each hour; kept from January 2024). A forecast issued at least a day before its
hour was known at every origin up to 24 h ahead, so it is what training uses for every horizon:
never better than the forecast the service has. (The Historical Forecast API stitches the first
hours of each run, shorter leads than the service has at longer horizons: not used.)
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import polars as pl

from routeaq_assets.core.schema import TIME, WEATHER, WEATHER_VARIABLES, SourceDataError, conform

ARCHIVE_URL = "https://archive-api.open-meteo.com/v1/archive"
FORECAST_URL = "https://api.open-meteo.com/v1/forecast"
PREVIOUS_RUNS_URL = "https://previous-runs-api.open-meteo.com/v1/forecast"
FORECAST_DAYS_BEFORE = 1  # the archived forecast used for training: the run a day before the hour


def previous_day_suffix(days_before: int) -> str:
    return f"_previous_day{days_before}" if days_before else ""


def request_params(latitude: float, longitude: float, start: date, end: date, days_before: int = 0) -> dict[str, Any]:
    """Query of the archive or forecast API, or (``days_before`` > 0) of the Previous Runs API."""
    suffix = previous_day_suffix(days_before)
    return {
        "latitude": latitude,
        "longitude": longitude,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "hourly": ",".join(f"{v}{suffix}" for v in WEATHER_VARIABLES),
        "timezone": "GMT",
        "wind_speed_unit": "ms",
    }


def openmeteo_to_weather(
    payload: dict[str, Any], *, site_id: str, kind: str, source: str, ingested_at: datetime | None = None, days_before: int = 0
) -> pl.DataFrame:
    """Normalise an Open-Meteo JSON answer to the weather contract (missing values stay null).
    ``days_before`` reads the Previous Runs variables of the run that many days earlier."""
    hourly = payload.get("hourly")
    if not isinstance(hourly, dict) or "time" not in hourly:
        raise SourceDataError(f"{source}: Open-Meteo answer has no hourly.time ({sorted(payload)})")
    if payload.get("utc_offset_seconds", 0) != 0:
        raise SourceDataError(f"{source}: expected timezone=GMT, got utc_offset_seconds={payload['utc_offset_seconds']}")
    n = len(hourly["time"])
    columns: dict[str, Any] = {"time": hourly["time"]}
    suffix = previous_day_suffix(days_before)
    if suffix and not any(f"{v}{suffix}" in hourly for v in WEATHER_VARIABLES):
        raise SourceDataError(f"{source}: Open-Meteo answer has no hourly.*{suffix} variable ({sorted(hourly)})")
    for name in WEATHER_VARIABLES:
        values = hourly.get(f"{name}{suffix}", [None] * n)
        if len(values) != n:
            raise SourceDataError(f"{source}: hourly.{name}{suffix} has {len(values)} values for {n} times")
        columns[name] = pl.Series(name, values, dtype=pl.Float64, strict=False)
    frame = pl.DataFrame(columns).with_columns(
        pl.col("time").str.to_datetime("%Y-%m-%dT%H:%M", time_zone="UTC").cast(TIME),
        pl.lit(site_id).alias("site_id"),
        pl.lit(kind).alias("kind"),
        pl.lit(source).alias("source"),
        pl.lit(ingested_at or datetime.now(timezone.utc)).cast(TIME).alias("ingested_at"),
    )
    return conform(frame, WEATHER, source).sort("time")


def forecast_where_archived(forecast: pl.DataFrame, reanalysis: pl.DataFrame) -> pl.DataFrame:
    """One row per site and hour: the archived forecast where it holds any value, else the
    reanalysis (kind ``reanalysis``, which the features use only as the weather at an origin)."""
    archived = forecast.filter(pl.any_horizontal(pl.col(v).is_not_null() for v in WEATHER_VARIABLES))
    rest = reanalysis.join(archived.select("site_id", "time"), on=["site_id", "time"], how="anti")
    return pl.concat([archived, rest]).sort("site_id", "time")
