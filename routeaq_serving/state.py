"""The serving state: the champions and the online history, loaded and kept current.

At load, the champion of each pollutant comes from MLflow and the recent history from the online
store; features are computed once with ``routeaq_assets.core.features`` (the code training used)
for every site-hour of that history, so that answering a recent hour costs a dictionary lookup
(see ``routeaq_serving.forecasts``). A refresh builds a new immutable ``State`` and swaps it in;
on any failure the last good state keeps serving.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

from routeaq_assets.adapters.notify import notifier_from_settings
from routeaq_assets.adapters.redact import redact_uri, scrub
from routeaq_assets.adapters.registry import ForecastRegistry, RegisteredForecaster
from routeaq_assets.adapters.shared import shared_folder
from routeaq_assets.adapters.stores import HistoryStore, daily_error_store, interval_factor_store, online_store
from routeaq_assets.core.environment import Settings, model_name
from routeaq_assets.core.features import MAX_HORIZON, MAX_LOOKBACK_HOURS, build_features, feature_matrix
from routeaq_assets.core.intervals import empty_factors, factors_for
from routeaq_assets.core.models import forecast_base
from routeaq_assets.core.predictions import read_prediction_log
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.core.shared_folders import HISTORY, PREDICTIONS
from routeaq_serving.errors import NotReady

log = logging.getLogger("routeaq.serving")
REGISTRY, ONLINE_STORE, SHARED_HISTORY = "registry", "online_store", "shared_history"
LOST_CHAMPIONS = "registry_champions"  # served models that the registry no longer names champion


class StoreFault(Exception):
    """A store the state is loaded from cannot be read; the message is safe to show."""


STALE_AFTER_HOURS = 3  # the network's newest observation older than this: the data is stale


@dataclass(frozen=True)
class Rows:
    """Prepared model inputs for some site-hours of one pollutant."""

    x: np.ndarray
    base: np.ndarray
    lower_offset: np.ndarray
    upper_offset: np.ndarray
    factor: np.ndarray  # what the model's interval offsets were multiplied by (core.intervals)
    index: dict[tuple[str, datetime], int]


def prepare(panel: pl.DataFrame, pollutant: str, model: RegisteredForecaster, first: datetime, horizon: int, factors: pl.DataFrame) -> Rows:
    """Model inputs for every site-hour of ``panel`` from ``first``; the interval offsets are the
    model's times the site's published factor for ``pollutant`` and ``horizon`` (1 without one)
    and the adjustment of the forecast's level."""
    rows = build_features(panel, pollutant, horizon).filter(pl.col("time") >= first)
    x, base = feature_matrix(rows, model.forecaster.feature_names), forecast_base(rows)
    pred = model.forecaster.point(x, base)
    lower, upper = model.forecaster.interval_offsets(rows, pred)
    keys = rows.select("site_id", pl.lit(pollutant).alias("pollutant"), pl.lit(horizon, pl.Int64).alias("hours_ahead")).with_columns(pl.Series("pred", pred))
    factor = factors_for(factors, keys)  # the site's factor, times the adjustment of the forecast's level
    return Rows(
        x=x,
        base=base,
        lower_offset=lower * factor,
        upper_offset=upper * factor,
        factor=factor,
        index={key: i for i, key in enumerate(zip(rows["site_id"].to_list(), rows["time"].to_list()))},
    )


@dataclass(frozen=True)
class State:
    models: dict[str, RegisteredForecaster]
    online: dict[str, Rows]
    # (pollutant, hours ahead) -> the champion (it serves every lead up to its max_hours_ahead)
    # and its rows for each site's origin + hours
    ahead: dict[tuple[str, int], tuple[RegisteredForecaster, Rows]]
    sites: frozenset[str]
    first_hour: datetime  # the oldest hour the online store answers
    origin: datetime  # the newest observed hour
    last_hour: datetime  # the newest hour the one-hour models forecast (origin + 1 h)
    earliest_hour: datetime  # the oldest hour that can be forecast (history or online store)
    data_until: dict[str, datetime]  # per site, the newest hour with any pollutant observed
    # per (site, pollutant), the newest observed hour: the origin its hours ahead count from
    origins: dict[tuple[str, str], datetime]
    online_version: str
    # the interval factors published by monitoring (core.intervals) and their version (None: none yet)
    factors: pl.DataFrame
    factors_version: str | None
    # the verified daily errors published by daqi_verification (core.daily_daqi: a wholly forecast
    # day's odds) and their version (None: none yet, and the odds come from the hourly intervals)
    daily_errors: pl.DataFrame | None
    daily_errors_version: str | None
    # site_id, time and the forecast pollutants for every stored hour up to the newest observation
    observations: pl.DataFrame

    def loaded(self) -> dict[str, RegisteredForecaster]:
        return {m.name: m for m in self.models.values()}


def _earliest_hour(history_start: datetime | None, online_first: datetime) -> datetime:
    """A forecast needs at least one stored hour before it."""
    return min(history_start + timedelta(hours=1), online_first) if history_start else online_first


class ServingState:
    """The current ``State`` and how it was loaded: ``refresh`` loads, ``status`` and ``model_info`` report,
    ``current`` hands the state to the code that answers."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = online_store(settings.online_store_target)
        self.factor_store = interval_factor_store(settings.online_store_target)
        self.daily_error_store = daily_error_store(settings.online_store_target)
        # production: the yearly files are copied from S3 at each refresh; the log is read there
        self.history = HistoryStore(settings.history_dir, shared_folder(settings, HISTORY))
        self.shared_log = shared_folder(settings, PREDICTIONS)
        self._state: State | None = None
        self._reason = "not loaded yet"
        self._problems: dict[str, str] = {}  # store -> why it could not be read at the last refresh
        self._reported: dict[str, str] = {}  # a part beside the stores (the prediction log) -> its fault now
        self._alerted_lost: frozenset[tuple[str, str]] = frozenset()  # the lost champions last alerted
        self._lock = threading.Lock()

    def _addresses(self) -> tuple[str, str]:
        return self.settings.mlflow_tracking_uri, self.settings.online_store_target

    def logged(self, start: datetime, end: datetime) -> pl.DataFrame:
        """The prediction log for hours in [start, end): this pod's files, or in production what
        every pod shipped to S3."""
        return read_prediction_log(self.settings.prediction_log_dir, start, end, self.shared_log)

    def _read(self, store: str, address: str, call):  # noqa: ANN001, ANN202 - any store call
        """``call()``; a failure is recorded against ``store`` (named by its address without
        secrets) and raised as ``StoreFault``."""
        try:
            result = call()
        except Exception as exc:  # any client error of any store: reported, never served as a 500
            detail = scrub(f"{type(exc).__name__}: {exc}", *self._addresses())
            self._problems[store] = f"{store.replace('_', ' ')} {redact_uri(address)} cannot be read: {detail}"
            raise StoreFault(self._problems[store]) from None
        self._problems.pop(store, None)
        return result

    # -- lifecycle -------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Load the champions and the online history if either changed. On any failure the last
        good state keeps serving and the reason is kept for the readiness answer."""
        with self._lock:
            try:
                return self._refresh()
            except StoreFault as exc:
                self._reason = f"serving the last good state: {exc}" if self._state else str(exc)
            except Exception as exc:  # keep serving the last good model whatever broke
                self._reason = scrub(f"refresh failed, serving the last good model: {type(exc).__name__}: {exc}", *self._addresses())
            log.warning(self._reason)
            return False

    def _refresh(self) -> bool:
        uri = self.settings.mlflow_tracking_uri
        shared = self.history.shared
        history_changed = self._read(SHARED_HISTORY, shared.uri if shared else str(self.history.folder), self.history.sync)
        # A reader never creates a registry: a missing store is a fault, not an empty registry.
        registry = self._read(REGISTRY, uri, lambda: ForecastRegistry(uri, read_only=True))
        current = self._state
        champions = self._read(REGISTRY, uri, lambda: registry.champions(self.settings.model_prefix))
        known = current.loaded() if current else {}

        def champion(pollutant: str) -> RegisteredForecaster | None:
            name = model_name(pollutant, self.settings.model_prefix)
            version = champions.get(name)
            if version is None:
                return None
            loaded = known.get(name)
            return loaded if loaded and loaded.version == version else registry.load(name, version)

        # A served model whose champion alias is gone (a wiped registry, a deleted version or alias)
        # keeps serving as the last good model, and readiness says so.
        served = current.models if current else {}
        lost = {p: served[p] for p in FORECAST_POLLUTANTS if p in served and model_name(p, self.settings.model_prefix) not in champions}
        self._report_lost(lost)
        models = {p: m for p in FORECAST_POLLUTANTS if (m := champion(p) or lost.get(p))}
        ahead_models = {(p, h): m for p, m in models.items() for h in range(2, min(m.forecaster.max_hours_ahead, MAX_HORIZON) + 1)}
        if not models:
            self._reason = "no champion model in the registry: run the training job"
            return False
        target = self.settings.online_store_target
        version = self._read(ONLINE_STORE, target, self.store.version)
        if version is None:
            self._reason = f"no online history in {redact_uri(target)}: materialize online_features"
            return False
        factors_version = self._read(ONLINE_STORE, target, self.factor_store.version)
        errors_version = self._read(ONLINE_STORE, target, self.daily_error_store.version)
        serving = {m.name: m.version for m in models.values()}
        unchanged = (
            current is not None
            and {n: m.version for n, m in known.items()} == serving
            and (current.online_version, current.factors_version, current.daily_errors_version) == (version, factors_version, errors_version)
        )
        if unchanged and not history_changed:
            self._reason = ""
            return False
        panel = self._read(ONLINE_STORE, target, self.store.read)
        factors = self._read(ONLINE_STORE, target, self.factor_store.read) if factors_version else empty_factors()
        daily_errors = self._read(ONLINE_STORE, target, self.daily_error_store.read) if errors_version else None
        first = panel["time"].min() + timedelta(hours=MAX_LOOKBACK_HOURS)
        observed = panel.filter(pl.any_horizontal(pl.col(p).is_not_null() for p in FORECAST_POLLUTANTS))
        data_until = dict(observed.group_by("site_id").agg(pl.col("time").max()).iter_rows())
        origin = max(data_until.values())
        last_hour = origin + timedelta(hours=1)

        origins = {
            (site, p): newest
            for p in FORECAST_POLLUTANTS
            for site, newest in panel.filter(pl.col(p).is_not_null()).group_by("site_id").agg(pl.col("time").max()).iter_rows()
        }

        def rows_ahead(pollutant: str, horizon: int, model: RegisteredForecaster) -> Rows:
            """Rows of every site at its own origin for ``pollutant`` plus ``horizon`` hours."""
            own = [t for (_, p), t in origins.items() if p == pollutant] or [origin]
            first_hour, last = min(own) + timedelta(hours=horizon), max(own) + timedelta(hours=horizon)
            window = panel.filter((pl.col("time") >= first_hour - timedelta(hours=MAX_LOOKBACK_HOURS)) & (pl.col("time") <= last))
            return prepare(window, pollutant, model, first_hour, horizon, factors)

        self._state = State(
            models=models,
            online={p: prepare(panel.filter(pl.col("time") <= last_hour), p, m, first, 1, factors) for p, m in models.items()},
            ahead={(p, h): (m, rows_ahead(p, h, m)) for (p, h), m in ahead_models.items()},
            sites=frozenset(panel["site_id"].unique().to_list()),
            first_hour=first,
            origin=origin,
            last_hour=last_hour,
            earliest_hour=_earliest_hour(self.history.start(), first),
            data_until=data_until,
            origins=origins,
            online_version=version,
            factors=factors,
            factors_version=factors_version,
            daily_errors=daily_errors,
            daily_errors_version=errors_version,
            observations=panel.filter(pl.col("time") <= origin).select("site_id", "time", *FORECAST_POLLUTANTS).sort("site_id", "time"),
        )
        self._reason = ""
        log.info("serving %s", serving)
        return True

    def _report_lost(self, lost: dict[str, RegisteredForecaster]) -> None:
        """Record served champions that the registry no longer holds as a problem, and alert once
        each time that set changes (off when no webhook is configured)."""
        keys = frozenset((m.name, m.version) for m in lost.values())
        if not lost:
            self._problems.pop(LOST_CHAMPIONS, None)
        else:
            named = ", ".join(f"{m.name} version {m.version}" for m in lost.values())
            self._problems[LOST_CHAMPIONS] = (
                f"the registry {redact_uri(self.settings.mlflow_tracking_uri)} no longer names a champion for {named}, which this service "
                "still serves: the registry was wiped or replaced, or the version or its alias was deleted; register and promote a model again"
            )
        notifier = notifier_from_settings(self.settings.webhook_url, self.settings.webhook_token)
        if keys and keys != self._alerted_lost and notifier is not None:
            delivery = notifier.send("champion_missing_from_registry", self._problems[LOST_CHAMPIONS], models={m.name: m.version for m in lost.values()})
            if not delivery.delivered:  # asked again at the next refresh
                log.warning("alert champion_missing_from_registry not delivered to %s: %s", delivery.destination, delivery.error)
                return
        self._alerted_lost = keys

    def report(self, part: str, problem: str | None) -> None:
        """A fault of a part beside the stores (the prediction log): named in readiness until
        the part reports None."""
        if problem is None:
            self._reported.pop(part, None)
        else:
            self._reported[part] = problem

    def problems(self) -> dict:
        """Stores that could not be read: the registry and the online store at the last refresh,
        and each unreadable yearly history file; and the faults parts beside them reported."""
        problems: dict = {**self._problems, **self._reported}
        if history := self.history.problems():
            problems["history"] = history
        return problems

    def status(self) -> dict:
        """Readiness: ``unavailable`` with the reason until a state is loaded; then ``ok``, or
        ``degraded`` while a store cannot be read (the last good state serves what it can) or
        while the newest observation is more than ``STALE_AFTER_HOURS`` old (``stale_data``,
        with its age: forecasts then start from that hour, not from now)."""
        state = self._state
        problems = self.problems()
        if state is None:
            return {"status": "unavailable", "model_loaded": False, "reason": self._reason, "problems": problems}
        newest = max(state.data_until.values()) if state.data_until else None
        age = (datetime.now(timezone.utc) - newest).total_seconds() / 3600 if newest else None
        if age is not None and age > STALE_AFTER_HOURS:
            problems["stale_data"] = f"the newest observation ({newest:%Y-%m-%dT%H:%M}Z) is {age:,.0f} hours old (stale after {STALE_AFTER_HOURS})"
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "model_loaded": True,
            "models": {p: m.version for p, m in state.models.items()},
            "newest_observation": newest.isoformat() if newest else None,
            "feature_age_hours": round(age, 1) if age is not None else None,
            "forecast_hours": [state.earliest_hour.isoformat(), state.last_hour.isoformat()],
            "online_hours": [state.first_hour.isoformat(), state.last_hour.isoformat()],
            "hours_ahead": {p: [1, *sorted(h for q, h in state.ahead if q == p)] for p in state.models},
            "data_until": {site: {p: t.isoformat() for (s, p), t in sorted(state.origins.items()) if s == site} for site in sorted(state.sites)},
            "warning": self._reason or None,
        }

    def model_info(self) -> dict:
        """Per pollutant, the champion and the hours ahead it serves."""
        state = self.current()
        served = state.models
        return {
            key: {
                "model_name": m.name,
                "version": m.version,
                "train_start": m.metadata.get("train_start"),
                "holdout_start": m.metadata.get("holdout_start"),
                "holdout_end": m.metadata.get("holdout_end"),
                "holdout_metrics": m.metadata.get("holdout_metrics"),
                "interval": m.forecaster.coverage,
                "max_hours_ahead": m.forecaster.max_hours_ahead,
            }
            for key, m in served.items()
        }

    def current(self) -> State:
        if self._state is None:
            raise NotReady(f"no model loaded: {self._reason}")
        return self._state
