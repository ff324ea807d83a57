"""Open-Meteo hourly weather: the archive (reanalysis) for the past, the forecast API ahead.

Both answer the same JSON shape: ``hourly{time: [...], temperature_2m: [...], ...}`` in GMT.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import polars as pl

from routeaq_assets.core.schema import TIME, WEATHER, WEATHER_VARIABLES, SourceDataError, conform

ARCHIVE_URL = "https://archive-api.open-meteo.com/v1/archive"
FORECAST_URL = "https://api.open-meteo.com/v1/forecast"


def request_params(latitude: float, longitude: float, start: date, end: date) -> dict[str, Any]:
    return {
        "latitude": latitude,
        "longitude": longitude,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "hourly": ",".join(WEATHER_VARIABLES),
        "timezone": "GMT",
        "wind_speed_unit": "ms",
    }


def openmeteo_to_weather(
    payload: dict[str, Any], *, site_id: str, kind: str, source: str, ingested_at: datetime | None = None
) -> pl.DataFrame:
    """Normalise an Open-Meteo JSON answer to the weather contract (missing values stay null)."""
    hourly = payload.get("hourly")
    if not isinstance(hourly, dict) or "time" not in hourly:
        raise SourceDataError(f"{source}: Open-Meteo answer has no hourly.time ({sorted(payload)})")
    if payload.get("utc_offset_seconds", 0) != 0:
        raise SourceDataError(f"{source}: expected timezone=GMT, got utc_offset_seconds={payload['utc_offset_seconds']}")
    n = len(hourly["time"])
    columns: dict[str, Any] = {"time": hourly["time"]}
    for name in WEATHER_VARIABLES:
        values = hourly.get(name, [None] * n)
        if len(values) != n:
            raise SourceDataError(f"{source}: hourly.{name} has {len(values)} values for {n} times")
        columns[name] = pl.Series(name, values, dtype=pl.Float64, strict=False)
    frame = pl.DataFrame(columns).with_columns(
        pl.col("time").str.to_datetime("%Y-%m-%dT%H:%M", time_zone="UTC").cast(TIME),
        pl.lit(site_id).alias("site_id"),
        pl.lit(kind).alias("kind"),
        pl.lit(source).alias("source"),
        pl.lit(ingested_at or datetime.now(timezone.utc)).cast(TIME).alias("ingested_at"),
    )
    return conform(frame, WEATHER, source).sort("time")
