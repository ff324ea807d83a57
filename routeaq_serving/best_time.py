"""The cleanest hours for an activity at a site (``core.best_time``), from the served forecasts.

The windows start at the first hour that every pollutant forecasts (the hour after the site's
newest observation of the pollutant that reported last) and run ``within`` hours; each pollutant
is forecast as ``POST /predict`` would answer it, up to its champion's reach. The hourly answers
behind the windows are logged as every forecast is."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from routeaq_assets.core.best_time import HOURLY_FORECASTS, best_time
from routeaq_serving.errors import OutOfRange
from routeaq_serving.forecasts import ForecastItem, Forecasts, answer
from routeaq_serving.state import State

HOUR = timedelta(hours=1)
EXPOSURE = "the most polluting pollutant's forecast as a share of where its Moderate band begins (1.0), averaged over the window's hours"


def best_time_at(serving: Forecasts, state: State, site_id: str, hours: int, within: int) -> tuple[dict, list[dict]]:
    """The answer of ``GET /api/best-time`` and the hourly answers it rests on."""
    origins = {p: t for (s, p), t in state.origins.items() if s == site_id and p in state.models}
    if not origins:
        raise OutOfRange(f"site {site_id} has no recent observation of a forecast pollutant: nothing to forecast from", "site_id")
    start = max(origins.values()) + HOUR
    items = [
        ForecastItem(site_id, start + k * HOUR, p)
        for p, origin in sorted(origins.items())
        for k in range(within)
        if start + k * HOUR <= origin + state.models[p].forecaster.max_hours_ahead * HOUR
    ]
    answers = answer(state, serving.history, items)
    forecasts = pl.DataFrame([{"time": i.hour, "pollutant": i.pollutant, "pred": a["pred"]} for i, a in zip(items, answers)], schema=HOURLY_FORECASTS)
    found = best_time(forecasts, hours)
    if found is None:
        raise OutOfRange(f"no {hours}-hour window in the next {within} hours has every pollutant forecast at {site_id}", "hours")
    return {
        "site_id": site_id,
        "hours": hours,
        "within": within,
        "first_hour": f"{start:%Y-%m-%dT%H:%M:%SZ}",
        "pollutants": sorted(origins),
        "exposure": EXPOSURE,
        **{name: window.as_dict() for name, window in found.items()},
    }, answers
