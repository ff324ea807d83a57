"""Response bodies of the page's JSON endpoints (``/api/sites``, ``/api/sites/{site_id}``).
Times are ISO 8601 UTC strings ending in ``Z``; concentrations are µg/m³; a missing value is null."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from routeaq_serving.schemas import DailyIndex, Pollutant


class DaqiBand(BaseModel):
    index: int = Field(ge=1, le=10, description="UK Daily Air Quality Index, 1-10.")
    band: Literal["Low", "Moderate", "High", "Very High"]
    indicative: bool = Field(
        description="True where the DAQI is defined on a longer mean than one hour (PM2.5: 24-hour mean, O3: running 8-hour mean):"
        " the hourly value is placed against the bands as an indication."
    )


class Forecast(BaseModel):
    time: str = Field(description="The hour forecast (hour beginning, UTC).")
    hours_ahead: int
    pred: float
    lower: float
    upper: float
    interval: float = Field(description="Nominal coverage of [lower, upper], e.g. 0.8.")
    model_version: str
    source: Literal["forecast", "served", "as_of"] = Field(
        description="forecast: made now for an hour ahead; served: from the prediction log; as_of: the champion's forecast from the data before that hour."
    )
    daqi: DaqiBand | None


class PollutantState(BaseModel):
    pollutant: Pollutant
    measured: bool = Field(description="False where the site has no instrument for this pollutant (site registry).")
    feed_stopped: bool = Field(description="Measured, but no observation in the hours before the network's newest observation.")
    newest_observation: str | None
    newest_value: float | None
    age_hours: float | None = Field(description="Hours between the newest observation and the time of the answer.")
    problem: str | None = Field(description="Why no forecast is shown, in words; null when there is one.")
    forecasts: list[Forecast] = Field(description="The next hours: 1, 6, 12, 24 and 48 hours after the site's newest observation (a site's page has every hour).")


class SiteSummary(BaseModel):
    site_id: str
    site_name: str | None
    newest_observation: str | None
    age_hours: float | None
    feed_stopped: bool = Field(description="Every pollutant the site measures has stopped reporting.")
    daily: list[DailyIndex] = Field(description="Today's and tomorrow's daily index (UK days), with the odds of Moderate and of High.")
    pollutants: list[PollutantState]


class SitesResponse(BaseModel):
    generated_at: str
    model_loaded: bool
    reason: str | None = Field(description="Why no model is loaded, or a warning while the last good model serves.")
    newest_observation: str | None = Field(description="The newest observation of any site.")
    age_hours: float | None
    stale: bool | None = Field(description="The newest observation is older than stale_after_hours.")
    stale_after_hours: int
    feed_stopped_after_hours: int
    forecast_origin: str | None = Field(description="The newest observed hour the forecasts start from.")
    sites: list[SiteSummary]


class HistoryPoint(BaseModel):
    time: str
    observed: float | None
    forecast: Forecast | None


class Skill(BaseModel):
    hours: int = Field(description="Hours scored: a forecast, its observation and the persistence value all present.")
    first: str | None
    last: str | None
    mae_forecast: float | None
    mae_persistence: float | None = Field(description="Mean absolute error of persistence: the observation hours_ahead before the hour.")
    skill: float | None = Field(description="1 - mae_forecast / mae_persistence: above 0 beats persistence.")
    interval_coverage: float | None = Field(description="Share of scored hours whose observation fell inside the interval.")
    model_trained_before: str | None = Field(description="As-of forecasts for hours before this one (the champion's training data) are not scored.")


class SitePollutant(PollutantState):
    history: list[HistoryPoint] = Field(description="Every hour of the last 7 days up to the newest observation.")
    skill: Skill


class SiteResponse(BaseModel):
    site_id: str
    site_name: str | None
    start: str
    forecast_origin: str
    newest_observation: str | None
    age_hours: float | None
    pollutants: list[SitePollutant]
