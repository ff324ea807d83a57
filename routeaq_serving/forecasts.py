"""The one forecast function behind every endpoint: answering ``ForecastItem``s from a ``State``.

A request for a recent hour costs a dictionary lookup in the state's prepared rows and one
``Booster.predict`` on the rows asked for. An older hour (still within the stored history) is
answered from the yearly history files: slower, and the same features. An hour further ahead than
the next one is answered by the same champion (it is trained for every lead up to 48 h) with the
features of a forecast that many hours after the site's own newest observation of that pollutant;
the answer's ``hours_ahead``, ``origin`` and ``data_until`` say how old its inputs were. Loading the state lives in
``routeaq_serving.state``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from routeaq_assets.adapters.stores import HistoryStore, HistoryUnreadable
from routeaq_assets.core.features import MAX_LOOKBACK_HOURS
from routeaq_serving.errors import ForecastError, NotReady, OutOfRange, StoreUnavailable, UnknownSite
from routeaq_serving.state import Rows, ServingState, State, prepare

__all__ = ["ForecastError", "ForecastItem", "Forecasts", "NotReady", "OFFLINE", "ONLINE", "OutOfRange", "StoreUnavailable", "UnknownSite", "answer"]

ONLINE, OFFLINE = "online_store", "offline_store"


@dataclass(frozen=True)
class ForecastItem:
    """One hour of one pollutant at one site to forecast; ``hour`` is an aware UTC datetime."""

    site_id: str
    hour: datetime
    pollutant: str


def known_site(state: State, given: str) -> str:
    """The site a request names, in any case, as the state knows it (upper case), or
    ``UnknownSite`` listing the known ones."""
    if given.upper() not in state.sites:
        raise UnknownSite(f"unknown site_id {given!r}; known sites: {sorted(state.sites)}", "site_id")
    return given.upper()


def _check(state: State, item: ForecastItem, horizon: int) -> None:
    site_id, hour, pollutant = item.site_id, item.hour, item.pollutant
    if site_id not in state.sites:  # items name sites as the state does: no case folding here
        raise UnknownSite(f"unknown site_id {site_id!r}; known sites: {sorted(state.sites)}", "site_id")
    if pollutant not in state.models:
        raise NotReady(f"no champion model for {pollutant}: train and promote one", "pollutant")
    if horizon > 1 and (pollutant, horizon) not in state.ahead:
        furthest = max([1, *(h for p, h in state.ahead if p == pollutant)])
        origin = state.origins[(site_id, pollutant)]
        raise OutOfRange(
            f"timestamp {hour.isoformat()} is beyond the forecast horizon: the latest hour available is {(origin + timedelta(hours=furthest)).isoformat()}"
            f" (the newest {pollutant} observation at {site_id} is {origin.isoformat()}, {horizon} hours before it;"
            f" {pollutant} is forecast 1 to {furthest} hours after it)",
            "timestamp",
        )
    if hour < state.earliest_hour:
        raise OutOfRange(
            f"timestamp {hour.isoformat()} is before the stored history: the earliest hour available is {state.earliest_hour.isoformat()}",
            "timestamp",
        )


def hours_ahead(state: State, item: ForecastItem) -> int:
    """How many hours ``item.hour`` is after its site's own newest observation of its pollutant
    (1 for every hour up to the next). A site whose feed lags is answered further ahead, never by
    the one-hour model on inputs older than an hour."""
    origin = state.origins.get((item.site_id, item.pollutant))
    return 1 if origin is None else max(1, int((item.hour - origin) / timedelta(hours=1)))


def _offline(state: State, history: HistoryStore, items: list[ForecastItem]) -> dict[str, Rows]:
    """Rows for older hours, computed from the history files."""
    sites = sorted({item.site_id for item in items})
    start = min(item.hour for item in items) - timedelta(hours=MAX_LOOKBACK_HOURS)
    end = max(item.hour for item in items) + timedelta(hours=1)
    try:
        panel = history.window(sites, start, end)
    except HistoryUnreadable as exc:
        raise StoreUnavailable(f"{exc}: hours before {state.first_hour.isoformat()} that need it cannot be forecast until it is rewritten") from None
    if panel.is_empty():
        raise OutOfRange(f"no stored history for {sites} between {start.isoformat()} and {end.isoformat()}", "timestamp")
    return {p: prepare(panel, p, state.models[p], start, 1, state.factors) for p in {item.pollutant for item in items}}


def answer(state: State, history: HistoryStore, items: list[ForecastItem]) -> list[dict]:
    """Forecasts for the items, in their order, each from data before its hour."""
    horizons = [hours_ahead(state, item) for item in items]
    for item, horizon in zip(items, horizons):
        _check(state, item, horizon)
    older = [item for item in items if item.hour < state.first_hour]
    offline = _offline(state, history, older) if older else {}
    groups: dict[tuple[str, str, int], list[int]] = {}
    for i, (item, horizon) in enumerate(zip(items, horizons)):
        groups.setdefault((item.pollutant, OFFLINE if item.hour < state.first_hour else ONLINE, horizon), []).append(i)
    results: list[dict | None] = [None] * len(items)
    for (pollutant, source, horizon), positions in groups.items():
        if horizon > 1:
            model, rows = state.ahead[(pollutant, horizon)]
        else:
            model, rows = state.models[pollutant], offline[pollutant] if source == OFFLINE else state.online[pollutant]
        missing = [items[i] for i in positions if (items[i].site_id, items[i].hour) not in rows.index]
        if missing:
            raise OutOfRange(f"no stored history for {missing[0].site_id} before {missing[0].hour.isoformat()}", "timestamp")
        index = [rows.index[(items[i].site_id, items[i].hour)] for i in positions]
        pred, lower, upper = model.forecaster.predict_matrix(
            rows.x[index], rows.base[index], (rows.lower_offset[index], rows.upper_offset[index]), num_threads=1
        )
        for k, i in enumerate(positions):
            site_id, hour = items[i].site_id, items[i].hour
            if np.isnan(pred[k]):
                raise OutOfRange(f"no {pollutant} observation at {site_id} in the week before {hour.isoformat()}: nothing to forecast from", "timestamp")
            until = min(state.origins.get((site_id, pollutant), hour), hour - timedelta(hours=horizon))
            value = round(float(pred[k]), 3)
            results[i] = {
                "site_id": site_id,
                "timestamp": hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "pollutant": pollutant,
                "pm25_pred": value if pollutant == "pm25" else None,
                "pred": value,
                "lower": round(float(lower[k]), 3),
                "upper": round(float(upper[k]), 3),
                "interval": model.forecaster.coverage,
                "interval_factor": round(float(rows.factor[index[k]]), 4),
                "hours_ahead": horizon,
                "origin": (hour - timedelta(hours=horizon)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "model_name": model.name,
                "model_version": model.version,
                "data_until": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "source": source,
            }
    return results  # type: ignore[return-value]


class Forecasts(ServingState):
    """The loaded state together with the forecast function over it: what the service holds."""

    def forecast(self, items: list[ForecastItem]) -> list[dict]:
        return answer(self.current(), self.history, items)
