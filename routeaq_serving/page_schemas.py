"""Response bodies of the page's JSON endpoints (``/api/sites``, ``/api/sites/{site_id}``).
Times are ISO 8601 UTC strings ending in ``Z``; concentrations are µg/m³; a missing value is null."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from routeaq_serving.schemas import DailyIndex, Pollutant


class HourForecast(BaseModel):
    time: str = Field(description="The hour forecast (hour beginning, UTC).")
    hours_ahead: int = Field(description="Hours after the site's newest observation of the pollutant.")
    pred: float = Field(description="µg/m³, to 0.1.")
    lower: float
    upper: float = Field(description="[lower, upper] is the forecast's interval, of the coverage given as `interval`.")
    index: int | None = Field(ge=1, le=10, description="The hourly value placed against the DAQI bands (indicative for PM2.5, PM10 and O3, whose index is on a longer mean).")


class PollutantState(BaseModel):
    pollutant: Pollutant
    measured: bool = Field(description="False where the site has no instrument for this pollutant (site registry).")
    feed_stopped: bool = Field(description="Measured, but no observation in the hours before the network's newest observation.")
    newest_observation: str | None
    newest_value: float | None
    problem: str | None = Field(description="Why no forecast is shown, in words; null when there is one.")


class PollutantSummary(PollutantState):
    next_hour: HourForecast | None = Field(description="The hour after the network's newest observation.")
    worst: HourForecast | None = Field(description="The highest forecast of the next 48 hours (the earliest on ties).")


class DaySummary(BaseModel):
    day: str = Field(description="The UK local day (midnight to midnight, Europe/London).")
    index: int | None = Field(description="The site's daily index: the highest of its pollutants'.")
    band: Literal["Low", "Moderate", "High", "Very High"] | None
    set_by: Pollutant | None
    p_moderate_or_above: float | None = Field(description="Probability that the day's index reaches 4 (Moderate) or above.")
    p_high_or_above: float | None = Field(description="Probability that the day's index reaches 7 (High) or above.")
    odds_from: Literal["verified_daily_errors", "hourly_intervals"] = Field(
        description="The odds come from the errors of the days verified in the last 90 days, or from the hourly forecasts' intervals."
    )
    odds_site_days: int | None = Field(description="The verified site-days the odds rest on (verified_daily_errors only).")


class SiteFacts(BaseModel):
    site_id: str
    site_name: str | None
    site_type: str | None = Field(description="The AURN site type, e.g. Urban Traffic (roadside) or Urban Background.")
    latitude: float | None
    longitude: float | None


class SiteSummary(SiteFacts):
    newest_observation: str | None
    age_hours: float | None
    feed_stopped: bool = Field(description="Every pollutant the site measures has stopped reporting.")
    today: DaySummary
    tomorrow: DaySummary
    pollutants: list[PollutantSummary]


class Advice(BaseModel):
    at_risk: str = Field(description="For adults and children with lung or heart conditions, and older people.")
    everyone: str


class BandMeaning(BaseModel):
    advice: Advice


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
    interval: float | None = Field(description="Nominal coverage of every [lower, upper], e.g. 0.8.")
    models: dict[str, str] = Field(description="The champion version serving each pollutant.")
    bands: dict[str, BandMeaning] = Field(description="What each DAQI band means for people at risk and for everyone else.")
    daqi_page: str = Field(description="Defra's page on the index and its health advice.")
    sites: list[SiteSummary]


class HistoryColumns(BaseModel):
    observed: list[float | None]
    pred: list[float | None] = Field(description="The forecast made for the hour (see source).")
    lower: list[float | None]
    upper: list[float | None]
    source: list[Literal["served", "as_of"] | None] = Field(
        description="served: from the prediction log; as_of: the champion's forecast from the data before that hour."
    )


class NextColumns(BaseModel):
    pred: list[float | None]
    lower: list[float | None]
    upper: list[float | None]
    index: list[int | None]


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
    age_hours: float | None = Field(description="Hours between the newest observation and the time of the answer.")
    history: HistoryColumns = Field(description="Aligned with the answer's times: the last 7 days up to the newest observation.")
    next: NextColumns = Field(description="Aligned with the answer's next_times: the next 48 hours.")
    skill: Skill
    band_from: dict[str, float] = Field(description="The hourly value (µg/m³) from which each of Moderate, High and Very High begins, for the chart's lines.")


class SiteResponse(SiteFacts):
    forecast_origin: str
    newest_observation: str | None
    age_hours: float | None
    interval: float
    today: DailyIndex
    tomorrow: DailyIndex
    times: list[str] = Field(description="Every hour of the last 7 days up to the newest observation (UTC).")
    next_times: list[str] = Field(description="The 48 hours after the newest observation (UTC).")
    pollutants: list[SitePollutant]
