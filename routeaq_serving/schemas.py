"""Request and response bodies of the forecast API."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field, field_validator

Pollutant = Literal["pm25", "no2", "o3"]


class PredictRequest(BaseModel):
    site_id: str = Field(min_length=1, max_length=16, examples=["CLL2"])
    timestamp: datetime = Field(description="The hour to forecast, ISO 8601 with a time zone (UTC 'Z' recommended).", examples=["2025-08-01T10:00:00Z"])
    pollutant: Pollutant = "pm25"

    @field_validator("timestamp")
    @classmethod
    def _aware_whole_hour(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must carry a time zone, e.g. 2025-08-01T10:00:00Z")
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
    hours_ahead: int = Field(description="Hours between the newest observation the forecast starts from and the hour forecast.")
    origin: str = Field(description="The newest observed hour the forecast starts from (UTC): timestamp minus hours_ahead.")
    model_name: str
    model_version: str
    data_until: str
    source: str


class BatchResponse(BaseModel):
    predictions: list[PredictResponse]
