"""Monitoring: the hourly drift report and the sensor that asks for retraining."""

import json

import dagster as dg
import pytest

from conftest import make_definitions
from routeaq_assets.defs.jobs import retrain_on_drift
from routeaq_assets.defs.monitoring import DRIFT_SHARE_THRESHOLD


def test_drift_report_compares_the_last_day_with_the_champions_training_rows(trained_home, monkeypatch):
    monkeypatch.setenv("ROUTEAQ_HOME", str(trained_home))
    defs = make_definitions(trained_home)
    result = dg.materialize([defs.get_assets_def("drift_report")], resources=defs.resources, partition_key="2025-08-01-11:00")
    metadata = result.asset_materializations_for_node("drift_report")[0].metadata
    assert 0.0 <= metadata["drifted_share"].value <= 1.0
    assert metadata["current_rows"].value == 24 * 3  # 24 hours x 3 sites
    assert metadata["reference_rows"].value > 1000
    report = trained_home / "lake" / "reports" / "drift" / "pm25" / "2025-08-01T11.json"
    assert json.loads(report.read_text())["metrics"]
    assert (trained_home / "lake" / "reports" / "drift" / "pm25" / "latest.html").stat().st_size > 100_000


@pytest.mark.parametrize("share, requested", [(DRIFT_SHARE_THRESHOLD + 0.1, True), (DRIFT_SHARE_THRESHOLD - 0.1, False)])
def test_drift_above_the_threshold_requests_retraining_once(share, requested):
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="drift_report", partition="2025-08-01-11:00", metadata={"drifted_share": share})
        )
        first = retrain_on_drift.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert [r.run_key for r in first.run_requests] == (["drift-2025-08-01-11:00"] if requested else [])
        again = retrain_on_drift.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert again.run_requests == []  # the same report never asks twice
