"""The monitoring loop through an injected shift, hour by hour, through Dagster.

The demo network doubles NO2 across the network from ``ROUTEAQ_DRIFT_SHIFT_AT`` (default
2025-08-04T00:00Z, a Monday). After a backfill and a first training (as ``make demo``), each
round runs, on the Dagster instance of ``DAGSTER_HOME``: ``ingest_job`` for the round's hours
(raw_aurn, raw_weather, silver_features), ``publish_job`` (the service's history),
``monitoring_job`` (forecast_performance and the three drift reports), then ticks the
``retraining_policy`` and ``monitoring_alerts`` sensors and launches what they request
(``train_job`` for the pollutant, ending in the promotion gate). It prints when drift fired, the
skill, each retrain request with its reason, and the gate's decision with its MLflow figures.

Settings: ``ROUTEAQ_DRIFT_SHIFT`` (a ``Shift`` spec, default NO2 x2 from the shift hour),
``ROUTEAQ_DRIFT_HOURS_BEFORE`` (12) and ``ROUTEAQ_DRIFT_HOURS_AFTER`` (36): the hours looped.
"""

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dagster as dg

from routeaq_assets.core.schema import FORECAST_POLLUTANTS

DEFAULT_SHIFT_AT = "2025-08-04T00:00:00+00:00"
SENSOR_TICKS = 3  # per round: the policy must not ask twice however often it is evaluated
# Runs log to the instance (and the UI) as usual; the console shows warnings only, so the
# loop's own lines stay readable.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The held-out week of a small demo holds few hours, so the gate's coverage band is widened to
# +/- 0.10 (as in the tests); every other rule of the gate is as in production.
DEMO_TRAINING = {"ops": {f"{p}_candidate": {"config": {"coverage_tolerance": 0.1}} for p in FORECAST_POLLUTANTS}}


@dataclass
class LoopReport:
    drift_first: dict[str, str] = field(default_factory=dict)  # pollutant -> first hour that drifted
    requests: list[dg.RunRequest] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)  # the champion assets' metadata after each retrain
    skill: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


def partition_key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


def range_tags(first: datetime, last: datetime) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": partition_key(first), "dagster/asset_partition_range_end": partition_key(last)}


def _value(metadata, key):
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def run_loop(defs: dg.Definitions, instance: dg.DagsterInstance, first: datetime, hours: int, round_hours: int = 1,
             training_run_config: dict | None = None, say=print) -> LoopReport:
    """Rounds of ``round_hours`` from ``first`` for ``hours`` hours: ingest, publish, score and
    drift, then sensor ticks and the runs they request."""
    report = LoopReport()
    policy = defs.get_sensor_def("retraining_policy")
    alerts = defs.get_sensor_def("monitoring_alerts")
    cursors: dict[str, str | None] = {"retraining_policy": None, "monitoring_alerts": None}
    for start in range(0, hours, round_hours):
        a = first + timedelta(hours=start)
        b = a + timedelta(hours=min(round_hours, hours - start) - 1)
        began = time.monotonic()
        for job in ("ingest_job", "monitoring_job"):
            defs.resolve_job_def(job).execute_in_process(instance=instance, tags=range_tags(a, b), run_config=QUIET)
            if job == "ingest_job":
                defs.resolve_job_def("publish_job").execute_in_process(instance=instance, run_config=QUIET)
        result = instance.fetch_materializations(dg.AssetKey("forecast_performance"), limit=1).records[0].asset_materialization.metadata
        figures = []
        for p in FORECAST_POLLUTANTS:
            drift = instance.fetch_materializations(dg.AssetKey(f"{p}_drift_report"), limit=1).records[0].asset_materialization.metadata
            share, fired = _value(drift, "drifted_share"), _value(drift, "hours_fired")
            if fired and p not in report.drift_first:
                report.drift_first[p] = b.isoformat()
            skill = _value(result, f"{p}_skill")
            if skill is not None:
                report.skill.setdefault(p, []).append((b.isoformat(), skill))
            figures.append(f"{p} drift {share:.2f}{' FIRED' if fired else ''} skill {'-' if skill is None else f'{skill:+.1%}'}")
        say(f"{a:%a %d %b %H:00}..{b:%H:00}  " + " | ".join(figures) + f"  ({time.monotonic() - began:.0f}s)")
        for _ in range(SENSOR_TICKS):
            for name, sensor in (("retraining_policy", policy), ("monitoring_alerts", alerts)):
                tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursors[name], resources=defs.resources))
                cursors[name] = tick.cursor
                for request in tick.run_requests:
                    report.requests.append(request)
                    say(f"    retrain requested ({request.run_key}): {request.tags['routeaq/reason']}")
                    report.decisions.append(_retrain(defs, instance, request, training_run_config, say))
    return report


def _retrain(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest, run_config: dict | None, say) -> dict:
    """Launch the requested training and read the gate's decision back."""
    pollutant = request.tags["routeaq/pollutant"]
    tags = {**request.tags, "dagster/run_key": request.run_key, "dagster/sensor_name": "retraining_policy"}
    selected = {k.to_user_string() for k in request.asset_selection}
    config = {**QUIET, "ops": {op: c for op, c in (run_config or request.run_config or {}).get("ops", {}).items() if op in selected}}
    result = defs.resolve_job_def("train_job").execute_in_process(
        instance=instance, asset_selection=list(request.asset_selection), tags=tags, run_config=config, raise_on_error=False
    )
    checks = [e for e in result.get_asset_check_evaluations()]
    for check in checks:
        say(f"    gate {check.check_name}: {'passed' if check.passed else 'FAILED'}: {check.description}")
    champion = [m for m in result.asset_materializations_for_node(f"{pollutant}_champion")]
    candidate = result.asset_materializations_for_node(f"{pollutant}_candidate")
    decision = {"pollutant": pollutant, "gate_passed": all(c.passed for c in checks)}
    if not decision["gate_passed"]:  # the champion asset never ran: the gate's words are the decision's reason
        decision["reason"] = "; ".join(f"{c.check_name}: {c.description}" for c in checks if not c.passed)
    if candidate:
        decision.update(mlflow_run_id=_value(candidate[0].metadata, "mlflow_run_id"), candidate_version=_value(candidate[0].metadata, "model_version"))
    if champion:
        metadata = champion[0].metadata
        decision.update({k: _value(metadata, k) for k in ("promoted", "reason", "champion_version", "candidate_rmse_1h", "champion_rmse_before_1h", "persistence_rmse_1h")})
        say(f"    promotion: {'PROMOTED' if decision['promoted'] else 'kept the champion'}: {decision['reason']} (MLflow run {decision.get('mlflow_run_id')})")
    else:
        say(f"    promotion: not reached: the blocking gate stopped candidate v{decision.get('candidate_version')} (MLflow run {decision.get('mlflow_run_id')})")
    return decision


def main() -> None:
    from routeaq_assets.demo import prepare_instance, record_partitions_start, step

    shift_at = datetime.fromisoformat(os.environ.get("ROUTEAQ_DRIFT_SHIFT_AT", DEFAULT_SHIFT_AT))
    os.environ.setdefault("ROUTEAQ_DEMO_SHIFT", f"no2:scale:2@{shift_at.isoformat()}")
    before, after = int(os.environ.get("ROUTEAQ_DRIFT_HOURS_BEFORE", "12")), int(os.environ.get("ROUTEAQ_DRIFT_HOURS_AFTER", "36"))
    home = prepare_instance()
    first = shift_at - timedelta(hours=before)
    start = first - timedelta(days=int(os.environ.get("ROUTEAQ_DEMO_DAYS", "60")))
    record_partitions_start(home, start)
    from routeaq_assets.definitions import defs

    instance = dg.DagsterInstance.get()
    print(f"RouteAQ drift demo: injected shift {os.environ['ROUTEAQ_DEMO_SHIFT']}; data under {home}")
    step(f"1/3 site registry and a backfill of {start:%Y-%m-%d} .. {first:%Y-%m-%d %H:00}")
    dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, instance=instance, run_config=QUIET)
    defs.resolve_job_def("ingest_job").execute_in_process(instance=instance, tags=range_tags(start, first - timedelta(hours=1)), run_config=QUIET)
    step("2/3 first champions (train_job: candidates, gate, champions, online features)")
    first_training = defs.resolve_job_def("train_job").execute_in_process(instance=instance, run_config={**QUIET, **DEMO_TRAINING}, raise_on_error=False)
    for check in first_training.get_asset_check_evaluations():
        print(f"    {check.asset_key.to_user_string()} gate: {'passed' if check.passed else 'FAILED'}: {check.description}")
    if not first_training.success:
        raise SystemExit("the first training did not promote every champion: use more days or sites (ROUTEAQ_DEMO_DAYS, ROUTEAQ_SITES)")
    step(f"3/3 the loop, hour by hour, from {first:%a %d %b %H:00} through the shift at {shift_at:%a %d %b %H:00}")
    report = run_loop(defs, instance, first, before + after, training_run_config=DEMO_TRAINING)
    print("\nWhat happened:")
    for p, hour in sorted(report.drift_first.items()):
        print(f"  {p}: drift first fired at {hour} ({(datetime.fromisoformat(hour) - shift_at) / timedelta(hours=1):+.0f} h from the shift)")
    for p, series in sorted(report.skill.items()):
        ahead = [s for h, s in series if datetime.fromisoformat(h) < shift_at]
        behind = [s for h, s in series if datetime.fromisoformat(h) >= shift_at]
        if ahead and behind:
            print(f"  {p}: rolling skill against persistence {ahead[-1]:+.1%} before the shift, lowest after {min(behind):+.1%}")
    print(f"  retrain requests: {len(report.requests)} ({', '.join(r.run_key for r in report.requests) or 'none'})")
    for d in report.decisions:
        print(f"  gate for {d['pollutant']}: {json.dumps(d, default=str)}")
    print("\nSee it in the UI: make dev, then the monitoring group, the sensors' tick history, and MLflow's routeaq-forecasts runs.")


if __name__ == "__main__":
    main()
