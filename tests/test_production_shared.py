"""The files the service and the pipeline share in production, on a moto S3 server: the prediction
log every service pod ships in chunks (read back by monitoring and the forecast page) and the
yearly history files the pipeline writes and every pod downloads."""

from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest
from moto.server import ThreadedMotoServer

from conftest import make_definitions
from production_services import S3_CREDENTIALS, bucket, s3_client, s3_endpoint, unique  # noqa: F401 - fixtures
from routeaq_assets.adapters.shared import SharedFolder, shared_folder
from routeaq_assets.core.environment import load_settings
from routeaq_assets.core.predictions import read_prediction_log
from routeaq_assets.core.shared_folders import HISTORY, PREDICTIONS
from routeaq_serving.prediction_log import CHUNKS, PredictionLog
from service_process import free_port
from test_monitoring import HOURS, materialize, monitored_home, served  # noqa: F401 - fixture

UTC = timezone.utc
DAY = datetime(2025, 8, 1, tzinfo=UTC)


@pytest.fixture
def production(home, s3_endpoint, bucket, monkeypatch):
    """This process's settings in production mode, on the test's bucket."""
    for name, value in {**S3_CREDENTIALS, "ROUTEAQ_ENV": "production", "ROUTEAQ_S3_BUCKET": bucket, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def answer(site: str, hour: datetime, pred: float) -> dict:
    return served(site, hour, "pm25", pred)


def test_two_service_pods_ship_every_prediction_once(production, tmp_path, bucket, s3_endpoint):
    """Two pods (two logs, each with its own name) append, flush at different moments and append
    again, with forecasts for two days; one folder holds both, so each flush also meets the other
    pod's open chunk. The reader sees every prediction exactly once, and only its window's days."""
    shared = shared_folder(production, PREDICTIONS)
    pods = [PredictionLog(tmp_path / "pod", shared, name=name) for name in ("pod-a-1", "pod-b-1")]
    hours = [DAY + timedelta(hours=h) for h in (20, 22, 25, 27)]  # 2025-08-01 and 2025-08-02
    appended = []
    for round_ in range(3):
        for k, pod in enumerate(pods):
            batch = [answer(site, hour, 100.0 * round_ + 10.0 * k + i) for i, hour in enumerate(hours) for site in ("MY1", "CLL2")]
            pod.append(batch)
            appended += batch
        assert pods[round_ % 2].flush() == 0  # the other pod's chunk is open: it is left alone
    assert [p.flush() for p in pods] == [0, 0]
    assert list((tmp_path / "pod" / CHUNKS).iterdir()) == []

    keys = [o["Key"] for o in s3_client(s3_endpoint).list_objects_v2(Bucket=bucket, Prefix="routeaq/predictions/")["Contents"]]
    assert {k.split("/")[2] for k in keys} == {"day=2025-08-01", "day=2025-08-02"}
    assert {k.split("/")[3].rsplit("-", 1)[0] for k in keys} == {"pod-a-1", "pod-b-1"}

    reader = tmp_path / "monitoring"  # another machine: nothing of the pods' folder
    logged = read_prediction_log(reader, DAY, DAY + timedelta(days=2), shared)
    assert logged.height == len(appended)
    assert sorted(zip(logged["site_id"], logged["pred"])) == sorted((a["site_id"], a["pred"]) for a in appended)
    page = tmp_path / "page"
    first_day = read_prediction_log(page, DAY, DAY + timedelta(days=1), shared)
    assert first_day.height == len(appended) // 2 and first_day["time"].max() < DAY + timedelta(days=1)
    assert [p.name for p in (page / "shipped").iterdir()] == ["day=2025-08-01"]  # only the window's day was fetched
    read_prediction_log(page, DAY + timedelta(days=8), DAY + timedelta(days=9), shared)  # a week later
    assert [p.name for p in (page / "shipped").iterdir()] == []  # days over a week before the window read are not kept
    read_prediction_log(page, DAY + timedelta(days=1), DAY + timedelta(days=2), shared)
    assert [p.name for p in (page / "shipped").iterdir()] == ["day=2025-08-02"]


def test_a_chunk_s3_refused_stays_and_a_later_flush_ships_it(tmp_path):
    """S3 down then up: the chunk stays on the pod's disk and the next flush ships all of it."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = s3_client(f"http://127.0.0.1:{port}")
        name = unique("routeaq-down")
        client.create_bucket(Bucket=name)
        shared = SharedFolder(client, name, "routeaq/predictions")
        log = PredictionLog(tmp_path / "pod", shared, name="pod-a-1")
        log.append([answer("MY1", DAY + timedelta(hours=3), 12.5)])
        server.stop()
        log.append([answer("CLL2", DAY + timedelta(hours=3), 7.5)])
        assert log.flush() == 1
        assert len(list((tmp_path / "pod" / CHUNKS).glob("*.jsonl"))) == 1
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        assert log.flush() == 0
        assert list((tmp_path / "pod" / CHUNKS).glob("*.jsonl")) == []
        logged = read_prediction_log(tmp_path / "reader", DAY, DAY + timedelta(days=1), shared)
        assert sorted(zip(logged["site_id"], logged["pred"])) == [("CLL2", 7.5), ("MY1", 12.5)]
    finally:
        server.stop()


def test_forecast_performance_reads_the_prediction_log_the_pods_shipped_to_s3(monitored_home, production, tmp_path):
    """The prediction log alone in S3 (the warehouse and registry are this home's own): the pod's
    folder is on another machine, so nothing of it is in this home. The whole monitoring loop on
    the production stack is tests/test_production.py's."""
    for local in (monitored_home / "predictions").glob("predictions-*.jsonl"):
        local.unlink()  # what other tests served from the shared trained home: not this pod's
    pod = PredictionLog(tmp_path / "pod", shared_folder(production, PREDICTIONS), name="pod-a-1")
    answers = [served(site, hour, "pm25", 20.0) for hour in HOURS[:2] for site in ("MY1", "CLL2")]
    pod.append(answers)
    assert pod.flush() == 0
    defs = make_definitions(monitored_home)
    metadata = materialize(defs, "forecast_performance", HOURS[:2]).asset_materializations_for_node("forecast_performance")[-1].metadata
    assert metadata["forecasts_logged"].value == len(answers)
    assert not list((monitored_home / "predictions").glob("predictions-*.jsonl"))


def test_history_files_written_by_the_pipeline_reach_every_pod_through_s3(production, tmp_path, s3_endpoint, bucket):
    from dagster_aws.s3 import S3Resource

    from routeaq_assets.production import SharedOnlineStore
    from routeaq_serving.state import ServingState

    resource = SharedOnlineStore(
        target="redis://127.0.0.1:6379/0", history_folder=str(tmp_path / "run-pod"), s3=S3Resource(endpoint_url=s3_endpoint, region_name="us-east-1"), bucket=bucket
    )
    with dg.build_resources({"online_store": resource}) as built:
        writer = built.online_store.history()
    panel = pl.DataFrame(
        {"site_id": ["MY1", "MY1", "CLL2"], "time": [DAY, DAY + timedelta(hours=1), DAY], "pm25": [1.0, 2.0, 3.0]},
        schema_overrides={"time": pl.Datetime("us", "UTC")},
    )
    writer.write_year(2025, panel)
    assert writer.written_at(2025) is not None and writer.written_at(2024) is None
    assert not (tmp_path / "run-pod").exists()  # the run pod's disk goes with the pod
    objects = s3_client(s3_endpoint).list_objects_v2(Bucket=bucket, Prefix=f"routeaq/{HISTORY}/")["Contents"]
    assert [o["Key"] for o in objects] == ["routeaq/history/panel-2025.parquet"]

    pod = ServingState(production).history  # the service's, as it builds it
    assert pod.sync() and not pod.sync()  # copied once, then only when it changes
    assert pod.start() == DAY
    assert pod.window(["MY1"], DAY, DAY + timedelta(days=1))["pm25"].to_list() == [1.0, 2.0]
    writer.write_year(2025, panel.with_columns(pl.col("pm25") * 10))
    assert pod.sync()
    assert pod.window(["MY1"], DAY, DAY + timedelta(days=1))["pm25"].to_list() == [10.0, 20.0]
