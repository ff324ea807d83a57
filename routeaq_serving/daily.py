"""Today's and tomorrow's daily Air Quality Index at a site, from the served state.

"Today" is the UK day of the first hour forecast (the hour after the network's newest
observation), "tomorrow" the day after it. Each pollutant's hours are its observations up to the
site's own newest one and the champion's forecasts for every hour after it, up to the end of
tomorrow (at most 48 hours ahead); ``core.daily_daqi`` averages them as Defra does and gives the
odds: a day wholly forecast from the verified daily errors that monitoring publishes, a day partly
observed (or any day before enough are verified) from the hourly intervals. The hourly forecasts
behind a daily index are the service's ordinary answers: the caller logs them to the prediction
log, so every daily index can be recomputed and verified from it.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from routeaq_assets.core.daily_daqi import FORECAST_HOURS, DailyIndex, daily_index, day_hours, uk_day, uk_day_bounds
from routeaq_serving.forecasts import ForecastItem, answer
from routeaq_serving.state import ServingState, State

HOUR = timedelta(hours=1)


def outlook_days(state: State) -> tuple[date, date]:
    today = uk_day(state.origin + HOUR)
    return today, today + timedelta(days=1)


def daily_outlook(serving: ServingState, state: State, site_id: str) -> tuple[list[DailyIndex], list[dict]]:
    """The site's daily index for today and tomorrow, and the hourly answers they rest on."""
    today, tomorrow = outlook_days(state)
    start, _ = uk_day_bounds(today)
    _, end = uk_day_bounds(tomorrow)
    observed = state.observations.filter((pl.col("site_id") == site_id) & (pl.col("time") >= start))
    items = []
    for pollutant, model in state.models.items():
        origin = state.origins.get((site_id, pollutant))
        if origin is None:
            continue
        last = min(end - HOUR, origin + model.forecaster.max_hours_ahead * HOUR)
        hour = max(origin + HOUR, start)
        while hour <= last:
            items.append(ForecastItem(site_id, hour, pollutant))
            hour += HOUR
    answers = answer(state, serving.history, items) if items else []
    forecast = pl.DataFrame(
        [{"time": i.hour, "pollutant": i.pollutant, "pred": a["pred"], "lower": a["lower"], "upper": a["upper"]} for i, a in zip(items, answers)],
        schema=FORECAST_HOURS,
    )
    hours = day_hours(observed, forecast, list(state.models))
    coverage = next(iter(state.models.values())).forecaster.coverage
    return [daily_index(hours, day, coverage=coverage, errors=state.daily_errors) for day in (today, tomorrow)], answers
