"""Data contracts shared by every stage (see DESIGN.md): observations, weather, predictions.

All times are UTC and hour-beginning: the value stamped 10:00 covers 10:00-11:00.
"""

from __future__ import annotations

import polars as pl

TIME = pl.Datetime("us", "UTC")

POLLUTANTS = ("pm25", "pm10", "no2", "o3", "nox")
FORECAST_POLLUTANTS = ("pm25", "pm10", "no2", "o3")  # the four pollutants of the DAQI

WEATHER_VARIABLES = (
    "temperature_2m",
    "relative_humidity_2m",
    "wind_speed_10m",
    "wind_direction_10m",
    "precipitation",
    "boundary_layer_height",
)

OBSERVATIONS = {
    "site_id": pl.Utf8,
    "time": TIME,
    "pollutant": pl.Utf8,
    "value": pl.Float64,
    "unit": pl.Utf8,
    "status": pl.Utf8,
    "network": pl.Utf8,
    "source": pl.Utf8,
    "ingested_at": TIME,
}

WEATHER = {
    "site_id": pl.Utf8,
    "time": TIME,
    **{name: pl.Float64 for name in WEATHER_VARIABLES},
    "kind": pl.Utf8,
    "source": pl.Utf8,
    "ingested_at": TIME,
}

# The prediction log (written by the service, read by monitoring): one record per forecast
# served. ``time`` is the hour forecast, ``origin`` the newest observed hour the forecast starts
# from, ``hours_ahead`` = time - origin in hours (the horizon of the model that answered).
# ``core.predictions`` writes and reads it; nothing else builds these records.
PREDICTIONS = {
    "site_id": pl.Utf8,
    "time": TIME,
    "pollutant": pl.Utf8,
    "model_name": pl.Utf8,
    "model_version": pl.Utf8,
    "hours_ahead": pl.Int64,
    "origin": TIME,
    "pred": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
    "interval": pl.Float64,
    # what the model's interval offsets were multiplied by (``core.intervals``); 1 in older lines
    "interval_factor": pl.Float64,
    "requested_at": TIME,
}


class SourceDataError(ValueError):
    """A source file or response that cannot be read as its published format."""


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType], what: str) -> pl.DataFrame:
    """Select and cast ``df`` to ``schema``; raise naming the missing columns."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise SourceDataError(f"{what}: missing columns {missing}; got {df.columns}")
    return df.select([pl.col(c).cast(t) for c, t in schema.items()])
