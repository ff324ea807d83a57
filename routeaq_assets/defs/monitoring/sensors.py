"""The retraining sensor: gathers each pollutant's figures from the monitoring records in the
lake and the registry, asks ``core.retraining.decide`` (the one policy), and requests the
pollutant's training (candidate, blocking gate, champion, online features) once per triggering
condition. Every tick says why it did or did not ask, with the figures."""


import json
from datetime import datetime, timedelta

import dagster as dg

from routeaq_assets.adapters.notify import notifier_from_settings
from routeaq_assets.adapters.pushgateway import push
from routeaq_assets.core.environment import load_settings, model_name
from routeaq_assets.core.prometheus import retrain_request_figures
from routeaq_assets.core.retraining import Decision, PollutantState, RetrainPolicy, decide
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.defs.jobs import train_job
from routeaq_assets.defs.monitoring.assets import PERFORMANCE, drift_folder, hour_stamp
from routeaq_assets.lake import Lake
from routeaq_assets.model_store import ModelStore

REMEMBERED_KEYS = 200  # condition keys kept in the cursor (run keys dedupe beyond that too)


def _record(lake: Lake, key: str) -> dict | None:
    data = lake.read_bytes(key)
    return json.loads(data) if data else None


def newest_monitored_hour(lake: Lake) -> datetime | None:
    stamps = [k.rsplit("/", 1)[-1][:13] for p in FORECAST_POLLUTANTS for k in lake.list_keys(drift_folder(p), ".json") if not k.rsplit("/", 1)[-1].startswith("thresholds")]
    return datetime.fromisoformat(max(stamps) + ":00+00:00") if stamps else None


def _skill(lake: Lake, pollutant: str, hour: datetime) -> tuple[float | None, int]:
    record = _record(lake, f"{PERFORMANCE}/{hour_stamp(hour)}.json")
    for row in (record or {}).get("scores", []):
        if row["pollutant"] == pollutant and row["hours_ahead"] == 1:
            return row["skill"], row["hours"]
    return None, 0


def pollutant_state(lake: Lake, model_store: ModelStore, policy: RetrainPolicy, pollutant: str, now: datetime, cursor: dict) -> PollutantState:
    lookback = max(policy.drift_hours, 1) + 24
    drift_by_hour = {}
    for k in range(lookback):
        hour = now - timedelta(hours=k)
        record = _record(lake, f"{drift_folder(pollutant)}/{hour_stamp(hour)}.json")
        if record is not None:
            drift_by_hour[hour] = bool(record["drifted"])
    skill, scored = _skill(lake, pollutant, now)
    low_since = None
    if skill is not None and skill < policy.min_skill:
        hour = now
        while (s := _skill(lake, pollutant, hour)[0]) is not None and s < policy.min_skill:
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
        scored_hours=scored,
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
    def retraining_policy(context: dg.SensorEvaluationContext, lake: Lake, model_store: ModelStore):
        """Requests a pollutant's retraining when drift holds for N hours, its rolling skill
        against persistence falls below the floor, or its champion grows too old
        (``core.retraining``), once per condition and never within the cooldown."""
        cursor = json.loads(context.cursor) if context.cursor else {}
        now = newest_monitored_hour(lake)
        if now is None:
            return dg.SkipReason("no drift report yet: materialize the drift reports first")
        decisions: list[Decision] = [decide(policy, pollutant_state(lake, model_store, policy, p, now, cursor)) for p in FORECAST_POLLUTANTS]
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
