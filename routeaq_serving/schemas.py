"""Request and response bodies of the forecast API."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

from pydantic import BaseModel, Field, field_validator

Pollutant = Literal["pm25", "pm10", "no2", "o3"]

# The hours a request may name. Nothing outside them can be forecast (no stored history reaches
# them), and the bounds keep every later hour arithmetic (offsets, look-back windows, hours
# ahead) far from the ends of Python's datetime range, where it would overflow.
EARLIEST_TIMESTAMP = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_TIMESTAMP = datetime(2199, 12, 31, 23, tzinfo=timezone.utc)


class PredictRequest(BaseModel):
    site_id: str = Field(min_length=1, max_length=16, examples=["CLL2"])
    timestamp: datetime = Field(
        description="The hour to forecast, ISO 8601 with a time zone (UTC 'Z' recommended), a whole hour from 1900-01-01T00:00:00Z to 2199-12-31T23:00:00Z.",
        examples=["2025-08-01T10:00:00Z"],
    )
    pollutant: Pollutant = "pm25"

    @field_validator("timestamp")
    @classmethod
    def _aware_whole_hour(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must carry a time zone, e.g. 2025-08-01T10:00:00Z")
        # Compared as naive wall times shifted by the offset, which cannot overflow (the offset
        # is under a day and the bounds are centuries from the ends of the datetime range).
        offset = value.utcoffset() or timedelta(0)
        naive = value.replace(tzinfo=None)
        earliest, latest = (bound.replace(tzinfo=None) + offset for bound in (EARLIEST_TIMESTAMP, LATEST_TIMESTAMP))
        if not earliest <= naive <= latest:
            raise ValueError(f"timestamp must be between {EARLIEST_TIMESTAMP:%Y-%m-%dT%H:%M:%SZ} and {LATEST_TIMESTAMP:%Y-%m-%dT%H:%M:%SZ}")
        value = value.astimezone(timezone.utc)
        if (value.minute, value.second, value.microsecond) != (0, 0, 0):
            raise ValueError("timestamp must be a whole hour (forecasts are hourly, hour beginning)")
        return value


class BatchRequest(BaseModel):
    items: list[PredictRequest] = Field(min_length=1, max_length=20000)


class PredictResponse(BaseModel):
    site_id: str
    timestamp: str
    pollutant: Pollutant
    pm25_pred: float | None = Field(description="The PM2.5 forecast (µg/m³); null when another pollutant was asked for.")
    pred: float
    lower: float
    upper: float
    interval: float
    interval_factor: float = Field(
        description="What the model's interval was stretched by so that it covers its share of the champion's recent scored forecasts (1: as calibrated at training)."
    )
    hours_ahead: int = Field(description="Hours between the newest observation the forecast starts from and the hour forecast.")
    origin: str = Field(description="The newest observed hour the forecast starts from (UTC): timestamp minus hours_ahead.")
    model_name: str
    model_version: str
    data_until: str
    source: str


class BatchResponse(BaseModel):
    predictions: list[PredictResponse]


class DailyRequest(BaseModel):
    site_id: str = Field(min_length=1, max_length=16, examples=["CLL2"])


class PollutantDay(BaseModel):
    pollutant: Pollutant
    value: float | None = Field(description="The day's value by Defra's averaging (µg/m³), from observed hours and point forecasts.")
    index: int | None = Field(description="The pollutant's daily index, 1-10.")
    averaging: str = Field(description="24-hour mean (PM2.5, PM10), running 8-hour mean (O3) or hourly mean (NO2): the day's highest for the last two.")
    observed_hours: int
    forecast_hours: int


class DailyIndex(BaseModel):
    day: str = Field(description="The UK local day (midnight to midnight, Europe/London).")
    index: int | None = Field(description="The site's daily index: the highest of its pollutants'.")
    band: Literal["Low", "Moderate", "High", "Very High"] | None
    set_by: Pollutant | None = Field(description="The pollutant whose index is the site's.")
    p_moderate_or_above: float | None = Field(description="Probability that the day's index reaches 4 (Moderate) or above.")
    p_high_or_above: float | None = Field(description="Probability that the day's index reaches 7 (High) or above.")
    p_index_at_least: dict[str, float] = Field(description="Probability that the index reaches each value 1-10.")
    pollutants: list[PollutantDay]
    odds_from: Literal["verified_daily_errors", "hourly_intervals"] = Field(
        description="Where the probabilities come from: the errors of the daily values verified in the last 90 days (a day wholly "
        "forecast), or draws from the hourly forecasts' intervals (a day partly observed, or before enough days are verified)."
    )
    odds_site_days: int | None = Field(description="The verified site-days the probabilities rest on (verified_daily_errors only).")


class DailyResponse(BaseModel):
    site_id: str
    origin: str = Field(description="The network's newest observed hour (UTC); today is the UK day of the hour after it.")
    days: list[DailyIndex] = Field(description="Today and tomorrow.")

