"""The one forecast function behind every endpoint.

At load, the champion of each pollutant comes from MLflow and the online feature snapshot from
the online store; features are computed once with ``routeaq_assets.core.features`` (the code
training used) for every site-hour of the snapshot. A request then costs a dictionary lookup and
one ``Booster.predict`` on the rows asked for.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from routeaq_assets.core.environment import Settings
from routeaq_assets.core.features import MAX_LOOKBACK_HOURS, build_features, feature_matrix
from routeaq_assets.core.models import forecast_base
from routeaq_assets.core.registry import ForecastRegistry, RegisteredForecaster
from routeaq_assets.core.schema import FORECAST_POLLUTANTS

log = logging.getLogger("routeaq.serving")
ONLINE = "online_store"


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
class PollutantTable:
    """Everything needed to answer one pollutant: its model and its precomputed rows."""

    model: RegisteredForecaster
    x: np.ndarray
    base: np.ndarray
    lower_offset: np.ndarray
    upper_offset: np.ndarray
    index: dict[tuple[str, datetime], int]


@dataclass(frozen=True)
class State:
    tables: dict[str, PollutantTable]
    sites: frozenset[str]
    first_hour: datetime
    last_hour: datetime  # the newest hour that can be forecast (newest observation + 1 h)
    data_until: dict[str, datetime]
    snapshot_mtime: float


def _build_state(panel: pl.DataFrame, models: dict[str, RegisteredForecaster], mtime: float) -> State:
    tables = {}
    first = panel["time"].min() + timedelta(hours=MAX_LOOKBACK_HOURS)
    for pollutant, model in models.items():
        rows = build_features(panel, pollutant).filter(pl.col("time") >= first)
        keys = zip(rows["site_id"].to_list(), rows["time"].to_list())
        offsets = model.forecaster.interval_offsets(rows)
        tables[pollutant] = PollutantTable(
            model=model,
            x=feature_matrix(rows, model.forecaster.feature_names),
            base=forecast_base(rows),
            lower_offset=offsets[0],
            upper_offset=offsets[1],
            index={key: i for i, key in enumerate(keys)},
        )
    observed = panel.filter(pl.any_horizontal(pl.col(p).is_not_null() for p in FORECAST_POLLUTANTS))
    data_until = dict(observed.group_by("site_id").agg(pl.col("time").max()).iter_rows())
    return State(
        tables=tables,
        sites=frozenset(panel["site_id"].unique().to_list()),
        first_hour=first,
        last_hour=panel["time"].max(),
        data_until=data_until,
        snapshot_mtime=mtime,
    )


class Forecasts:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.snapshot_path = Path(settings.online_features_path)
        self._state: State | None = None
        self._reason = "not loaded yet"
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Load the champions and the snapshot if either changed. On any failure the last good
        state keeps serving and the reason is kept for the readiness answer."""
        with self._lock:
            try:
                registry = ForecastRegistry(self.settings.mlflow_tracking_uri)
                current = self._state
                models = {}
                for pollutant in FORECAST_POLLUTANTS:
                    name = self.settings.model_name(pollutant)
                    version = registry.champion_version(name)
                    if version is None:
                        continue
                    loaded = current.tables.get(pollutant) if current else None
                    models[pollutant] = loaded.model if loaded and loaded.model.version == version else registry.load(name, version)
                if not models:
                    self._reason = "no champion model in the registry: run the training job"
                    return False
                if not self.snapshot_path.exists():
                    self._reason = f"no online feature snapshot at {self.snapshot_path}: materialize online_features"
                    return False
                mtime = self.snapshot_path.stat().st_mtime
                unchanged = (
                    current is not None
                    and current.snapshot_mtime == mtime
                    and {p: t.model.version for p, t in current.tables.items()} == {p: m.version for p, m in models.items()}
                )
                if unchanged:
                    return False
                self._state = _build_state(pl.read_parquet(self.snapshot_path), models, mtime)
                self._reason = ""
                log.info("serving %s", {p: m.version for p, m in models.items()})
                return True
            except Exception as exc:  # keep serving the last good model whatever broke
                self._reason = f"refresh failed, serving the last good model: {type(exc).__name__}: {exc}"
                log.warning(self._reason)
                return False

    def status(self) -> dict:
        state = self._state
        if state is None:
            return {"status": "unavailable", "model_loaded": False, "reason": self._reason}
        newest = max(state.data_until.values()) if state.data_until else None
        return {
            "status": "ok",
            "model_loaded": True,
            "models": {p: t.model.version for p, t in state.tables.items()},
            "newest_observation": newest.isoformat() if newest else None,
            "feature_age_hours": round((datetime.now(timezone.utc) - newest).total_seconds() / 3600, 1) if newest else None,
            "forecast_hours": [state.first_hour.isoformat(), state.last_hour.isoformat()],
            "warning": self._reason or None,
        }

    def model_info(self) -> dict:
        state = self._require_state()
        return {
            p: {
                "model_name": t.model.name,
                "version": t.model.version,
                "train_start": t.model.metadata.get("train_start"),
                "holdout_start": t.model.metadata.get("holdout_start"),
                "holdout_end": t.model.metadata.get("holdout_end"),
                "holdout_metrics": t.model.metadata.get("holdout_metrics"),
                "interval": t.model.forecaster.coverage,
            }
            for p, t in state.tables.items()
        }

    def _require_state(self) -> State:
        if self._state is None:
            raise NotReady(f"no model loaded: {self._reason}")
        return self._state

    # -- forecasting ---------------------------------------------------------------------
    def forecast(self, items: list[tuple[str, datetime, str]]) -> list[dict]:
        """Forecasts for (site_id, hour, pollutant) items, each from data before its hour."""
        state = self._require_state()
        rows: dict[str, list[int]] = {}
        for i, (site_id, hour, pollutant) in enumerate(items):
            if site_id not in state.sites:
                raise UnknownSite(f"unknown site_id {site_id!r}; known sites: {sorted(state.sites)}", "site_id")
            if pollutant not in state.tables:
                raise NotReady(f"no champion model for {pollutant}: train and promote one", "pollutant")
            if hour > state.last_hour:
                raise OutOfRange(
                    f"timestamp {hour.isoformat()} is beyond the forecast horizon: the latest hour available is {state.last_hour.isoformat()}",
                    "timestamp",
                )
            if hour < state.first_hour:
                raise OutOfRange(
                    f"timestamp {hour.isoformat()} is before the stored history: the earliest hour available is {state.first_hour.isoformat()}",
                    "timestamp",
                )
            rows.setdefault(pollutant, []).append(i)
        results: list[dict | None] = [None] * len(items)
        for pollutant, positions in rows.items():
            table = state.tables[pollutant]
            index = [table.index[(items[i][0], items[i][1])] for i in positions]
            forecaster = table.model.forecaster
            pred, lower, upper = forecaster.predict_matrix(
                table.x[index], table.base[index], (table.lower_offset[index], table.upper_offset[index]), num_threads=1
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
                    "interval": forecaster.coverage,
                    "model_version": table.model.version,
                    "data_until": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "source": ONLINE,
                }
        return results  # type: ignore[return-value]
