"""End to end: Dagster's own CLI, and a real ``bentoml serve`` process over HTTP."""

import re
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil
import pytest
import requests

from conftest import FIXTURES, REPO, TRAIN_CONFIG, copy_home, home_env
from service_process import bentoml_serve, free_port

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.e2e


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "dagster"), *args, "-m", "routeaq_assets.definitions"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_cli_materializing_an_hour_twice_leaves_the_same_rows(tmp_path):
    home = tmp_path / "routeaq"
    env = {**os.environ, **home_env(home)}
    cli(["asset", "materialize", "--select", "site_registry"], env)
    counts = []
    for _ in range(2):
        cli(["asset", "materialize", "--select", "raw_aurn", "--partition", "2025-08-01-10:00"], env)
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            counts.append(con.execute("SELECT count(*), count(DISTINCT (site_id, pollutant)) FROM observations WHERE time = TIMESTAMPTZ '2025-08-01 10:00:00+00'").fetchone())
    assert counts[0] == counts[1] == (15, 15)  # 3 sites x 5 pollutants, once each


def test_cli_job_execute_runs_the_training_job(trained_home, tmp_path):
    env = {**os.environ, **home_env(copy_home(trained_home, tmp_path))}
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(TRAIN_CONFIG))  # JSON is YAML
    result = cli(["job", "execute", "-j", "train_job", "-c", str(config)], env)
    assert "RUN_SUCCESS" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def service(trained_home, tmp_path_factory):
    home = copy_home(trained_home, tmp_path_factory.mktemp("served"))  # it logs every prediction
    with bentoml_serve(home, log=home / "serve.log") as url:
        yield url, home


def test_health_reports_the_loaded_models(service):
    url, _ = service
    body = requests.get(f"{url}/health").json()
    # The trained home's data ends in 2025: loaded and answering, and degraded only because it is stale, with its age.
    assert body["status"] == "degraded" and body["model_loaded"] is True and set(body["problems"]) == {"stale_data"}
    said = re.search(r"is ([\d,]+) hours old \(stale after 3\)", body["problems"]["stale_data"])
    assert said and abs(int(said.group(1).replace(",", "")) - body["feature_age_hours"]) <= 0.55  # whole hours in words, tenths in the figure
    assert set(body["models"]) == {"pm25", "pm10", "no2", "o3"}
    assert body["newest_observation"].startswith("2025-08-01T11:00")


def test_predict_returns_a_number_from_data_before_the_hour(service):
    url, home = service
    response = requests.post(f"{url}/predict", json={"site_id": "CLL2", "timestamp": "2025-08-01T10:00:00Z"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["pm25_pred"], float) and body["pm25_pred"] >= 0
    assert body["lower"] <= body["pm25_pred"] <= body["upper"]
    assert (body["site_id"], body["timestamp"], body["source"]) == ("CLL2", "2025-08-01T10:00:00Z", "online_store")
    assert body["data_until"] == "2025-08-01T09:00:00Z"
    logged = [json.loads(line) for f in (home / "predictions").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert any(r["site_id"] == "CLL2" and r["time"] == "2025-08-01T10:00:00Z" and r["pred"] == body["pred"] for r in logged)


def test_past_hours_give_different_forecasts_and_other_pollutants_work(service):
    url, _ = service
    a = requests.post(f"{url}/predict", json={"site_id": "MY1", "timestamp": "2025-07-30T08:00:00Z", "pollutant": "no2"}).json()
    b = requests.post(f"{url}/predict", json={"site_id": "MY1", "timestamp": "2025-07-30T20:00:00Z", "pollutant": "no2"}).json()
    assert a["pollutant"] == "no2" and a["pm25_pred"] is None and a["pred"] != b["pred"]
    batch = requests.post(f"{url}/predict/batch", json={"items": [{"site_id": "CLL2", "timestamp": "2025-08-01T12:00:00Z"}, {"site_id": "MAN3", "timestamp": "2025-08-01T12:00:00Z", "pollutant": "o3"}]})
    assert batch.status_code == 200 and len(batch.json()["predictions"]) == 2


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"site_id": "NOPE", "timestamp": "2025-08-01T10:00:00Z"}, 404, "unknown site_id 'NOPE'"),
        ({"site_id": "CLL2", "timestamp": "yesterday"}, 422, "timestamp"),
        ({"site_id": "CLL2", "timestamp": "2025-08-01T10:00:00"}, 422, "time zone"),
        ({"site_id": "CLL2", "timestamp": "2025-08-01T10:30:00Z"}, 422, "whole hour"),
        ({"site_id": "CLL2"}, 422, "timestamp"),
        ({"site_id": "CLL2", "timestamp": "2025-08-01T10:00:00Z", "pollutant": "so2"}, 422, "pollutant"),
        ({"site_id": "CLL2", "timestamp": "2025-08-03T12:00:00Z"}, 422, "latest hour available is 2025-08-03T11:00"),
        ({"site_id": "CLL2", "timestamp": "2020-01-01T00:00:00Z"}, 422, "earliest hour available"),
    ],
)
def test_client_mistakes_get_4xx_with_a_message(service, body, status, needle):
    url, _ = service
    response = requests.post(f"{url}/predict", json=body)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]


def test_malformed_json_is_422(service):
    url, _ = service
    response = requests.post(f"{url}/predict", data='{"site_id": "CLL2",', headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "JSON" in response.json()["error"]


def test_model_and_metrics_endpoints(service):
    url, _ = service
    model = requests.get(f"{url}/model").json()
    assert model["pm25"]["holdout_metrics"]["1"]["model_rmse"] < model["pm25"]["holdout_metrics"]["1"]["persistence_rmse"]
    assert model["pm25"]["max_hours_ahead"] == 48
    answer = requests.post(f"{url}/predict", json={"site_id": "MAN3", "timestamp": "2025-08-01T11:00:00Z", "pollutant": "o3"})
    assert answer.status_code == 200, answer.text
    metrics = requests.get(f"{url}/metrics").text
    assert "bentoml_service_request_total" in metrics
    assert 'routeaq_prediction_value_count{pollutant="o3"}' in metrics
    from prometheus_client.parser import text_string_to_metric_families

    samples = [sample for family in text_string_to_metric_families(metrics) for sample in family.samples if sample.name.startswith("routeaq_")]
    assert [s.value for s in samples if s.name == "routeaq_model_loaded"] == [1.0]
    versions = {(s.labels["pollutant"], s.labels["model"], s.labels["version"]) for s in samples if s.name == "routeaq_model_version_info" and s.value == 1}
    assert versions == {(p, f"routeaq-{p}", model[p]["version"]) for p in ("pm25", "pm10", "no2", "o3")}
    health = requests.get(f"{url}/health").json()
    ages = {s.labels["site"]: s.value for s in samples if s.name == "routeaq_newest_observation_age_hours"}
    assert sorted(ages) == sorted(health["data_until"])
    assert all(abs(age - health["feature_age_hours"]) < 1 for age in ages.values())  # every site ends at the newest hour here
    assert [s.labels["problem"] for s in samples if s.name == "routeaq_serving_problems" and s.value] == ["stale_data"]  # the 2025 data


def test_reports_open_from_the_service_and_nothing_else_does(service):
    """The Dagster UI links drift pages and plots to GET /reports/...: the lake's report files
    are served with their media type; a missing one, another suffix or a way out of the folder is 404."""
    url, home = service
    page = home / "lake" / "reports" / "drift" / "no2" / "2025-08-01T11.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("<html><body>drift</body></html>")
    answer = requests.get(f"{url}/reports/drift/no2/2025-08-01T11.html")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html") and "drift" in answer.text
    (home / "lake" / "secret.json").write_text("{}")
    for name in ("drift/no2/2025-08-01T12.html", "drift/no2/../../secret.json", "drift/%2e%2e/%2e%2e/secret.json", "../warehouse.duckdb", "drift/no2/2025-08-01T11.htm"):
        refused = requests.get(f"{url}/reports/{name}")
        assert refused.status_code == 404, (name, refused.status_code, refused.text[:200])
    assert "never written, or pruned since" in requests.get(f"{url}/reports/drift/no2/2025-08-01T12.html").json()["error"]


def test_bentofile_builds_offline(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")}
    result = subprocess.run([str(BIN / "bentoml"), "build", "--output", "tag"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "bentoml" / "bentos" / "routeaq").is_dir()


def test_fuzzing_the_openapi_schema_finds_no_server_error(service, tmp_path):
    """schemathesis drives every operation of the published schema with generated bodies."""
    url, _ = service
    result = subprocess.run(
        [str(BIN / "schemathesis"), "--no-color", "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "25", "--seed", "7", "--generation-database", "none"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_timestamps_over_the_whole_range_never_5xx_and_keep_the_connection(service):
    """Whole hours over Python's entire datetime range, in any UTC offset, sent on one keep-alive
    connection: every answer is 200 or a 4xx naming ``timestamp``, and the server keeps the
    connection open after each (a 500 used to close it)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from test_serving_faults import ANY_TIMESTAMP

    url, _ = service
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    connection.connect()
    local = connection.sock.getsockname()
    statuses = []

    @settings(max_examples=300, deadline=None, database=None)
    @given(timestamp=ANY_TIMESTAMP, batch=st.booleans())
    def ask(timestamp, batch):
        item = {"site_id": "CLL2", "timestamp": timestamp.isoformat()}
        path, body = ("/predict/batch", {"items": [item]}) if batch else ("/predict", item)
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        statuses.append(response.status)
        assert response.status == 200 or (400 <= response.status < 500 and "timestamp" in answer["error"]), answer
        assert connection.sock is not None and connection.sock.getsockname() == local, "the server closed the connection"

    try:
        ask()
    finally:
        connection.close()
    assert any(400 <= s < 500 for s in statuses)


def test_predictions_logged_before_a_crash_survive_it(trained_home, tmp_path):
    """kill -9 the service right after answering: every answered prediction is in the log."""
    port = free_port()
    home = copy_home(trained_home, tmp_path)
    env = {**os.environ, **home_env(home)}
    process = subprocess.Popen(
        [str(BIN / "bentoml"), "serve", "routeaq_serving.service:RouteAQ", "--port", str(port), "--host", "127.0.0.1"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "service did not start"
            time.sleep(0.5)
        hours = [f"2025-07-3{d}T{h:02d}:00:00Z" for d in (0, 1) for h in range(0, 24, 3)]
        answered = [requests.post(f"{url}/predict", json={"site_id": "MAN3", "timestamp": t}).json() for t in hours]
    finally:
        # A crash of the whole service: the server and its worker processes, with no warning.
        family = [process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))]
        for pid in family:
            os.kill(pid, signal.SIGKILL)
        process.wait(timeout=30)
    logged = {(r["site_id"], r["time"], r["pred"]) for f in (home / "predictions").glob("*.jsonl") for r in map(json.loads, f.read_text().splitlines())}
    assert {(a["site_id"], a["timestamp"], a["pred"]) for a in answered} <= logged


def test_admin_reload_is_disabled_without_a_configured_token(service):
    url, _ = service
    response = requests.post(f"{url}/admin/reload", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403 and "set ROUTEAQ_ADMIN_TOKEN" in response.json()["error"]


def test_started_without_its_registry_the_service_is_not_ready_until_an_authorised_reload(trained_home, tmp_path):
    """No MLflow store at start: /ready is 503 naming the configured URI, and no store is created.
    Once the registry exists, only a reload with the admin token loads it (the poll is an hour)."""
    home = tmp_path / "routeaq"
    for part in ("online", "offline"):
        shutil.copytree(trained_home / part, home / part)
    store = home.resolve() / "mlflow" / "mlflow.db"
    token = secrets.token_urlsafe(24)
    log = tmp_path / "serve.log"
    with bentoml_serve(home, log=log, env={"ROUTEAQ_ADMIN_TOKEN": token, "ROUTEAQ_REFRESH_SECONDS": "3600"}, ready_status=503) as url:
        ready = requests.get(f"{url}/ready").json()
        assert ready["status"] == "unavailable" and f"no MLflow store at sqlite:///{store}" in ready["reason"]
        assert not store.exists()
        assert requests.post(f"{url}/predict", json={"site_id": "CLL2", "timestamp": "2025-08-01T10:00:00Z"}).status_code == 503
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": token}):
            refused = requests.post(f"{url}/admin/reload", headers=headers)
            assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer", refused.text
        shutil.copytree(trained_home / "mlflow", home / "mlflow")
        assert requests.get(f"{url}/ready").status_code == 503  # nothing reloads on its own yet
        reloaded = requests.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {token}"})
        assert reloaded.status_code == 200 and reloaded.json()["reloaded"] and set(reloaded.json()["problems"]) == {"stale_data"}, reloaded.text
        assert requests.post(f"{url}/predict", json={"site_id": "CLL2", "timestamp": "2025-08-01T10:00:00Z"}).status_code == 200
    assert token not in log.read_text()


@pytest.mark.e2e
def test_the_evaluate_command_runs_the_backtest_on_a_folder_and_says_which_weather(tmp_path):
    """`make evaluate DATA=folder` as a user runs it: the command drives the Dagster CLI and prints
    the table and the weather the features used."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("ABD_2017.RData", "AH_2017.RData"):
        shutil.copy(FIXTURES / name, folder / name)
    home = tmp_path / "routeaq"
    env = {**os.environ, "ROUTEAQ_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(
        [sys.executable, "-m", "routeaq_assets.evaluate", str(folder), "--pollutants", "no2", "--folds", "1", "--test-days", "10"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Weather:" in result.stdout and "no2       ABD" in result.stdout and "no2       AH" in result.stdout
