"""The retraining sensor: gathers each pollutant's figures from the monitoring tables in the
warehouse (``{p}_drift_hours``, ``rolling_scores``: a few small queries a tick) and the registry, asks ``core.retraining.decide`` (the one policy), and requests the
pollutant's training (candidate, blocking gate, champion, online features) once per triggering
condition. Every tick says why it did or did not ask, with the figures."""


import json
from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from routeaq_assets.adapters.notify import notifier_from_settings
from routeaq_assets.adapters.pushgateway import push
from routeaq_assets.core.environment import load_settings, model_name
from routeaq_assets.core.prometheus import retrain_request_figures
from routeaq_assets.core.retraining import Decision, PollutantState, RetrainPolicy, decide
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.defs.jobs import train_job
from routeaq_assets.adapters.locks import LockTimeout
from routeaq_assets.defs.monitoring.assets import ROLLING_SCORES, drift_hours_table
from routeaq_assets.model_store import ModelStore
from routeaq_assets.warehouse import WarehouseResource

REMEMBERED_KEYS = 200  # condition keys kept in the cursor (run keys dedupe beyond that too)


SKILL_LOOKBACK = timedelta(days=30)  # how far back a run of low skill is traced
# The sensor waits at most this long for the embedded warehouse's file lock (a backfill may hold
# it for minutes); it then skips the tick, well inside Dagster's 60 s limit for an evaluation.
READ_WAIT_S = 20.0


def recent_alarms(warehouse: WarehouseResource, stored: set[str], lookback_hours: int) -> pl.DataFrame:
    """Every pollutant's drift alarms (``pollutant, time, drifted``) over the ``lookback_hours``
    up to the newest hour any drift report monitored, in one query; empty before the first.
    ``stored``: the warehouse's tables."""
    tables = {p: drift_hours_table(p) for p in FORECAST_POLLUTANTS if drift_hours_table(p) in stored}
    if not tables:
        return pl.DataFrame(schema={"pollutant": pl.String, "time": pl.Datetime("us", "UTC"), "drifted": pl.Boolean})
    alarms = " UNION ALL ".join(f"SELECT '{p}' AS pollutant, time, drifted FROM {t}" for p, t in tables.items())
    return warehouse.query(
        f"WITH alarms AS ({alarms}) SELECT * FROM alarms WHERE time > (SELECT max(time) FROM alarms) - INTERVAL {int(lookback_hours)} HOUR",
        wait_s=READ_WAIT_S,
    )


def one_hour_skill(warehouse: WarehouseResource, stored: set[str], now: datetime) -> pl.DataFrame:
    """The rolling skill of the one-hour forecasts at each hour of the lookback (``time,
    pollutant, hours, skill``), as ``forecast_performance`` stored it."""
    if ROLLING_SCORES not in stored:
        return pl.DataFrame(schema={"time": pl.Datetime("us", "UTC"), "pollutant": pl.String, "hours": pl.Int64, "skill": pl.Float64})
    return warehouse.query(
        f"SELECT time, pollutant, hours, skill FROM {ROLLING_SCORES} WHERE hours_ahead = 1 AND time > ? AND time <= ?",
        [now - SKILL_LOOKBACK, now], wait_s=READ_WAIT_S,
    )


def pollutant_state(
    model_store: ModelStore, policy: RetrainPolicy, pollutant: str, now: datetime, alarms: pl.DataFrame, skills: pl.DataFrame, cursor: dict
) -> PollutantState:
    drift_by_hour = {t: bool(d) for t, d in alarms.filter(pl.col("pollutant") == pollutant).select("time", "drifted").iter_rows()}
    by_hour = {t: (s, n) for t, s, n in skills.filter(pl.col("pollutant") == pollutant).select("time", "skill", "hours").iter_rows()}
    skill, scored = by_hour.get(now, (None, 0))
    low_since = None
    if skill is not None and skill < policy.min_skill:
        hour = now
        while (s := by_hour.get(hour, (None, 0))[0]) is not None and s < policy.min_skill:
            low_since, hour = hour, hour - timedelta(hours=1)
    # No registered model or alias yet: the age rule has nothing to judge. The age counts from
    # the newest hour trained on (the hour before the exclusive end).
    version, trained_until = model_store.registry().champion_trained_until(model_name(pollutant, model_store.prefix))
    data_end = trained_until - timedelta(hours=1) if trained_until else None
    last = cursor.get("last_request", {}).get(pollutant)
    return PollutantState(
        pollutant=pollutant,
        now=now,
        drift_by_hour=drift_by_hour,
        skill=skill,
        scored_hours=scored or 0,
        skill_low_since=low_since,
        champion_version=version,
        champion_data_end=data_end,
        last_request=datetime.fromisoformat(last) if last else None,
        requested=frozenset(cursor.get("requested", [])),
    )


def training_selection(pollutant: str) -> list[dg.AssetKey]:
    return [dg.AssetKey(f"{pollutant}_candidate"), dg.AssetKey(f"{pollutant}_champion"), dg.AssetKey("online_features")]


def build_retraining_sensor(policy: RetrainPolicy = RetrainPolicy(), run_config: dict | None = None) -> dg.SensorDefinition:
    @dg.sensor(name="retraining_policy", job=train_job, minimum_interval_seconds=60)
    def retraining_policy(context: dg.SensorEvaluationContext, warehouse: WarehouseResource, model_store: ModelStore):
        """Requests a pollutant's retraining when drift holds for N hours, its rolling skill
        against persistence falls below the floor, or its champion grows too old
        (``core.retraining``), once per condition and never within the cooldown."""
        cursor = json.loads(context.cursor) if context.cursor else {}
        try:
            stored = set(warehouse.tables(wait_s=READ_WAIT_S))  # one listing (on S3, one request)
            alarms = recent_alarms(warehouse, stored, max(policy.drift_hours, 1) + 24)
            if alarms.is_empty():
                return dg.SkipReason("no drift report yet: materialize the drift reports first")
            now = alarms["time"].max()
            skills = one_hour_skill(warehouse, stored, now)
            states = [pollutant_state(model_store, policy, p, now, alarms, skills, cursor) for p in FORECAST_POLLUTANTS]
        except LockTimeout as exc:
            return dg.SkipReason(f"the warehouse is being written ({exc}); the next tick reads it")
        decisions: list[Decision] = [decide(policy, state) for state in states]
        requests = []
        notifier = notifier_from_settings(load_settings().webhook_url, load_settings().webhook_token)
        for d in decisions:
            context.log.info(d.reason)
            if not d.request:
                continue
            requests.append(
                dg.RunRequest(
                    run_key=d.key,
                    asset_selection=training_selection(d.pollutant),
                    run_config=run_config or {},
                    tags={"routeaq/trigger": d.rule, "routeaq/pollutant": d.pollutant, "routeaq/condition": d.key, "routeaq/reason": d.reason[:900]},
                )
            )
            cursor.setdefault("last_request", {})[d.pollutant] = now.isoformat()
            counts = cursor.setdefault("request_counts", {})
            counts[f"{d.pollutant}/{d.rule}"] = counts.get(f"{d.pollutant}/{d.rule}", 0) + 1
            cursor["requested"] = [*cursor.get("requested", []), d.key][-REMEMBERED_KEYS:]
            if notifier is not None:
                delivery = notifier.send("retrain_requested", d.reason, pollutant=d.pollutant, rule=d.rule, condition=d.key, hour=now.isoformat())
                context.log.info(f"alert retrain_requested to {delivery.destination}: delivered={delivery.delivered} after {delivery.attempts} attempt(s)")
        push(load_settings().pushgateway_url, "retraining_policy", retrain_request_figures(cursor.get("request_counts", {})), context.log)
        said = f"at {now:%Y-%m-%d %H:00} UTC: " + " | ".join(d.reason for d in decisions)
        cursor["last_tick"] = said[:2000]
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor), skip_reason=None if requests else dg.SkipReason(said))

    return retraining_policy
