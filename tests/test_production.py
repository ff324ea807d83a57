"""Production mode against real servers on this machine: the Dagster instance on PostgreSQL
(deploy/dagster.yaml), the lake on a moto S3 server, an ``mlflow server`` on PostgreSQL and that
S3, the online store on Redis, and a real ``bentoml serve`` answering from the champion. The whole
loop runs there: ingestion, features, training and promotion, publishing, serving and its log,
scoring, interval factors, drift, the retraining policy and the alerts sensor."""

import json
import os
import shutil
import subprocess
import time
from datetime import timedelta

import dagster as dg
import psycopg2
import pytest
import requests
from mlflow import MlflowClient

from conftest import FIXTURES, REPO, SITES_CONFIG, WINDOW_END, make_definitions, partition_key
from production_services import (  # noqa: F401 - fixtures
    PG,
    bucket,
    new_database,
    postgres_database,
    production_env,
    redis_target,
    s3_client,
    s3_endpoint,
    start_mlflow_server,
)
from routeaq_assets.adapters.shared import SharedFolder
from routeaq_assets.adapters.stores import daily_error_store
from routeaq_assets.core.predictions import read_prediction_log
from routeaq_assets.core.retraining import RetrainPolicy
from routeaq_assets.definitions import build_definitions
from routeaq_assets.defs.monitoring.alerts import monitoring_alerts
from routeaq_assets.defs.monitoring.sensors import build_retraining_sensor
from routeaq_assets.environments import get_resources
from service_process import BIN, bentoml_serve, stop

SITES = ["CLL2", "MY1"]
POLLUTANTS = ("pm25", "pm10", "no2", "o3")
START = WINDOW_END - timedelta(days=10)
MIDDLE = WINDOW_END - timedelta(days=5)
# A small, fast model: the test is about the wiring, bench/ is about skill.
TRAIN = {"ops": {f"{p}_candidate": {"config": {"train_days": 10, "holdout_days": 2, "num_boost_round": 40, "coverage_tolerance": 0.3}} for p in POLLUTANTS}}


def dagster_instance_env(database: str) -> dict[str, str]:
    return {"DAGSTER_PG_HOST": PG["host"], "DAGSTER_PG_PORT": str(PG["port"]), "DAGSTER_PG_USER": PG["user"], "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": database}


def production_instance(tmp_path) -> dg.DagsterInstance:
    instance_home = tmp_path / "dagster-prod"
    instance_home.mkdir(exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", instance_home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(instance_home))


def range_tags(start, end) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": partition_key(start), "dagster/asset_partition_range_end": partition_key(end - timedelta(hours=1))}


def close_the_loop(defs: dg.Definitions, instance: dg.DagsterInstance, hour, service: str, s3_endpoint: str, bucket: str, versions: dict[str, str]) -> None:
    """Monitoring on the production stack, as the hourly and daily schedules run it: the served
    forecast scored from the log the pod shipped to S3, interval factors published to Redis, each
    pollutant's drift record in S3 and its alarm in the lake's tables, the day's index verified,
    subscribed alerts judged from the service's own forecasts, and the plot served back from S3."""
    monitoring = [defs.get_assets_def(n) for n in ("forecast_performance", "interval_calibration", *(f"{p}_drift_report" for p in POLLUTANTS))]
    monitored = dg.materialize(monitoring, resources=defs.resources, instance=instance, partition_key=partition_key(hour))
    assert monitored.success
    performance = monitored.asset_materializations_for_node("forecast_performance")[0].metadata
    assert performance["forecasts_logged"].value == 1 and performance["forecasts_as_of_champion"].value > 0
    assert -1 < performance["pm25_skill"].value <= 1
    assert monitored.asset_materializations_for_node("interval_calibration")[0].metadata["published_to"].value.startswith("redis://")
    stamp = f"{hour:%Y-%m-%dT%H}"
    keys = {o["Key"] for o in s3_client(s3_endpoint).list_objects_v2(Bucket=bucket, Prefix="routeaq/reports/")["Contents"]}
    assert {f"routeaq/reports/performance/plots/{stamp}-pm25.png"} | {f"routeaq/reports/drift/{p}/{stamp}.json" for p in POLLUTANTS} <= keys
    assert {f"routeaq/reports/drift/{p}/thresholds-v{versions[p]}.json" for p in POLLUTANTS} <= keys
    plot = requests.get(performance["plot_pm25"].value.replace("http://localhost:8000", service), timeout=10)
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    daily = dg.materialize([defs.get_assets_def("daqi_verification")], resources=defs.resources, instance=instance, partition_key=f"{hour - timedelta(days=1):%Y-%m-%d}")
    verified = daily.asset_materializations_for_node("daqi_verification")[0].metadata
    assert daily.success and verified["sites"].value == len(SITES)
    assert verified["daily_errors_published_to"].value.startswith("redis://")
    assert daily_error_store(os.environ["ROUTEAQ_ONLINE_STORE"]).read().height == verified["daily_errors_site_days"].value
    alerts = dg.materialize([defs.get_assets_def("subscription_alerts")], resources=defs.resources, instance=instance)
    assert alerts.success  # no subscription yet: the forecasts are read and nothing is sent


def test_runs_and_materializations_are_stored_in_postgres(home, tmp_path, monkeypatch, postgres_database):
    for key, value in dagster_instance_env(postgres_database).items():
        monkeypatch.setenv(key, value)
    defs = make_definitions(home)
    with production_instance(tmp_path) as instance:
        result = dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, run_config=SITES_CONFIG, instance=instance)
        assert result.success
    with psycopg2.connect(dbname=postgres_database, **PG) as con:
        cursor = con.cursor()
        cursor.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
        assert cursor.fetchone()[0] == 1
        cursor.execute("SELECT count(*) FROM event_logs WHERE asset_key LIKE '%site_registry%' AND dagster_event_type = 'ASSET_MATERIALIZATION'")
        assert cursor.fetchone()[0] == 1


def every_check_evaluated(instance: dg.DagsterInstance) -> set[dg.AssetCheckKey]:
    """The asset checks evaluated in any run of the instance, from its event log."""
    found = set()
    for run in instance.get_runs():
        for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records:
            evaluation = record.event_log_entry.dagster_event.event_specific_data
            found.add(dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name))
    return found


@pytest.mark.e2e
def test_the_whole_loop_runs_in_production_mode(home, tmp_path, monkeypatch, s3_endpoint, bucket, new_database, redis_target, httpserver):
    """Every asset of ``Definitions`` materialized and every check evaluated on the production
    stack, in the order production runs them, ending with a retrain the policy asks for."""
    httpserver.expect_request("/alerts", method="POST").respond_with_data("ok")
    mlflow_server, tracking_uri = start_mlflow_server(new_database(), s3_endpoint, bucket, tmp_path / "mlflow.log")
    try:
        for key, value in {**production_env(bucket, s3_endpoint, tracking_uri, redis_target), **dagster_instance_env(new_database())}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("ROUTEAQ_SITES", ",".join(SITES))
        monkeypatch.setenv("ROUTEAQ_WEBHOOK_URL", httpserver.url_for("/alerts"))
        monkeypatch.setenv("ROUTEAQ_SUBSCRIPTIONS_DB", f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{new_database()}")
        defs = build_definitions(get_resources())
        with production_instance(tmp_path) as instance:
            assert dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, instance=instance).success
            for site in SITES:  # the demo network writes its files once, before the runs that read them
                defs.resources["observations"].site_year(site, WINDOW_END.year)
            # Two runs on different partitions (the two halves of the window) at the same time,
            # each in its own process as the run launcher would start them.
            env = {**os.environ, "DAGSTER_HOME": str(instance.root_directory)}
            runs = [
                subprocess.Popen(
                    [str(BIN / "dagster"), "asset", "materialize", "--select", "raw_aurn,raw_weather", "-m", "routeaq_assets.definitions",
                     "--partition-range", f"{partition_key(s)}...{partition_key(e - timedelta(hours=1))}"],
                    env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )
                for s, e in ((START, MIDDLE), (MIDDLE, WINDOW_END))
            ]
            logs = [run.communicate(timeout=300)[0] for run in runs]
            assert [run.returncode for run in runs] == [0, 0], "\n".join(log[-3000:] for log in logs)
            with dg.build_resources({"warehouse": defs.resources["warehouse"]}) as built:
                hours, rows, keys = built.warehouse.query(
                    "SELECT count(DISTINCT time), count(*), count(DISTINCT (site_id, time, pollutant)) FROM observations"
                ).row(0)
            assert hours == 240 and rows == keys  # every hour of both runs, no row twice
            with psycopg2.connect(dbname=os.environ["DAGSTER_PG_DB"], **PG) as con:
                cursor = con.cursor()
                cursor.execute(
                    "SELECT run_id, min(timestamp), max(timestamp) FROM event_logs WHERE step_key = 'raw_aurn' "
                    "AND dagster_event_type IN ('STEP_START', 'STEP_SUCCESS') GROUP BY run_id"
                )
                (_, start_a, end_a), (_, start_b, end_b) = cursor.fetchall()
            assert start_a < end_b and start_b < end_a  # the two raw_aurn steps ran at the same time

            ingest = defs.resolve_job_def("ingest_job")
            assert ingest.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("silver_features")], tags=range_tags(START, WINDOW_END)).success
            trained = defs.resolve_job_def("train_job").execute_in_process(instance=instance, run_config=TRAIN)
            assert trained.success
            for p in POLLUTANTS:
                assert trained.asset_materializations_for_node(f"{p}_champion")[0].metadata["promoted"].value is True
            evaluation = dg.materialize(
                [defs.get_assets_def("backtest"), defs.get_assets_def("local_data_backtest")], resources=defs.resources, instance=instance, run_config=backtests(tmp_path),
            )
            assert evaluation.success

        client = MlflowClient(tracking_uri)
        versions = {p: client.get_model_version_by_alias(f"routeaq-{p}", "champion").version for p in POLLUTANTS}
        champion = client.get_model_version_by_alias("routeaq-pm25", "champion")
        candidate_run = client.get_run(champion.run_id)
        parent = client.get_run(candidate_run.data.tags["mlflow.parentRunId"])  # dagster-mlflow's run of the Dagster run
        assert parent.data.tags["dagster_run_id"] == trained.run_id and parent.info.status == "FINISHED"
        objects = [o["Key"] for o in s3_client(s3_endpoint).list_objects_v2(Bucket=bucket)["Contents"]]
        log = s3_client(s3_endpoint).list_objects_v2(Bucket=bucket, Prefix="routeaq/tables/silver_features/_delta_log/")["Contents"]
        assert "routeaq/tables/silver_features/_delta_log/00000000000000000000.json" in {o["Key"] for o in log}  # a Delta table
        assert int(candidate_run.data.params["silver_features_version"]) >= 0  # the version the model was trained on
        assert any(k.startswith("mlflow/") and k.endswith("MLmodel") for k in objects)

        history = s3_client(s3_endpoint).list_objects_v2(Bucket=bucket, Prefix="routeaq/history/")["Contents"]
        assert [o["Key"] for o in history] == ["routeaq/history/panel-2025.parquet"]  # the service's history files, for every pod

        assert not (home / "offline").exists()  # the run wrote them to S3 only: its disk goes with its pod
        # The model comes through the MLflow server; the service reads S3 for its history files
        # and ships its prediction log there every second.
        shared = SharedFolder(s3_client(s3_endpoint), bucket, "routeaq/predictions")
        with bentoml_serve(home / "service-pod", tmp_path / "serve.log", env={"ROUTEAQ_PREDICTION_FLUSH_SECONDS": "1"}) as url:
            monkeypatch.setenv("ROUTEAQ_SERVICE_URL", url)
            health = requests.get(f"{url}/health", timeout=10).json()
            assert health["models"] == versions
            assert (home / "service-pod" / "offline" / "panel-2025.parquet").exists()  # the history files reached the pod
            answer = requests.post(f"{url}/predict", json={"site_id": "MY1", "timestamp": "2025-08-01T12:00:00Z"}, timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == champion.version and answer.json()["pm25_pred"] >= 0
            last = WINDOW_END - timedelta(hours=1)
            assert requests.post(f"{url}/predict", json={"site_id": "CLL2", "timestamp": "2025-08-01T11:00:00Z"}, timeout=10).status_code == 200
            page_answers_from_the_champions(url, versions)
            deadline = time.monotonic() + 30
            while read_prediction_log(tmp_path / "shipped", last, WINDOW_END, shared).is_empty():
                assert time.monotonic() < deadline, "the pod did not ship its prediction log"
                time.sleep(0.5)
            with production_instance(tmp_path) as instance:
                close_the_loop(defs, instance, last, url, s3_endpoint, bucket, versions)
                retrain_as_the_policy_asks(defs, instance, httpserver)
                upkeep = defs.resolve_job_def("lake_maintenance_job").execute_in_process(instance=instance)  # as its weekly schedule runs it
                assert upkeep.success and upkeep.asset_materializations_for_node("lake_maintenance")[0].metadata["tables"].value >= 10
                ran = {k for k in defs.resolve_asset_graph().get_all_asset_keys() if instance.get_latest_materialization_event(k) is not None}
                assert ran == set(defs.resolve_asset_graph().get_all_asset_keys()), f"never materialized: {set(defs.resolve_asset_graph().get_all_asset_keys()) - ran}"
                checks = set(defs.resolve_asset_graph().asset_check_keys)
                assert checks - every_check_evaluated(instance) == set(), "checks never evaluated"
        logged = read_prediction_log(tmp_path / "monitoring", WINDOW_END, WINDOW_END + timedelta(hours=1), shared)
        assert ("MY1", champion.version, answer.json()["pred"]) in logged.select("site_id", "model_version", "pred").rows()  # with the page's forecasts
    finally:
        stop(mlflow_server)


def backtests(tmp_path) -> dict:
    """Small backtests: the trained window's features, and a user's folder of openair tables (ABD's
    real 2017 file): the wiring, not the skill."""
    folder = tmp_path / "user-folder"
    folder.mkdir()
    shutil.copy(FIXTURES / "ABD_2017.RData", folder)
    small = {"num_boost_round": 30, "folds": 1, "pollutants": ["no2"]}
    return {"ops": {
        "backtest": {"config": {**small, "train_days": 5, "test_days": 2}},
        "local_data_backtest": {"config": {**small, "folder": str(folder), "train_days": 30, "test_days": 7}},
    }}


def page_answers_from_the_champions(url: str, versions: dict[str, str]) -> None:
    """The page's API on the production service: the overview, a site, the nearest sites to a
    place and the cleanest hours, each from the served champions."""
    sites = requests.get(f"{url}/api/sites", timeout=30).json()
    assert sorted(s["site_id"] for s in sites["sites"]) == sorted(SITES) and sites["models"] == versions
    site = requests.get(f"{url}/api/sites/MY1", timeout=30).json()
    assert len(site["next_times"]) == 48 and site["tomorrow"]["index"] is not None
    assert all(len(p["next"]["pred"]) == 48 for p in site["pollutants"] if p["measured"])
    nearest = requests.get(f"{url}/api/nearest", params={"place": "London"}, timeout=30).json()
    assert [s["site_id"] for s in nearest["sites"]][:2] and {s["site_id"] for s in nearest["sites"]} <= set(SITES)
    best = requests.get(f"{url}/api/best-time", params={"site_id": "MY1", "hours": 2}, timeout=30)
    assert best.status_code == 200 and best.json()["best"]["start"]


def retrain_as_the_policy_asks(defs: dg.Definitions, instance: dg.DagsterInstance, httpserver) -> None:
    """A policy that no model can satisfy (skill of 1 required) asks for each pollutant's training
    once; the request's run ends in the gate, and the alert reaches the operators' receiver."""
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:  # the S3 resource is a context manager
        tick = build_retraining_sensor(RetrainPolicy(min_skill=1.0, min_scored_hours=1)).evaluate_tick(context)
    assert {r.tags["routeaq/pollutant"] for r in tick.run_requests} >= {"pm25"}, tick.skip_message
    request = next(r for r in tick.run_requests if r.tags["routeaq/pollutant"] == "pm25")
    assert request.tags["routeaq/trigger"] == "skill"
    retrained = defs.resolve_job_def("train_job").execute_in_process(
        instance=instance, asset_selection=request.asset_selection, run_config={"ops": {"pm25_candidate": TRAIN["ops"]["pm25_candidate"]}}, tags=request.tags,
    )
    assert retrained.success
    gate = [e for e in retrained.all_events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION]
    assert [e.event_specific_data.check_name for e in gate] == ["beats_persistence"]
    assert retrained.asset_materializations_for_node("pm25_champion")[0].metadata["reason"].value
    sent = [json.loads(request.get_data()) for request, _ in httpserver.log]
    assert any(body.get("event") == "retrain_requested" and body.get("pollutant") == "pm25" for body in sent), sent
    alerts = monitoring_alerts.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert json.loads(alerts.cursor)["pm25_champion"] > 0
