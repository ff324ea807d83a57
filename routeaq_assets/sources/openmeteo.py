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

from datetime import date, datetime, timedelta, timezone
from typing import Any

import polars as pl

from routeaq_assets.core.schema import TIME, WEATHER, WEATHER_VARIABLES, SourceDataError, conform

ARCHIVE_URL = "https://archive-api.open-meteo.com/v1/archive"
FORECAST_URL = "https://api.open-meteo.com/v1/forecast"
PREVIOUS_RUNS_URL = "https://previous-runs-api.open-meteo.com/v1/forecast"
FORECAST_DAYS_BEFORE = 1  # the archived forecast used for training: the run a day before the hour
# The unit each variable must be declared in (``hourly_units``); wind in m/s needs
# ``wind_speed_unit=ms``, which every request asks for. An answer in another unit is refused.
UNITS = {"temperature_2m": "°C", "relative_humidity_2m": "%", "wind_speed_10m": "m/s", "wind_direction_10m": "°", "precipitation": "mm", "boundary_layer_height": "m"}
# Documented as the sum over the preceding hour, stamped at its end: the value at 10:00 fell from
# 09:00 to 10:00, so it is stored on the contract's hour-beginning 09:00. The other variables are
# values at the stamp and stay on it.
PRECEDING_HOUR_VARIABLES = ("precipitation",)
# Variables the Previous Runs API answers with nulls (HTTP 200), as reported by its users.
NOT_KEPT_BY_PREVIOUS_RUNS = ("boundary_layer_height",)


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
    check_units(payload, source, suffix)
    for name in WEATHER_VARIABLES:
        values = hourly.get(f"{name}{suffix}", [None] * n)
        if len(values) != n:
            raise SourceDataError(f"{source}: hourly.{name}{suffix} has {len(values)} values for {n} times")
        columns[name] = pl.Series(name, values, dtype=pl.Float64, strict=False)
    frame = pl.DataFrame(columns).with_columns(pl.col("time").str.to_datetime("%Y-%m-%dT%H:%M", time_zone="UTC").cast(TIME))
    ended = frame.select((pl.col("time") - timedelta(hours=1)).alias("time"), *PRECEDING_HOUR_VARIABLES)
    frame = frame.drop(PRECEDING_HOUR_VARIABLES).join(ended, on="time", how="left").with_columns(
        pl.lit(site_id).alias("site_id"),
        pl.lit(kind).alias("kind"),
        pl.lit(source).alias("source"),
        pl.lit(ingested_at or datetime.now(timezone.utc)).cast(TIME).alias("ingested_at"),
    )
    return conform(frame, WEATHER, source).sort("time")


def check_units(payload: dict[str, Any], source: str, suffix: str = "") -> None:
    """Refuse an answer whose ``hourly_units`` declares another unit than ``UNITS`` (or none) for
    a variable it carries: stored silently, km/h would pass for m/s."""
    declared = payload.get("hourly_units")
    if not isinstance(declared, dict):
        raise SourceDataError(f"{source}: Open-Meteo answer declares no hourly_units; cannot tell the units of its values")
    for name, unit in UNITS.items():
        field = f"{name}{suffix}"
        if field in payload["hourly"] and declared.get(field) != unit:
            raise SourceDataError(
                f"{source}: hourly_units.{field} is {declared.get(field)!r}, expected {unit!r}"
                + (" (ask wind_speed_unit=ms)" if name == "wind_speed_10m" else "")
            )


def forecast_where_archived(forecast: pl.DataFrame, reanalysis: pl.DataFrame) -> pl.DataFrame:
    """One row per site and hour, with one stated precedence per variable.

    An hour for which the archive kept a forecast of any variable is a forecast hour (kind
    ``forecast``). Each variable of it is the archived forecast's value; where the archive holds
    none for that variable (``boundary_layer_height_previous_day1`` answers all null, wind is
    empty before 2024 while temperature is kept from 2021), the reanalysis at that hour stands in.
    The service's forecast API has every variable, so training never sees a variable missing
    that serving has (a null there would teach the model a weather it is never served). The
    stand-in is slightly better than a forecast: for those variables training is an upper bound.
    Hours with no archived forecast at all keep the reanalysis (kind ``reanalysis``, which the
    features use only as the weather at an origin)."""
    archived = forecast.filter(pl.any_horizontal(pl.col(v).is_not_null() for v in WEATHER_VARIABLES))
    stand_in = reanalysis.select("site_id", "time", *(pl.col(v).alias(f"{v}_stand_in") for v in WEATHER_VARIABLES))
    archived = archived.join(stand_in, on=["site_id", "time"], how="left").with_columns(
        pl.coalesce(v, f"{v}_stand_in").alias(v) for v in WEATHER_VARIABLES
    ).select(forecast.columns)
    rest = reanalysis.join(archived.select("site_id", "time"), on=["site_id", "time"], how="anti")
    return pl.concat([archived, rest]).sort("site_id", "time")
