"""What the forecast page shows, built from the serving state: the answers of ``/api/sites`` and
``/api/sites/{site_id}``. Every forecast here comes from the same forecast function as
``/predict`` (``forecasts.answer``); none is written to the prediction log, which holds what
clients were served. Times are UTC.

States the page names in words:
- *no model loaded*: the service has no state (``model_loaded`` false, with the reason);
- *stale*: the network's newest observation is more than ``STALE_AFTER_HOURS`` old;
- *not measured*: the site registry (the packaged AURN metadata) lists no instrument for that
  pollutant at the site in the year of the newest observation;
- *feed stopped*: a pollutant the site measures has no observation in the ``FEED_STOPPED_HOURS``
  before the network's newest observation; no forecast is shown for it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from routeaq_assets.core.daqi import daqi
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.core.sites import load_packaged_registry, measures
from routeaq_serving.errors import ForecastError
from routeaq_serving.daily import daily_outlook
from routeaq_serving.forecasts import ForecastItem, Forecasts, answer, hours_ahead, known_site
from routeaq_serving.state import STALE_AFTER_HOURS, State

FEED_STOPPED_HOURS = 24
HISTORY_DAYS = 7
HOUR = timedelta(hours=1)


def utc(t: datetime | None) -> str | None:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else None


def _age_hours(now: datetime, t: datetime | None) -> float | None:
    return round((now - t) / HOUR, 1) if t is not None else None


def _site_registry(sites: frozenset[str]) -> pl.DataFrame:
    """Registry rows of the served sites that the packaged AURN metadata knows (others have none)."""
    known = load_packaged_registry()
    return known.filter(pl.col("site_id").is_in(sorted(sites)))


def _measured(registry: pl.DataFrame, site_id: str, pollutant: str, year: int, has_data: bool) -> bool:
    """The registry decides for a site it lists; a site it does not list measures what it reports."""
    if registry.filter(pl.col("site_id") == site_id).is_empty():
        return has_data
    return measures(registry, site_id, pollutant, year) or has_data


# The overview's cells show these hours ahead; a site's page shows every hour the champion serves.
OVERVIEW_LEADS = (1, 6, 12, 24, 48)


def _horizons(state: State, pollutant: str, leads: tuple[int, ...] | None = None) -> list[int]:
    served = [1, *sorted(h for p, h in state.ahead if p == pollutant)]
    return [h for h in served if leads is None or h in leads]


def _forecast_point(result: dict, source: str) -> dict:
    band = daqi(result["pollutant"], result["pred"])
    return {
        "time": result["timestamp"],
        "hours_ahead": result["hours_ahead"],
        "pred": result["pred"],
        "lower": result["lower"],
        "upper": result["upper"],
        "interval": result["interval"],
        "model_version": result["model_version"],
        "source": source,
        "daqi": band.as_dict() if band else None,
    }


def _newest(observations: pl.DataFrame, pollutant: str) -> tuple[datetime, float] | None:
    seen = observations.filter(pl.col(pollutant).is_not_null())
    return (seen["time"][-1], float(seen[pollutant][-1])) if seen.height else None


def _pollutant_status(state: State, registry: pl.DataFrame, site_obs: pl.DataFrame, site_id: str, pollutant: str, now: datetime) -> dict:
    newest = _newest(site_obs, pollutant)
    measured = _measured(registry, site_id, pollutant, state.origin.year, newest is not None)
    stopped = measured and (newest is None or state.origin - newest[0] > timedelta(hours=FEED_STOPPED_HOURS))
    if not measured:
        problem = f"{site_id} does not measure {pollutant}"
    elif stopped:
        since = f"since {utc(newest[0])}" if newest else f"in the {FEED_STOPPED_HOURS} hours before {utc(state.origin)}"
        problem = f"feed stopped: no {pollutant} observation at {site_id} {since}"
    elif pollutant not in state.models:
        problem = f"no champion model for {pollutant}"
    else:
        problem = None
    return {
        "pollutant": pollutant,
        "measured": measured,
        "feed_stopped": stopped,
        "newest_observation": utc(newest[0]) if newest else None,
        "newest_value": newest[1] if newest else None,
        "age_hours": _age_hours(now, newest[0]) if newest else None,
        "problem": problem,
    }


def _next_hours(serving: Forecasts, state: State, site_id: str, pollutant: str, leads: tuple[int, ...] | None = None) -> tuple[list[dict], str | None]:
    points, problems = [], []
    for h in _horizons(state, pollutant, leads):
        try:
            (result,) = answer(state, serving.history, [ForecastItem(site_id, state.origin + h * HOUR, pollutant)])
        except ForecastError as exc:
            problems.append(exc.message)
            continue
        points.append(_forecast_point(result, "forecast"))
    return points, "; ".join(problems) or None


def overview(serving: Forecasts, now: datetime) -> dict:
    """Every site with, per pollutant, the forecasts for the next hours and the data's state."""
    status = serving.status()
    base = {
        "generated_at": utc(now),
        "model_loaded": status["model_loaded"],
        "reason": status.get("reason") or status.get("warning"),
        "stale_after_hours": STALE_AFTER_HOURS,
        "feed_stopped_after_hours": FEED_STOPPED_HOURS,
    }
    if not status["model_loaded"]:
        return {**base, "newest_observation": None, "age_hours": None, "stale": None, "forecast_origin": None, "sites": []}
    state = serving.current()
    registry = _site_registry(state.sites)
    names = dict(registry.select("site_id", "site_name").unique("site_id").iter_rows())
    newest = max(state.data_until.values()) if state.data_until else None
    sites = []
    for site_id in sorted(state.sites):
        site_obs = state.observations.filter(pl.col("site_id") == site_id)
        pollutants = []
        for pollutant in FORECAST_POLLUTANTS:
            entry = _pollutant_status(state, registry, site_obs, site_id, pollutant, now)
            entry["forecasts"] = []
            if entry["problem"] is None:
                entry["forecasts"], entry["problem"] = _next_hours(serving, state, site_id, pollutant, OVERVIEW_LEADS)
            pollutants.append(entry)
        site_newest = state.data_until.get(site_id)
        measured = [p for p in pollutants if p["measured"]]
        days, _ = daily_outlook(serving, state, site_id)
        sites.append({
            "site_id": site_id,
            "site_name": names.get(site_id),
            "newest_observation": utc(site_newest),
            "age_hours": _age_hours(now, site_newest),
            "feed_stopped": bool(measured) and all(p["feed_stopped"] for p in measured),
            "daily": [d.as_dict() for d in days],
            "pollutants": pollutants,
        })
    age = _age_hours(now, newest)
    return {
        **base,
        "newest_observation": utc(newest),
        "age_hours": age,
        "stale": age is None or age > STALE_AFTER_HOURS,
        "forecast_origin": utc(state.origin),
        "sites": sites,
    }


def _served(serving: Forecasts, site_id: str, start: datetime, end: datetime) -> pl.DataFrame:
    """Logged forecasts of the site for hours in [start, end): per pollutant and hour the one made
    the fewest hours ahead, the latest request first among equals."""
    log = serving.logged(start, end).filter(pl.col("site_id") == site_id)
    return log.sort("hours_ahead", pl.col("requested_at"), descending=[False, True]).unique(["pollutant", "time"], keep="first")


def _as_of(serving: Forecasts, state: State, site_id: str, pollutant: str, hours: list[datetime]) -> dict[datetime, dict]:
    """Champion forecasts one hour ahead for ``hours``, each from the data before it."""
    hours = [h for h in hours if h >= state.earliest_hour and hours_ahead(state, ForecastItem(site_id, h, pollutant)) == 1]
    items = [ForecastItem(site_id, h, pollutant) for h in hours]
    try:
        results = answer(state, serving.history, items) if items else []
    except ForecastError:  # one hour without history: answer the others one by one
        results = []
        for item in items:
            try:
                results.extend(answer(state, serving.history, [item]))
            except ForecastError:
                continue
    return {datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")): r for r in results}


def _trained_before(state: State, pollutant: str) -> datetime | None:
    """The first hour the one-hour champion did not train on (its held-out period's start)."""
    model = state.models.get(pollutant)
    start = model.metadata.get("holdout_start") if model else None
    return datetime.fromisoformat(start) if start else None


def _skill(points: list[dict], observed: dict[datetime, float]) -> dict:
    """Mean absolute error of the forecasts shown and of persistence (the observation
    ``hours_ahead`` before) over the hours that have both and an observation."""
    pairs = []
    for p in points:
        t = datetime.fromisoformat(p["time"].replace("Z", "+00:00"))
        if p["pred"] is None or t not in observed:
            continue
        before = observed.get(t - p["hours_ahead"] * HOUR)
        if before is not None:
            pairs.append((t, observed[t], p["pred"], before, p["lower"], p["upper"]))
    if not pairs:
        return {"hours": 0, "first": None, "last": None, "mae_forecast": None, "mae_persistence": None, "skill": None, "interval_coverage": None}
    n = len(pairs)
    mae_f = sum(abs(o - f) for _, o, f, *_ in pairs) / n
    mae_p = sum(abs(o - b) for _, o, _, b, *_ in pairs) / n
    covered = sum(lo <= o <= hi for _, o, _, _, lo, hi in pairs) / n
    return {
        "hours": n,
        "first": utc(pairs[0][0]),
        "last": utc(pairs[-1][0]),
        "mae_forecast": round(mae_f, 3),
        "mae_persistence": round(mae_p, 3),
        "skill": round(1 - mae_f / mae_p, 3) if mae_p > 0 else None,
        "interval_coverage": round(covered, 3),
    }


def site_detail(serving: Forecasts, site_id: str, now: datetime) -> dict:
    """The last ``HISTORY_DAYS`` of one site: observations, the forecasts made for those hours
    (served, else as-of champion forecasts), the next hours, and skill against persistence."""
    state = serving.current()
    site_id = known_site(state, site_id.upper())
    registry = _site_registry(state.sites)
    names = dict(registry.select("site_id", "site_name").unique("site_id").iter_rows())
    start = state.origin - (24 * HISTORY_DAYS - 1) * HOUR
    hours = [start + i * HOUR for i in range(24 * HISTORY_DAYS)]
    site_obs = state.observations.filter((pl.col("site_id") == site_id) & (pl.col("time") >= start - 24 * HOUR))
    served = _served(serving, site_id, start, state.origin + HOUR)
    pollutants = []
    for pollutant in FORECAST_POLLUTANTS:
        entry = _pollutant_status(state, registry, state.observations.filter(pl.col("site_id") == site_id), site_id, pollutant, now)
        observed = {t: v for t, v in site_obs.select("time", pollutant).iter_rows() if v is not None}
        logged = {r["time"]: r for r in served.filter(pl.col("pollutant") == pollutant).iter_rows(named=True)}
        missing = [h for h in hours if h not in logged] if entry["measured"] and pollutant in state.models else []
        as_of = _as_of(serving, state, site_id, pollutant, missing)
        points = []
        for h in hours:
            if h in logged:
                r = logged[h]
                result = {**r, "timestamp": utc(h)}
                forecast = _forecast_point(result, "served")
            elif h in as_of:
                forecast = _forecast_point(as_of[h], "as_of")
            else:
                forecast = None
            points.append({"time": utc(h), "observed": observed.get(h), "forecast": forecast})
        # as-of forecasts for hours the champion was trained on would flatter it: skill leaves them out
        trained_before = _trained_before(state, pollutant)
        shown = [p["forecast"] for p in points if p["forecast"] and not (p["forecast"]["source"] == "as_of" and trained_before and p["time"] < utc(trained_before))]
        upcoming = _next_hours(serving, state, site_id, pollutant)[0] if entry["problem"] is None else []
        skill = {**_skill(shown, observed), "model_trained_before": utc(trained_before)}
        pollutants.append({**entry, "history": points, "forecasts": upcoming, "skill": skill})
    return {
        "site_id": site_id,
        "site_name": names.get(site_id),
        "start": utc(start),
        "forecast_origin": utc(state.origin),
        "newest_observation": utc(state.data_until.get(site_id)),
        "age_hours": _age_hours(now, state.data_until.get(site_id)),
        "pollutants": pollutants,
    }
