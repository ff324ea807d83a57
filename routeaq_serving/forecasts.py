"""The one forecast function behind every endpoint.

At load, the champion of each pollutant comes from MLflow and the recent history from the online
store; features are computed once with ``routeaq_assets.core.features`` (the code training used)
for every site-hour of that history. A request for a recent hour then costs a dictionary lookup
and one ``Booster.predict`` on the rows asked for. An older hour (still within the stored
history) is answered from the yearly history files: slower, and the same features. An hour
further ahead than the next one is answered by the champion trained for that many hours after
the newest observation (``routeaq-{p}-{h}h``), where one has been trained and promoted.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

from routeaq_assets.core.environment import Settings
from routeaq_assets.core.features import MAX_HORIZON, MAX_LOOKBACK_HOURS, build_features, feature_matrix
from routeaq_assets.core.models import forecast_base
from routeaq_assets.core.registry import ForecastRegistry, RegisteredForecaster
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.core.stores import HistoryStore, online_store

log = logging.getLogger("routeaq.serving")
ONLINE, OFFLINE = "online_store", "offline_store"


class ForecastError(Exception):
    status = 400

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


class UnknownSite(ForecastError):
    status = 404


class OutOfRange(ForecastError):
    status = 422


class NotReady(ForecastError):
    status = 503


@dataclass(frozen=True)
class Rows:
    """Prepared model inputs for some site-hours of one pollutant."""

    x: np.ndarray
    base: np.ndarray
    lower_offset: np.ndarray
    upper_offset: np.ndarray
    index: dict[tuple[str, datetime], int]


def prepare(panel: pl.DataFrame, pollutant: str, model: RegisteredForecaster, first: datetime, horizon: int = 1) -> Rows:
    rows = build_features(panel, pollutant, horizon).filter(pl.col("time") >= first)
    lower, upper = model.forecaster.interval_offsets(rows)
    return Rows(
        x=feature_matrix(rows, model.forecaster.feature_names),
        base=forecast_base(rows),
        lower_offset=lower,
        upper_offset=upper,
        index={key: i for i, key in enumerate(zip(rows["site_id"].to_list(), rows["time"].to_list()))},
    )


@dataclass(frozen=True)
class State:
    models: dict[str, RegisteredForecaster]
    online: dict[str, Rows]
    # (pollutant, hours ahead) -> the champion for that horizon and its rows for origin + hours
    ahead: dict[tuple[str, int], tuple[RegisteredForecaster, Rows]]
    sites: frozenset[str]
    first_hour: datetime  # the oldest hour the online store answers
    origin: datetime  # the newest observed hour
    last_hour: datetime  # the newest hour the one-hour models forecast (origin + 1 h)
    earliest_hour: datetime  # the oldest hour that can be forecast (history or online store)
    data_until: dict[str, datetime]
    online_version: str

    def loaded(self) -> dict[str, RegisteredForecaster]:
        return {m.name: m for m in [*self.models.values(), *(m for m, _ in self.ahead.values())]}


def _earliest_hour(history_start: datetime | None, online_first: datetime) -> datetime:
    """A forecast needs at least one stored hour before it."""
    return min(history_start + timedelta(hours=1), online_first) if history_start else online_first


class Forecasts:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = online_store(settings.online_store_target)
        self.history = HistoryStore(settings.history_dir)
        self._state: State | None = None
        self._reason = "not loaded yet"
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Load the champions and the online history if either changed. On any failure the last
        good state keeps serving and the reason is kept for the readiness answer."""
        with self._lock:
            try:
                return self._refresh()
            except Exception as exc:  # keep serving the last good model whatever broke
                self._reason = f"refresh failed, serving the last good model: {type(exc).__name__}: {exc}"
                log.warning(self._reason)
                return False

    def _refresh(self) -> bool:
        registry = ForecastRegistry(self.settings.mlflow_tracking_uri)
        current = self._state
        champions = registry.champions(self.settings.model_prefix)
        known = current.loaded() if current else {}

        def champion(pollutant: str, horizon: int = 1) -> RegisteredForecaster | None:
            name = self.settings.model_name(pollutant, horizon)
            version = champions.get(name)
            if version is None:
                return None
            loaded = known.get(name)
            return loaded if loaded and loaded.version == version else registry.load(name, version)

        models = {p: m for p in FORECAST_POLLUTANTS if (m := champion(p))}
        ahead_models = {(p, h): m for p in FORECAST_POLLUTANTS for h in range(2, MAX_HORIZON + 1) if (m := champion(p, h))}
        if not models:
            self._reason = "no champion model in the registry: run the training job"
            return False
        version = self.store.version()
        if version is None:
            self._reason = f"no online history in {self.settings.online_store_target}: materialize online_features"
            return False
        serving = {m.name: m.version for m in [*models.values(), *ahead_models.values()]}
        if current is not None and {n: m.version for n, m in known.items()} == serving and current.online_version == version:
            self._reason = ""
            return False
        panel = self.store.read()
        first = panel["time"].min() + timedelta(hours=MAX_LOOKBACK_HOURS)
        observed = panel.filter(pl.any_horizontal(pl.col(p).is_not_null() for p in FORECAST_POLLUTANTS))
        data_until = dict(observed.group_by("site_id").agg(pl.col("time").max()).iter_rows())
        origin = max(data_until.values())
        last_hour = origin + timedelta(hours=1)

        def rows_ahead(pollutant: str, horizon: int, model: RegisteredForecaster) -> Rows:
            hour = origin + timedelta(hours=horizon)
            window = panel.filter((pl.col("time") >= hour - timedelta(hours=MAX_LOOKBACK_HOURS)) & (pl.col("time") <= hour))
            return prepare(window, pollutant, model, hour, horizon)

        self._state = State(
            models=models,
            online={p: prepare(panel.filter(pl.col("time") <= last_hour), p, m, first) for p, m in models.items()},
            ahead={(p, h): (m, rows_ahead(p, h, m)) for (p, h), m in ahead_models.items()},
            sites=frozenset(panel["site_id"].unique().to_list()),
            first_hour=first,
            origin=origin,
            last_hour=last_hour,
            earliest_hour=_earliest_hour(self.history.start(), first),
            data_until=data_until,
            online_version=version,
        )
        self._reason = ""
        log.info("serving %s", serving)
        return True

    def status(self) -> dict:
        state = self._state
        if state is None:
            return {"status": "unavailable", "model_loaded": False, "reason": self._reason}
        newest = max(state.data_until.values()) if state.data_until else None
        return {
            "status": "ok",
            "model_loaded": True,
            "models": {p: m.version for p, m in state.models.items()},
            "newest_observation": newest.isoformat() if newest else None,
            "feature_age_hours": round((datetime.now(timezone.utc) - newest).total_seconds() / 3600, 1) if newest else None,
            "forecast_hours": [state.earliest_hour.isoformat(), state.last_hour.isoformat()],
            "online_hours": [state.first_hour.isoformat(), state.last_hour.isoformat()],
            "hours_ahead": {p: [1, *sorted(h for q, h in state.ahead if q == p)] for p in state.models},
            "warning": self._reason or None,
        }

    def model_info(self) -> dict:
        """Per pollutant, the one-hour champion (and under ``f"{p}_{h}h"`` those further ahead)."""
        state = self._require_state()
        served = {**state.models, **{f"{p}_{h}h": m for (p, h), (m, _) in sorted(state.ahead.items())}}
        return {
            key: {
                "model_name": m.name,
                "version": m.version,
                "train_start": m.metadata.get("train_start"),
                "holdout_start": m.metadata.get("holdout_start"),
                "holdout_end": m.metadata.get("holdout_end"),
                "holdout_metrics": m.metadata.get("holdout_metrics"),
                "interval": m.forecaster.coverage,
            }
            for key, m in served.items()
        }

    def _require_state(self) -> State:
        if self._state is None:
            raise NotReady(f"no model loaded: {self._reason}")
        return self._state

    # -- forecasting ---------------------------------------------------------------------
    def _check(self, state: State, site_id: str, hour: datetime, pollutant: str, horizon: int) -> None:
        if site_id not in state.sites:
            raise UnknownSite(f"unknown site_id {site_id!r}; known sites: {sorted(state.sites)}", "site_id")
        if pollutant not in state.models:
            raise NotReady(f"no champion model for {pollutant}: train and promote one", "pollutant")
        if horizon > 1 and (pollutant, horizon) not in state.ahead:
            trained = sorted(h for p, h in state.ahead if p == pollutant)
            further = f"; {pollutant} is also forecast {trained} hours after it" if trained else ""
            raise OutOfRange(
                f"timestamp {hour.isoformat()} is beyond the forecast horizon: the latest hour available is {state.last_hour.isoformat()}"
                f" (the newest observation is {state.origin.isoformat()}{further})",
                "timestamp",
            )
        if hour < state.earliest_hour:
            raise OutOfRange(
                f"timestamp {hour.isoformat()} is before the stored history: the earliest hour available is {state.earliest_hour.isoformat()}",
                "timestamp",
            )

    @staticmethod
    def _hours_ahead(state: State, hour: datetime) -> int:
        """How many hours after the newest observation ``hour`` is (1 for every hour up to the next)."""
        return max(1, int((hour - state.origin) / timedelta(hours=1)))

    def _offline(self, state: State, items: list[tuple[str, datetime, str]]) -> dict[str, Rows]:
        """Rows for older hours, computed from the history files."""
        sites = sorted({site for site, _, _ in items})
        start = min(hour for _, hour, _ in items) - timedelta(hours=MAX_LOOKBACK_HOURS)
        end = max(hour for _, hour, _ in items) + timedelta(hours=1)
        panel = self.history.window(sites, start, end)
        if panel.is_empty():
            raise OutOfRange(f"no stored history for {sites} between {start.isoformat()} and {end.isoformat()}", "timestamp")
        return {p: prepare(panel, p, state.models[p], start) for p in {p for _, _, p in items}}

    def forecast(self, items: list[tuple[str, datetime, str]]) -> list[dict]:
        """Forecasts for (site_id, hour, pollutant) items, each from data before its hour."""
        state = self._require_state()
        horizons = [self._hours_ahead(state, hour) for _, hour, _ in items]
        for (site_id, hour, pollutant), horizon in zip(items, horizons):
            self._check(state, site_id, hour, pollutant, horizon)
        older = [item for item in items if item[1] < state.first_hour]
        offline = self._offline(state, older) if older else {}
        groups: dict[tuple[str, str, int], list[int]] = {}
        for i, ((_, hour, pollutant), horizon) in enumerate(zip(items, horizons)):
            groups.setdefault((pollutant, OFFLINE if hour < state.first_hour else ONLINE, horizon), []).append(i)
        results: list[dict | None] = [None] * len(items)
        for (pollutant, source, horizon), positions in groups.items():
            if horizon > 1:
                model, rows = state.ahead[(pollutant, horizon)]
            else:
                model, rows = state.models[pollutant], offline[pollutant] if source == OFFLINE else state.online[pollutant]
            missing = [items[i] for i in positions if (items[i][0], items[i][1]) not in rows.index]
            if missing:
                raise OutOfRange(f"no stored history for {missing[0][0]} before {missing[0][1].isoformat()}", "timestamp")
            index = [rows.index[(items[i][0], items[i][1])] for i in positions]
            pred, lower, upper = model.forecaster.predict_matrix(
                rows.x[index], rows.base[index], (rows.lower_offset[index], rows.upper_offset[index]), num_threads=1
            )
            for k, i in enumerate(positions):
                site_id, hour, _ = items[i]
                if np.isnan(pred[k]):
                    raise OutOfRange(f"no {pollutant} observation at {site_id} in the week before {hour.isoformat()}: nothing to forecast from", "timestamp")
                until = min(state.data_until.get(site_id, hour), hour - timedelta(hours=horizon))
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
                    "hours_ahead": horizon,
                    "origin": (hour - timedelta(hours=horizon)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "model_name": model.name,
                    "model_version": model.version,
                    "data_until": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "source": source,
                }
        return results  # type: ignore[return-value]
