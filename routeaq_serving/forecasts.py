"""The one forecast function behind every endpoint.

At load, the champion of each pollutant comes from MLflow and the recent history from the online
store; features are computed once with ``routeaq_assets.core.features`` (the code training used)
for every site-hour of that history. A request for a recent hour then costs a dictionary lookup
and one ``Booster.predict`` on the rows asked for. An older hour (still within the stored
history) is answered from the yearly history files: slower, and the same features.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

from routeaq_assets.core.environment import Settings
from routeaq_assets.core.features import MAX_LOOKBACK_HOURS, build_features, feature_matrix
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


def prepare(panel: pl.DataFrame, pollutant: str, model: RegisteredForecaster, first: datetime) -> Rows:
    rows = build_features(panel, pollutant).filter(pl.col("time") >= first)
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
    sites: frozenset[str]
    first_hour: datetime  # the oldest hour the online store answers
    last_hour: datetime  # the newest hour that can be forecast (newest observation + 1 h)
    earliest_hour: datetime  # the oldest hour that can be forecast (history or online store)
    data_until: dict[str, datetime]
    online_version: str


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
        models = {}
        for pollutant in FORECAST_POLLUTANTS:
            name = self.settings.model_name(pollutant)
            version = registry.champion_version(name)
            if version is None:
                continue
            known = current.models.get(pollutant) if current else None
            models[pollutant] = known if known and known.version == version else registry.load(name, version)
        if not models:
            self._reason = "no champion model in the registry: run the training job"
            return False
        version = self.store.version()
        if version is None:
            self._reason = f"no online history in {self.settings.online_store_target}: materialize online_features"
            return False
        same_models = current is not None and {p: m.version for p, m in current.models.items()} == {p: m.version for p, m in models.items()}
        if same_models and current.online_version == version:
            self._reason = ""
            return False
        panel = self.store.read()
        first = panel["time"].min() + timedelta(hours=MAX_LOOKBACK_HOURS)
        observed = panel.filter(pl.any_horizontal(pl.col(p).is_not_null() for p in FORECAST_POLLUTANTS))
        self._state = State(
            models=models,
            online={p: prepare(panel, p, m, first) for p, m in models.items()},
            sites=frozenset(panel["site_id"].unique().to_list()),
            first_hour=first,
            last_hour=panel["time"].max(),
            earliest_hour=_earliest_hour(self.history.start(), first),
            data_until=dict(observed.group_by("site_id").agg(pl.col("time").max()).iter_rows()),
            online_version=version,
        )
        self._reason = ""
        log.info("serving %s", {p: m.version for p, m in models.items()})
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
            "warning": self._reason or None,
        }

    def model_info(self) -> dict:
        state = self._require_state()
        return {
            p: {
                "model_name": m.name,
                "version": m.version,
                "train_start": m.metadata.get("train_start"),
                "holdout_start": m.metadata.get("holdout_start"),
                "holdout_end": m.metadata.get("holdout_end"),
                "holdout_metrics": m.metadata.get("holdout_metrics"),
                "interval": m.forecaster.coverage,
            }
            for p, m in state.models.items()
        }

    def _require_state(self) -> State:
        if self._state is None:
            raise NotReady(f"no model loaded: {self._reason}")
        return self._state

    # -- forecasting ---------------------------------------------------------------------
    def _check(self, state: State, site_id: str, hour: datetime, pollutant: str) -> None:
        if site_id not in state.sites:
            raise UnknownSite(f"unknown site_id {site_id!r}; known sites: {sorted(state.sites)}", "site_id")
        if pollutant not in state.models:
            raise NotReady(f"no champion model for {pollutant}: train and promote one", "pollutant")
        if hour > state.last_hour:
            raise OutOfRange(
                f"timestamp {hour.isoformat()} is beyond the forecast horizon: the latest hour available is {state.last_hour.isoformat()}",
                "timestamp",
            )
        if hour < state.earliest_hour:
            raise OutOfRange(
                f"timestamp {hour.isoformat()} is before the stored history: the earliest hour available is {state.earliest_hour.isoformat()}",
                "timestamp",
            )

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
        for site_id, hour, pollutant in items:
            self._check(state, site_id, hour, pollutant)
        older = [item for item in items if item[1] < state.first_hour]
        offline = self._offline(state, older) if older else {}
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (_, hour, pollutant) in enumerate(items):
            groups.setdefault((pollutant, OFFLINE if hour < state.first_hour else ONLINE), []).append(i)
        results: list[dict | None] = [None] * len(items)
        for (pollutant, source), positions in groups.items():
            rows = offline[pollutant] if source == OFFLINE else state.online[pollutant]
            missing = [items[i] for i in positions if (items[i][0], items[i][1]) not in rows.index]
            if missing:
                raise OutOfRange(f"no stored history for {missing[0][0]} before {missing[0][1].isoformat()}", "timestamp")
            index = [rows.index[(items[i][0], items[i][1])] for i in positions]
            model = state.models[pollutant]
            pred, lower, upper = model.forecaster.predict_matrix(
                rows.x[index], rows.base[index], (rows.lower_offset[index], rows.upper_offset[index]), num_threads=1
            )
            for k, i in enumerate(positions):
                site_id, hour, _ = items[i]
                if np.isnan(pred[k]):
                    raise OutOfRange(f"no {pollutant} observation at {site_id} in the week before {hour.isoformat()}: nothing to forecast from", "timestamp")
                until = min(state.data_until.get(site_id, hour), hour - timedelta(hours=1))
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
                    "model_version": model.version,
                    "data_until": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "source": source,
                }
        return results  # type: ignore[return-value]
