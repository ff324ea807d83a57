"""The drift demo's loop, short: NO2 triples across the network, drift fires, exactly one
retrain is requested per pollutant whose inputs drifted, and each ends in the promotion gate."""

import shutil
from datetime import datetime, timezone

import dagster as dg

from conftest import make_definitions
from routeaq_assets.demo_drift import run_loop

SHIFT_AT = datetime(2025, 8, 1, 12, tzinfo=timezone.utc)  # where the trained home's data ends: a Friday noon
# Retrains with few boosting rounds: the test counts requests and follows them to the gate.
RETRAIN_CONFIG = {"ops": {f"{p}_candidate": {"config": {"coverage_tolerance": 0.1, "num_boost_round": 60}} for p in ("pm25", "pm10", "no2", "o3")}}


def test_tripled_no2_fires_drift_and_requests_one_retrain_per_pollutant(trained_home, tmp_path, monkeypatch):
    home = tmp_path / "routeaq"
    shutil.copytree(trained_home, home, symlinks=True)
    monkeypatch.setenv("ROUTEAQ_DEMO_SHIFT", f"no2:scale:3@{SHIFT_AT.isoformat()}")
    defs = make_definitions(home)
    with dg.instance_for_test() as instance:
        report = run_loop(defs, instance, SHIFT_AT, hours=12, round_hours=6, training_run_config=RETRAIN_CONFIG, say=print)
    assert "no2" in report.drift_first
    # Every model's inputs include NO2, so other pollutants can drift too; whichever drift for the
    # policy's three hours get one request each, however many hours the drift lasts and however
    # often the sensor ticks (three ticks a round here), and a drift that does not last gets none.
    requested = sorted(r.tags["routeaq/pollutant"] for r in report.requests)
    assert "no2" in requested and len(requested) == len(set(requested))
    assert set(requested) <= set(report.drift_first)
    assert len({r.run_key for r in report.requests}) == len(requested) and {r.tags["routeaq/trigger"] for r in report.requests} == {"drift"}
    # Each retrain ended in the gate and the champion's decision, recorded in MLflow.
    assert len(report.decisions) == len(requested) and all(d["mlflow_run_id"] and d["reason"] for d in report.decisions)
