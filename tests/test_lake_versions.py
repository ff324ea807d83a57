"""Table versions on the Delta lake (local folder-backed tables, as on S3): a training run records
the versions it read in MLflow, and a backtest re-run at those versions after the table changed
gives the numbers it gave before."""

from datetime import timedelta

import dagster as dg
import polars as pl
import pytest
from mlflow import MlflowClient

from conftest import SITES_CONFIG, WINDOW_END, make_definitions, partition_key
from routeaq_assets.core.environment import load_settings
from routeaq_assets.storage import DeltaWarehouse

pytestmark = pytest.mark.slow  # ingests and trains

START = WINDOW_END - timedelta(days=12)
TRAIN = {"ops": {"pm25_candidate": {"config": {"train_days": 8, "holdout_days": 2, "num_boost_round": 30}}}}
BACKTEST = {"pollutants": ["pm25"], "folds": 2, "test_days": 2, "train_days": 6, "num_boost_round": 30, "direct": True}


def backtest(defs: dg.Definitions, instance: dg.DagsterInstance, **config) -> dict:
    result = dg.materialize(
        [defs.get_assets_def("backtest")], resources=defs.resources, instance=instance, run_config={"ops": {"backtest": {"config": {**BACKTEST, **config}}}}
    )
    metadata = result.asset_materializations_for_node("backtest")[0].metadata
    return {k: v.value for k, v in metadata.items() if k.startswith("pm25_") or k.endswith("_version")}


def test_a_backtest_re_runs_on_the_versions_a_training_run_recorded(home):
    warehouse = DeltaWarehouse(location=str(home / "tables"))
    defs = make_definitions(home, warehouse=warehouse)
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, run_config=SITES_CONFIG, instance=instance).success
    tags = {"dagster/asset_partition_range_start": partition_key(START), "dagster/asset_partition_range_end": partition_key(WINDOW_END - timedelta(hours=1))}
    assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance, tags=tags).success

    trained = dg.materialize([defs.get_assets_def("pm25_candidate")], resources=defs.resources, run_config=TRAIN, instance=instance)
    run_id = trained.asset_materializations_for_node("pm25_candidate")[0].metadata["mlflow_run_id"].value
    params = MlflowClient(load_settings().mlflow_tracking_uri).get_run(run_id).data.params
    recorded = {t: int(params[f"{t}_version"]) for t in ("silver_features", "observations", "weather", "sites")}
    assert recorded["silver_features"] == warehouse.table_version("silver_features")

    before = backtest(defs, instance)
    assert before["silver_features_version"] == recorded["silver_features"]  # the current tables are what training read

    # The features change: a day of targets doubled, one commit.
    day = (WINDOW_END - timedelta(days=3), WINDOW_END - timedelta(days=2))
    rows = warehouse.query("SELECT * FROM silver_features WHERE time >= ? AND time < ?", list(day))
    warehouse.replace_window("silver_features", rows.with_columns(pl.col("target") * 2), *day)
    assert warehouse.table_version("silver_features") == recorded["silver_features"] + 1

    again = backtest(defs, instance, table_versions=recorded)
    assert again == before
    now = backtest(defs, instance)
    assert now["silver_features_version"] == recorded["silver_features"] + 1
    assert now["pm25_model_rmse"] != before["pm25_model_rmse"]


def test_the_embedded_warehouse_refuses_a_version_it_does_not_keep(home):
    defs = make_definitions(home)
    result = dg.materialize(
        [defs.get_assets_def("backtest")], resources=defs.resources, raise_on_error=False,
        run_config={"ops": {"backtest": {"config": {**BACKTEST, "table_versions": {"silver_features": 3}}}}},
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "keeps no table versions" in str(failure.message) + str(failure.cause and failure.cause.message)
