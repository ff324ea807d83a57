"""Rolling-origin backtests and the local-file source on real openair tables a user brings."""

import shutil
from datetime import datetime, timezone

import dagster as dg
import polars as pl
import pytest

from conftest import FIXTURES, copy_home, make_definitions
from routeaq_assets.core.backtest import format_table, metrics_table, rolling_origin_backtest
from routeaq_assets.core.models import TrainingSettings
from routeaq_assets.defs.evaluation import local_features
from routeaq_assets.sources.local_tables import folder_sites, local_weather
from routeaq_assets.sources.openair import read_rdata_table

UTC = timezone.utc


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """ABD as openair's own export (lower case, pm2.5, air_temp) in CSV; AH as Parquet with a code column."""
    folder = tmp_path_factory.mktemp("user")
    abd = read_rdata_table(FIXTURES / "ABD_2017.RData")
    abd = abd.rename({c: c.lower() for c in abd.columns if c not in ("date", "site", "code")}).rename({"noxasno2": "nox", "temp": "air_temp"})
    abd.drop("code").write_csv(folder / "ABD_2017.csv")
    read_rdata_table(FIXTURES / "AH_2017.RData").write_parquet(folder / "aston-hill.parquet")
    shutil.copy(FIXTURES / "AURN_metadata.RData", folder)  # openair's site metadata, as published beside the site-years: no site's data
    return folder


def test_local_folder_finds_sites_by_file_name_or_code_column_and_reads_met(user_folder):
    assert folder_sites(user_folder) == ["ABD", "AH"]
    weather = local_weather(user_folder, "ABD")
    first = weather.filter(pl.col("time") == datetime(2017, 1, 1, tzinfo=UTC)).row(0, named=True)
    assert (first["temperature_2m"], first["wind_speed_10m"], first["wind_direction_10m"]) == (2.8, 5.0, 325.4)
    assert first["boundary_layer_height"] is None


def test_backtest_folds_are_time_ordered_and_report_baselines(user_folder):
    features = local_features(user_folder, ["no2"])["no2"].filter(pl.col("time") < datetime(2017, 4, 1, tzinfo=UTC))
    predictions = rolling_origin_backtest(features, settings=TrainingSettings(num_boost_round=100), folds=3, test_days=10)
    assert sorted(predictions["fold"].unique().to_list()) == [0, 1, 2]
    bounds = predictions.group_by("fold").agg(pl.col("time").min().alias("first"), pl.col("time").max().alias("last")).sort("fold")
    assert all(a < b for a, b in zip(bounds["last"][:-1], bounds["first"][1:]))
    assert predictions["time"].min() >= datetime(2017, 3, 2, tzinfo=UTC)
    table = metrics_table(predictions)
    assert table.filter(pl.col("site_id") == "ALL").height == 1
    assert set(table["site_id"]) == {"ALL", "ABD", "AH"}
    row = table.filter(pl.col("site_id") == "ABD").row(0, named=True)
    assert row["skill_vs_persistence"] == pytest.approx(1 - row["model_rmse"] / row["persistence_rmse"], abs=1e-5)
    assert "persist" in format_table(table)


def test_backtest_refuses_a_window_without_history(user_folder):
    features = local_features(user_folder, ["no2"])["no2"].filter(pl.col("time") < datetime(2017, 1, 20, tzinfo=UTC))
    with pytest.raises(ValueError, match="need history before"):
        rolling_origin_backtest(features, folds=4, test_days=7)


def test_local_data_backtest_asset_reports_metrics_to_dagster_and_mlflow(home, user_folder):
    defs = make_definitions(home)
    config = {"ops": {"local_data_backtest": {"config": {"folder": str(user_folder), "pollutants": ["no2", "pm25"], "folds": 2, "test_days": 14}}}}
    result = dg.materialize([defs.get_assets_def("local_data_backtest")], resources=defs.resources, run_config=config)
    metadata = result.asset_materializations_for_node("local_data_backtest")[0].metadata
    assert metadata["no2_persistence_rmse"].value > 0 and "skill" in metadata["table"].value
    assert "pm25" in metadata["table"].value  # AH has no PM2.5; ABD does
    run = defs.resources["model_store"].registry().client.get_run(metadata["mlflow_run_id"].value)
    assert run.data.metrics["no2_model_rmse"] == pytest.approx(metadata["no2_model_rmse"].value)


def test_local_data_backtest_names_a_missing_folder(home, tmp_path):
    defs = make_definitions(home)
    config = {"ops": {"local_data_backtest": {"config": {"folder": str(tmp_path / "nowhere")}}}}
    result = dg.materialize([defs.get_assets_def("local_data_backtest")], resources=defs.resources, run_config=config, raise_on_error=False)
    assert not result.success
    message = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error.message
    assert "nowhere does not exist" in message


def test_a_six_hour_backtest_scores_persistence_from_six_hours_before(home, user_folder):
    """The served model learns every lead at once; a direct model learns one. Both are scored on
    the six-hour rows alone, against the value six hours before."""
    features = local_features(user_folder, ["no2"], leads=(1, 6, 24))["no2"].filter(pl.col("time") < datetime(2017, 4, 1, tzinfo=UTC))
    settings = TrainingSettings(num_boost_round=50)
    predictions = rolling_origin_backtest(features, settings=settings, folds=2, test_days=10, hours_ahead=6, training_leads=(1, 6, 24))
    direct = rolling_origin_backtest(features, settings=settings, folds=2, test_days=10, hours_ahead=6, training_leads=(6,))
    assert predictions.select("site_id", "time").equals(direct.select("site_id", "time"))
    assert not predictions["pred"].equals(direct["pred"])
    features = features.filter(pl.col("hours_ahead") == 1)
    observed = features.select("site_id", (pl.col("time") + pl.duration(hours=6)).alias("time"), pl.col("target").alias("six_hours_before"))
    checked = predictions.join(observed, on=["site_id", "time"])
    assert checked.height == predictions.height > 0
    assert (checked["target_lag_1"] == checked["six_hours_before"]).all()

    defs = make_definitions(home)
    config = {"ops": {"local_data_backtest": {"config": {"folder": str(user_folder), "pollutants": ["no2"], "folds": 2, "test_days": 14, "horizon": 6, "daily": True, "train_days": 60}}}}
    result = dg.materialize([defs.get_assets_def("local_data_backtest")], resources=defs.resources, run_config=config)
    metadata = result.asset_materializations_for_node("local_data_backtest")[0].metadata
    assert metadata["horizon_hours"].value == 6
    # the daily index of each UK day of the folds (2 x 14 days, less the fold edges), two sites, both issues
    daily = metadata["daily_scores"].value
    assert "**issued day before**" in daily and "**issued same day**" in daily and "| index >= 4 |" in daily
    site_days = [int(line.split(": ")[1].split(" site-days")[0]) for line in daily.splitlines() if line.startswith("**issued")]
    assert len(site_days) == 2 and all(2 * 26 <= n <= 2 * 28 for n in site_days)
    run = defs.resources["model_store"].registry().client.get_run(metadata["mlflow_run_id"].value)
    assert run.data.params["horizon_hours"] == "6"


def test_backtest_on_the_warehouse_scores_each_horizon_against_its_own_persistence(trained_home, tmp_path, monkeypatch):
    home = copy_home(trained_home, tmp_path)  # the backtest logs to MLflow and writes its reports
    monkeypatch.setenv("ROUTEAQ_HOME", str(home))
    defs = make_definitions(home)
    scores = {}
    for horizon in (1, 6):
        config = {"ops": {"backtest": {"config": {"pollutants": ["no2"], "folds": 2, "test_days": 3, "horizon": horizon}}}}
        result = dg.materialize([defs.get_assets_def("backtest")], resources=defs.resources, run_config=config)
        metadata = result.asset_materializations_for_node("backtest")[0].metadata
        assert metadata["horizon_hours"].value == horizon
        scores[horizon] = metadata["no2_persistence_rmse"].value
    assert scores[6] > scores[1] > 0  # the value six hours old is a worse forecast than the newest
    bad = {"ops": {"backtest": {"config": {"pollutants": ["no2"], "horizon": 49}}}}
    result = dg.materialize([defs.get_assets_def("backtest")], resources=defs.resources, run_config=bad, raise_on_error=False)
    message = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error.message
    assert "horizon 49 h is outside 1 to 48 h" in message
