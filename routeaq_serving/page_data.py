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

import threading
from datetime import datetime, timedelta

import polars as pl

from routeaq_assets.core.daily_daqi import DailyIndex
from routeaq_assets.core.daqi import ADVICE, DEFRA_DAQI_PAGE, band_starts, daqi
from routeaq_assets.core.places import nearest
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


NEXT_HOURS = 48  # a site's page and the overview's worst hour look this far ahead of the network's newest observation
# Concentrations on the page are given to 0.1 µg/m³: what the network's instruments report; the
# page writes them as whole numbers ("about 21").
DECIMALS = 1


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, DECIMALS)


def _newest(observations: pl.DataFrame, pollutant: str) -> tuple[datetime, float] | None:
    seen = observations.filter(pl.col(pollutant).is_not_null())
    return (seen["time"][-1], float(seen[pollutant][-1])) if seen.height else None


def _pollutant_status(state: State, registry: pl.DataFrame, site_obs: pl.DataFrame, site_id: str, pollutant: str) -> dict:
    """The pollutant's state at a site under the served state (its age is the answer's, added per request)."""
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
        "problem": problem,
    }


def _answer_each(state: State, serving: Forecasts, items: list[ForecastItem]) -> tuple[dict[ForecastItem, dict], list[str]]:
    """Answers for the items that can be answered, and why the others cannot (one batch, then
    one by one where the batch fails)."""
    try:
        return dict(zip(items, answer(state, serving.history, items))), []
    except ForecastError:
        pass
    found, problems = {}, []
    for item in items:
        try:
            (found[item],) = answer(state, serving.history, [item])
        except ForecastError as exc:
            if exc.message not in problems:
                problems.append(exc.message)
    return found, problems


def _point(result: dict) -> dict:
    """An hourly forecast as the page shows it: the hour, how far ahead, the value and its range
    (µg/m³, 0.1), and its DAQI index."""
    band = daqi(result["pollutant"], result["pred"])
    return {
        "time": result["timestamp"],
        "hours_ahead": result["hours_ahead"],
        "pred": _rounded(result["pred"]),
        "lower": _rounded(result["lower"]),
        "upper": _rounded(result["upper"]),
        "index": band.index if band else None,
    }


def _next_hours(serving: Forecasts, state: State, site_id: str, pollutant: str) -> tuple[list[dict], str | None]:
    """The pollutant's forecasts for each of the ``NEXT_HOURS`` hours after the network's newest
    observation that its champion reaches, and why the others have none."""
    items = [ForecastItem(site_id, state.origin + k * HOUR, pollutant) for k in range(1, NEXT_HOURS + 1)]
    found, problems = _answer_each(state, serving, items)
    return [_point(found[i]) for i in items if i in found], "; ".join(problems) or None


def _registry_facts(registry: pl.DataFrame) -> dict[str, dict]:
    """Name, site type and coordinates of each served site that the packaged AURN metadata knows."""
    rows = registry.unique("site_id", keep="first").iter_rows(named=True)
    return {r["site_id"]: {"site_name": r["site_name"], "site_type": r["location_type"], "latitude": r["latitude"], "longitude": r["longitude"]} for r in rows}


def _facts(facts: dict[str, dict], site_id: str) -> dict:
    return facts.get(site_id, {"site_name": None, "site_type": None, "latitude": None, "longitude": None})


def _day_summary(day: DailyIndex) -> dict:
    """A day's index for the overview: the index, its band, what sets it, the odds and where they come from."""
    whole = day.as_dict()
    return {k: whole[k] for k in ("day", "index", "band", "set_by", "p_moderate_or_above", "p_high_or_above", "odds_from", "odds_site_days")}


def _site_forecasts(serving: Forecasts, state: State, site_id: str) -> dict:
    """What a site's answers need from the served state: per pollutant its state in words and the
    next ``NEXT_HOURS`` hours' forecasts, and today's and tomorrow's index."""
    registry = _cache.registry(state)
    site_obs = state.observations.filter(pl.col("site_id") == site_id)
    statuses, upcoming = {}, {}
    for pollutant in FORECAST_POLLUTANTS:
        entry = _pollutant_status(state, registry, site_obs, site_id, pollutant)
        points = []
        if entry["problem"] is None:
            points, entry["problem"] = _next_hours(serving, state, site_id, pollutant)
        statuses[pollutant], upcoming[pollutant] = entry, points
    return {"statuses": statuses, "next": upcoming, "days": daily_outlook(serving, state, site_id)[0]}


def _summary(state: State, facts: dict[str, dict], site_id: str, parts: dict) -> dict:
    """A site in the overview: today, tomorrow, and per pollutant its state, the next hour and the
    worst of the next ``NEXT_HOURS`` hours."""
    pollutants = []
    for pollutant, entry in parts["statuses"].items():
        points = parts["next"][pollutant]
        worst = max(points, key=lambda p: (p["pred"], -p["hours_ahead"])) if points else None
        pollutants.append({**entry, "next_hour": points[0] if points else None, "worst": worst})
    measured = [p for p in pollutants if p["measured"]]
    today, tomorrow = parts["days"]
    return {
        "site_id": site_id,
        **_facts(facts, site_id),
        "newest_observation": utc(state.data_until.get(site_id)),
        "feed_stopped": bool(measured) and all(p["feed_stopped"] for p in measured),
        "today": _day_summary(today),
        "tomorrow": _day_summary(tomorrow),
        "pollutants": pollutants,
    }


class _PerState:
    """What is computed once per served state (a state changes only when the service refreshes
    to a new champion, panel, set of factors or daily errors) and shared by every request until the next: each
    site's forecasts, its as-of forecasts for the history hours, and the overview. ``warm``
    builds the forecasts and the overview as a state is loaded, so no visitor waits for them;
    work is done outside the lock and the first result kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: State | None = None
        self._values: dict[tuple, object] = {}

    def get(self, state: State, key: tuple, build):  # noqa: ANN001, ANN201 - a builder and what it builds
        with self._lock:
            if self._state is not state:
                self._state, self._values = state, {}
            if key in self._values:
                return self._values[key]
        value = build()
        with self._lock:
            return self._values.setdefault(key, value) if self._state is state else value

    def registry(self, state: State) -> pl.DataFrame:
        return self.get(state, ("registry",), lambda: _site_registry(state.sites))

    def facts(self, state: State) -> dict[str, dict]:
        return self.get(state, ("facts",), lambda: _registry_facts(self.registry(state)))

    def site(self, serving: Forecasts, state: State, site_id: str) -> dict:
        return self.get(state, ("site", site_id), lambda: _site_forecasts(serving, state, site_id))

    def overview(self, serving: Forecasts, state: State) -> list[dict]:
        def build() -> list[dict]:
            facts = self.facts(state)
            return [_summary(state, facts, site_id, self.site(serving, state, site_id)) for site_id in sorted(state.sites)]

        return self.get(state, ("overview",), build)


_cache = _PerState()


def warm(serving: Forecasts) -> None:
    """Build every site's forecasts and the overview of the state just loaded."""
    if serving.status()["model_loaded"]:
        _cache.overview(serving, serving.current())


def overview(serving: Forecasts, now: datetime) -> dict:
    """Every site's summary (``_overview_sites``) with the data's age as of ``now``."""
    status = serving.status()
    base = {
        "generated_at": utc(now),
        "model_loaded": status["model_loaded"],
        "reason": status.get("reason") or status.get("warning"),
        "stale_after_hours": STALE_AFTER_HOURS,
        "feed_stopped_after_hours": FEED_STOPPED_HOURS,
        "bands": {band: {"advice": ADVICE[band]} for band in ADVICE},
        "daqi_page": DEFRA_DAQI_PAGE,
    }
    if not status["model_loaded"]:
        return {**base, "newest_observation": None, "age_hours": None, "stale": None, "forecast_origin": None, "interval": None, "models": {}, "sites": []}
    state = serving.current()
    newest = max(state.data_until.values()) if state.data_until else None
    age = _age_hours(now, newest)
    sites = [
        {**site, "age_hours": _age_hours(now, state.data_until.get(site["site_id"]))}
        for site in _cache.overview(serving, state)
    ]
    return {
        **base,
        "newest_observation": utc(newest),
        "age_hours": age,
        "stale": age is None or age > STALE_AFTER_HOURS,
        "forecast_origin": utc(state.origin),
        "interval": next(iter(state.models.values())).forecaster.coverage,
        "models": {p: m.version for p, m in sorted(state.models.items())},
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
    found, _ = _answer_each(state, serving, [ForecastItem(site_id, h, pollutant) for h in hours]) if hours else ({}, [])
    return {item.hour: result for item, result in found.items()}


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


def _columns(points: list[dict | None], keys: tuple[str, ...]) -> dict[str, list]:
    """Rows as columns: one list per key, aligned with the hours, null where a row is missing."""
    return {key: [None if p is None else p[key] for p in points] for key in keys}


def site_detail(serving: Forecasts, site_id: str, now: datetime) -> dict:
    """One site: today's and tomorrow's index in full; the last ``HISTORY_DAYS`` of hours with
    the observations and the forecasts made for them (served, else as-of champion forecasts); the
    next ``NEXT_HOURS`` hours; and skill against persistence. Hourly values come as columns
    aligned with ``times`` and ``next_times``: no field repeats per hour."""
    state = serving.current()
    site_id = known_site(state, site_id.upper())
    start = state.origin - (24 * HISTORY_DAYS - 1) * HOUR
    hours = [start + i * HOUR for i in range(24 * HISTORY_DAYS)]
    ahead = [state.origin + k * HOUR for k in range(1, NEXT_HOURS + 1)]
    site_obs = state.observations.filter((pl.col("site_id") == site_id) & (pl.col("time") >= start - 24 * HOUR))
    served = _served(serving, site_id, start, state.origin + HOUR)
    parts = _cache.site(serving, state, site_id)
    pollutants = []
    for pollutant in FORECAST_POLLUTANTS:
        entry = parts["statuses"][pollutant]
        newest = entry["newest_observation"]
        entry = {**entry, "age_hours": _age_hours(now, datetime.fromisoformat(newest.replace("Z", "+00:00"))) if newest else None}
        observed = {t: v for t, v in site_obs.select("time", pollutant).iter_rows() if v is not None}
        logged = {r["time"]: {**r, "timestamp": utc(r["time"])} for r in served.filter(pl.col("pollutant") == pollutant).iter_rows(named=True)}
        forecast = entry["measured"] and pollutant in state.models
        as_of = _cache.get(state, ("as_of", site_id, pollutant), lambda: _as_of(serving, state, site_id, pollutant, hours)) if forecast else {}
        made = [logged.get(h) or as_of.get(h) for h in hours]
        sources = ["served" if h in logged else "as_of" if h in as_of else None for h in hours]
        # as-of forecasts for hours the champion was trained on would flatter it: skill leaves them out
        trained_before = _trained_before(state, pollutant)
        shown = [
            {**m, "time": m["timestamp"]} for m, source, h in zip(made, sources, hours)
            if m is not None and not (source == "as_of" and trained_before and h < trained_before)
        ]
        upcoming = {p["time"]: p for p in parts["next"][pollutant]}
        pollutants.append({
            **entry,
            "history": {
                "observed": [_rounded(observed.get(h)) for h in hours],
                **_columns([None if m is None else _point(m) for m in made], ("pred", "lower", "upper")),
                "source": sources,
            },
            "next": _columns([upcoming.get(utc(t)) for t in ahead], ("pred", "lower", "upper", "index")),
            "skill": {**_skill(shown, observed), "model_trained_before": utc(trained_before)},
            "band_from": band_starts(pollutant),
        })
    days = parts["days"]
    return {
        "site_id": site_id,
        **_facts(_cache.facts(state), site_id),
        "forecast_origin": utc(state.origin),
        "newest_observation": utc(state.data_until.get(site_id)),
        "age_hours": _age_hours(now, state.data_until.get(site_id)),
        "interval": next(iter(state.models.values())).forecaster.coverage,
        "today": days[0].as_dict(),
        "tomorrow": days[1].as_dict(),
        "times": [utc(h) for h in hours],
        "next_times": [utc(t) for t in ahead],
        "pollutants": pollutants,
    }


ROADSIDE_NOTE = (
    "Roadside and kerbside sites measure the air beside busy traffic, where NO2 and PM run higher than at urban or"
    " rural background sites a few streets away: pick the site most like where you will be."
)


def nearest_sites(serving: Forecasts, latitude: float, longitude: float, limit: int) -> list[dict]:
    """The ``limit`` served sites nearest the point, nearest first: each site's overview summary
    (today, tomorrow, site type) with its distance."""
    state = serving.current()
    summaries = [{k: v for k, v in site.items() if k != "pollutants"} for site in _cache.overview(serving, state)]
    return nearest(latitude, longitude, summaries, limit)
