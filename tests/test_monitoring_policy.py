"""The retraining policy and its sensor: exactly one request per triggering condition, however
often the sensor is evaluated, a cooldown, and a reason on every tick."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from routeaq_assets.core.retraining import PollutantState, RetrainPolicy, decide
from routeaq_assets.defs.monitoring.assets import PERFORMANCE, drift_folder, hour_stamp
from routeaq_assets.defs.monitoring.sensors import build_retraining_sensor
from routeaq_assets.lake import LocalLake
from routeaq_assets.model_store import ModelStore

UTC = timezone.utc
T0 = datetime(2025, 8, 1, tzinfo=UTC)
POLICY = RetrainPolicy(drift_hours=3, min_skill=0.0, min_scored_hours=24, max_age_hours=24 * 30, cooldown_hours=24)


def state(**changes) -> PollutantState:
    base = dict(pollutant="no2", now=T0, drift_by_hour={}, skill=0.2, scored_hours=100, skill_low_since=None,
                champion_version="1", champion_data_end=T0 - timedelta(days=2), last_request=None)
    return PollutantState(**{**base, **changes})


def test_each_rule_names_its_condition_and_figures():
    drifting = {T0 - timedelta(hours=k): True for k in range(3)}
    d = decide(POLICY, state(drift_by_hour=drifting))
    assert (d.request, d.rule, d.key) == (True, "drift", "no2-drift-20250731T22")
    assert "drift alarm 3 consecutive h (rule: >= 3 h)" in d.reason
    assert not decide(POLICY, state(drift_by_hour={T0: True, T0 - timedelta(hours=1): True})).request
    d = decide(POLICY, state(skill=-0.05, skill_low_since=T0 - timedelta(hours=5)))
    assert (d.request, d.rule, d.key) == (True, "skill", "no2-skill-20250731T19") and "rolling skill -0.050 over 100 forecasts" in d.reason
    assert not decide(POLICY, state(skill=-0.05, scored_hours=10, skill_low_since=T0)).request  # too few forecasts to judge
    d = decide(POLICY, state(champion_data_end=T0 - timedelta(days=31)))
    assert (d.request, d.rule, d.key) == (True, "age", "no2-age-v1") and "data 744 h old (rule: > 720 h)" in d.reason
    d = decide(POLICY, state(drift_by_hour=drifting, last_request=T0 - timedelta(hours=5)))
    assert (d.request, d.rule) == (False, "cooldown") and "5 of 24 h" in d.reason
    d = decide(POLICY, state(drift_by_hour=drifting, requested=frozenset({"no2-drift-20250731T22"})))
    assert not d.request and "already requested" in d.reason
    assert decide(POLICY, state()).rule == "none"


def test_a_missing_hour_ends_a_drift_episode():
    broken = {T0: True, T0 - timedelta(hours=1): True, T0 - timedelta(hours=3): True}
    assert not decide(POLICY, state(drift_by_hour=broken)).request


@pytest.fixture
def lake(tmp_path) -> LocalLake:
    return LocalLake(root=str(tmp_path / "lake"))


def write_hour(lake: LocalLake, hour: datetime, drifted: dict[str, bool], skill: dict[str, float] | None = None) -> None:
    """The monitoring records of one hour, in the shape the drift and performance assets write."""
    for pollutant in ("pm25", "no2", "o3"):
        record = {"hour": hour.isoformat(), "pollutant": pollutant, "drifted": drifted.get(pollutant, False), "drifted_share": 0.5 if drifted.get(pollutant) else 0.0}
        lake.write_bytes(f"{drift_folder(pollutant)}/{hour_stamp(hour)}.json", json.dumps(record).encode())
    scores = [{"pollutant": p, "hours_ahead": 1, "hours": 200, "skill": (skill or {}).get(p, 0.2)} for p in ("pm25", "no2", "o3")]
    lake.write_bytes(f"{PERFORMANCE}/{hour_stamp(hour)}.json", json.dumps({"hour": hour.isoformat(), "scores": scores}).encode())


def test_the_sensor_requests_once_per_condition_however_often_it_ticks(lake, tmp_path):
    sensor = build_retraining_sensor(POLICY)
    resources = {"lake": lake, "model_store": ModelStore(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")}
    requests, reasons = [], []
    with dg.instance_for_test() as instance:
        cursor = None

        def tick(times: int = 3) -> None:
            nonlocal cursor
            for _ in range(times):
                result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))
                cursor = result.cursor
                requests.extend(result.run_requests)
                reasons.append(result.skip_message or "")

        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources))
        assert first.skip_message.startswith("no drift report yet")
        hour = T0
        for k in range(6):  # quiet hours
            write_hour(lake, hour + timedelta(hours=k), {})
            tick()
        assert requests == [] and "no2: no rule met: drift alarm 0 consecutive h" in reasons[-1]
        for k in range(6, 13):  # NO2 drifts from hour 6 on, for seven hours
            write_hour(lake, hour + timedelta(hours=k), {"no2": True})
            tick()
        assert [r.run_key for r in requests] == ["no2-drift-20250801T06"]
        assert requests[0].tags["routeaq/trigger"] == "drift"
        assert {k.to_user_string() for k in requests[0].asset_selection} == {"no2_candidate", "no2_champion", "online_features"}
        assert "already requested for this condition (no2-drift-20250801T06)" in reasons[-1]
        write_hour(lake, hour + timedelta(hours=13), {})
        for k in range(14, 18):  # a new episode inside the cooldown: no request, and the tick says why
            write_hour(lake, hour + timedelta(hours=k), {"no2": True})
            tick()
        assert len(requests) == 1 and "no2: drift rule met but in cooldown (9 of 24 h" in reasons[-1]
        for k in range(18, 34):  # quiet again
            write_hour(lake, hour + timedelta(hours=k), {})
        for k in range(34, 38):  # after the cooldown a new episode asks once more; PM2.5 loses to persistence
            write_hour(lake, hour + timedelta(hours=k), {"no2": True}, skill={"pm25": -0.1})
            tick(5)
    assert [r.run_key for r in requests] == ["no2-drift-20250801T06", "pm25-skill-20250802T10", "no2-drift-20250802T10"]
