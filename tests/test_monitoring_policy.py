"""The retraining policy and its sensor: exactly one request per triggering condition, however
often the sensor is evaluated, a cooldown, and a reason on every tick."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from routeaq_assets.core.retraining import PollutantState, RetrainPolicy, decide
from routeaq_assets.adapters.locks import file_lock
from routeaq_assets.defs.monitoring.assets import DRIFT_HOURS, ROLLING_SCORES, drift_hours_table
from routeaq_assets.defs.monitoring import sensors
from routeaq_assets.defs.monitoring.sensors import build_retraining_sensor
from routeaq_assets.model_store import ModelStore
from routeaq_assets.warehouse import Warehouse

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
def warehouse(tmp_path) -> Warehouse:
    return Warehouse(path=str(tmp_path / "warehouse.duckdb"))


def write_hour(warehouse: Warehouse, hour: datetime, drifted: dict[str, bool], skill: dict[str, float] | None = None) -> None:
    """The monitoring figures of one hour, in the tables the drift and performance assets write."""
    end = hour + timedelta(hours=1)
    for pollutant in ("pm25", "no2", "o3"):
        alarm = {"time": hour, "drifted": drifted.get(pollutant, False), "drifted_share": 0.5 if drifted.get(pollutant) else 0.0, "champion_version": "1"}
        warehouse.replace_window(drift_hours_table(pollutant), pl.DataFrame([alarm], schema=DRIFT_HOURS), hour, end)
    scores = [{"time": hour, "pollutant": p, "hours_ahead": 1, "hours": 200, "skill": (skill or {}).get(p, 0.2)} for p in ("pm25", "no2", "o3")]
    warehouse.replace_window(ROLLING_SCORES, pl.DataFrame(scores), hour, end)


def test_the_sensor_requests_once_per_condition_however_often_it_ticks(warehouse, tmp_path):
    sensor = build_retraining_sensor(POLICY)
    resources = {"warehouse": warehouse, "model_store": ModelStore(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")}
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
            write_hour(warehouse, hour + timedelta(hours=k), {})
            tick()
        assert requests == [] and "no2: no rule met: drift alarm 0 consecutive h" in reasons[-1]
        for k in range(6, 13):  # NO2 drifts from hour 6 on, for seven hours
            write_hour(warehouse, hour + timedelta(hours=k), {"no2": True})
            tick()
        assert [r.run_key for r in requests] == ["no2-drift-20250801T06"]
        assert requests[0].tags["routeaq/trigger"] == "drift"
        assert {k.to_user_string() for k in requests[0].asset_selection} == {"no2_candidate", "no2_champion", "online_features"}
        assert "already requested for this condition (no2-drift-20250801T06)" in reasons[-1]
        write_hour(warehouse, hour + timedelta(hours=13), {})
        for k in range(14, 18):  # a new episode inside the cooldown: no request, and the tick says why
            write_hour(warehouse, hour + timedelta(hours=k), {"no2": True})
            tick()
        assert len(requests) == 1 and "no2: drift rule met but in cooldown (9 of 24 h" in reasons[-1]
        for k in range(18, 34):  # quiet again
            write_hour(warehouse, hour + timedelta(hours=k), {})
        for k in range(34, 38):  # after the cooldown a new episode asks once more; PM2.5 loses to persistence
            write_hour(warehouse, hour + timedelta(hours=k), {"no2": True}, skill={"pm25": -0.1})
            tick(5)
    assert [r.run_key for r in requests] == ["no2-drift-20250801T06", "pm25-skill-20250802T10", "no2-drift-20250802T10"]


def test_a_tick_while_the_warehouse_is_written_skips_instead_of_timing_out(warehouse, tmp_path, monkeypatch):
    write_hour(warehouse, T0, {})
    monkeypatch.setattr(sensors, "READ_WAIT_S", 0.5)
    resources = {"warehouse": warehouse, "model_store": ModelStore(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")}
    database = Path(warehouse.path)
    with dg.instance_for_test() as instance:
        with file_lock(database.with_name(database.name + ".lock"), exclusive=True, timeout_s=1, what="a backfill's write"):
            busy = build_retraining_sensor(POLICY).evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources))
        assert not busy.run_requests and busy.skip_message.startswith("the warehouse is being written")
        quiet = build_retraining_sensor(POLICY).evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources))
        assert "no2: no rule met" in quiet.skip_message
