"""Serving faults: client input at the edges of what the schema accepts, broken stores, access.

Each test here tries one fault and asserts the protection that answers it (see
docs/reliability.md, section Serving)."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from routeaq_assets.adapters.stores import RedisOnlineStore
from routeaq_assets.core.environment import Settings, load_settings
from routeaq_assets.core.predictions import read_prediction_log
from routeaq_serving.forecasts import ForecastError, ForecastItem, Forecasts, OutOfRange, StoreUnavailable
from routeaq_serving.prediction_log import PredictionLog
from routeaq_serving.schemas import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, PredictRequest

UTC = timezone.utc
# Every fixed UTC offset a timestamp may carry (ISO 8601 allows up to 23:59 either way).
OFFSETS = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-(24 * 60 - 1), 24 * 60 - 1))
# Whole hours over Python's whole datetime range, in any offset: what a JSON client can send.
ANY_TIMESTAMP = st.datetimes(min_value=datetime.min, max_value=datetime.max, timezones=OFFSETS).map(
    lambda t: t.replace(minute=0, second=0, microsecond=0)
)


def settings_for(home, **env) -> Settings:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROUTEAQ_HOME", str(home))
        patch.delenv("ROUTEAQ_ONLINE_STORE", raising=False)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the home's own registry unless one is given
        for key, value in env.items():
            patch.setenv(key, value)
        return load_settings()


@pytest.fixture(scope="module")
def forecasts(trained_home) -> Forecasts:
    with pytest.MonkeyPatch.context() as patch:  # loading sets MLFLOW_TRACKING_URI (mlflow.set_tracking_uri): not for later tests
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        service = Forecasts(settings_for(trained_home))
        assert service.refresh(), service._reason
    return service


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(timestamp=ANY_TIMESTAMP)
def test_any_timestamp_is_accepted_in_range_or_refused_naming_the_field(timestamp):
    """Parsed from JSON as a client sends it: either a UTC hour within the stated bounds, or a
    validation error on ``timestamp`` (a 422), never an exception that would be a 500."""
    body = {"site_id": "CLL2", "timestamp": timestamp.isoformat()}
    try:
        request = PredictRequest.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        assert [e["loc"] for e in exc.errors()] == [("timestamp",)]
        (error,) = exc.errors()
        assert "between 1900-01-01T00:00:00Z and 2199-12-31T23:00:00Z" in error["msg"] or "whole hour" in error["msg"]
        return
    assert EARLIEST_TIMESTAMP <= request.timestamp <= LATEST_TIMESTAMP
    assert request.timestamp.utcoffset() == timedelta(0) and request.timestamp == timestamp


def naive(t: datetime) -> datetime:
    return t.replace(tzinfo=None)


# The whole accepted range, and (so that answers are drawn too) the days around the trained home's
# stored hours, which end at 2025-08-01T12:00Z.
ACCEPTED_HOURS = st.one_of(
    st.datetimes(min_value=naive(EARLIEST_TIMESTAMP), max_value=naive(LATEST_TIMESTAMP)),
    st.datetimes(min_value=datetime(2025, 6, 25), max_value=datetime(2025, 8, 3)),
).map(lambda t: t.replace(minute=0, second=0, microsecond=0, tzinfo=UTC))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hour=ACCEPTED_HOURS, pollutant=st.sampled_from(["pm25", "no2", "o3"]))
def test_every_accepted_hour_gets_a_forecast_or_a_client_error(forecasts, hour, pollutant):
    """Over the whole accepted range the forecast path answers or raises a ForecastError (4xx)."""
    try:
        (answer,) = forecasts.forecast([ForecastItem("MY1", hour, pollutant)])
    except ForecastError as exc:
        assert exc.status in (404, 422) and exc.field == "timestamp", exc.message
        return
    assert answer["timestamp"] == hour.strftime("%Y-%m-%dT%H:%M:%SZ")


def served_copy(trained_home, tmp_path) -> Path:
    """A home with the trained home's registry, online snapshot and history files, to break."""
    home = tmp_path / "routeaq"
    for part in ("mlflow", "online", "offline"):
        shutil.copytree(trained_home / part, home / part)
    return home


RECENT = ForecastItem("MY1", datetime(2025, 7, 31, 18, tzinfo=UTC), "no2")  # from the online store
OLDER = ForecastItem("MY1", datetime(2025, 7, 16, 7, tzinfo=UTC), "no2")  # from panel-2025.parquet


def test_a_corrupt_history_file_fails_only_its_hours_with_503_naming_it(trained_home, tmp_path):
    home = served_copy(trained_home, tmp_path)
    history = home / "offline" / "panel-2025.parquet"
    good = history.read_bytes()
    service = Forecasts(settings_for(home))
    assert service.refresh(), service._reason
    recent, older = service.forecast([RECENT]), service.forecast([OLDER])
    history.write_bytes(b"not parquet at all\n" * 100)

    with pytest.raises(StoreUnavailable) as raised:
        service.forecast([OLDER])
    assert raised.value.status == 503 and "history file panel-2025.parquet is unreadable" in raised.value.message
    assert str(tmp_path) not in raised.value.message
    assert service.forecast([RECENT]) == recent  # other hours keep working
    status = service.status()
    assert status["status"] == "degraded" and set(status["problems"]["history"]) == {"panel-2025.parquet"}

    # Corrupt before the service starts: it still loads, and the file is named at once.
    restarted = Forecasts(settings_for(home))
    assert restarted.refresh(), restarted._reason
    assert "panel-2025.parquet" in restarted.status()["problems"]["history"]
    with pytest.raises(StoreUnavailable, match="panel-2025.parquet"):
        restarted.forecast([OLDER])

    history.write_bytes(good)  # the file rewritten: its hours come back and the problem clears
    assert service.forecast([OLDER]) == older and set(service.status()["problems"]) == {"stale_data"}


def test_a_missing_registry_is_not_ready_names_the_uri_and_creates_nothing(trained_home, tmp_path):
    home = served_copy(trained_home, tmp_path)
    missing = tmp_path / "elsewhere" / "mlflow.db"
    uri = f"sqlite:///{missing}"
    service = Forecasts(settings_for(home, MLFLOW_TRACKING_URI=uri))
    assert not service.refresh()
    status = service.status()
    assert status["status"] == "unavailable" and not status["model_loaded"]
    assert f"no MLflow store at {uri}" in status["reason"] and uri in status["problems"]["registry"]
    assert not missing.exists() and not missing.parent.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    service = Forecasts(settings_for(home, MLFLOW_TRACKING_URI=f"sqlite:///{empty}"))
    assert not service.refresh() and empty.stat().st_size == 0  # no tables created in it either


def test_an_unreachable_registry_is_not_ready_and_its_password_is_never_shown(trained_home, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    port = free_port()
    uri = f"http://routeaq:hunter2-secret@127.0.0.1:{port}"
    service = Forecasts(settings_for(served_copy(trained_home, tmp_path), MLFLOW_TRACKING_URI=uri))
    with caplog.at_level(logging.DEBUG):
        assert not service.refresh()
    status = service.status()
    assert status["status"] == "unavailable"
    assert f"registry http://routeaq:***@127.0.0.1:{port} cannot be read" in status["reason"]
    assert "hunter2" not in json.dumps(status) and "hunter2" not in caplog.text


def test_a_champion_the_registry_no_longer_holds_keeps_serving_degraded_named_and_alerted_once(trained_home, tmp_path, httpserver):
    from mlflow import MlflowClient

    httpserver.expect_request("/alerts", method="POST").respond_with_data("ok")
    home = served_copy(trained_home, tmp_path)
    service = Forecasts(settings_for(home, ROUTEAQ_WEBHOOK_URL=httpserver.url_for("/alerts")))
    assert service.refresh()
    served = {p: m.version for p, m in service.current().models.items()}
    assert set(service.status()["problems"]) == {"stale_data"}
    uri = service.settings.mlflow_tracking_uri
    assert uri == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"  # the copy's registry: this test deletes models

    client = MlflowClient(uri, registry_uri=uri)
    client.delete_registered_model_alias("routeaq-no2", "champion")
    service.refresh()
    status = service.status()
    assert status["status"] == "degraded" and status["models"] == served
    assert f"no longer names a champion for routeaq-no2 version {served['no2']}, which this service still serves" in status["problems"]["registry_champions"]
    assert service.forecast([RECENT])[0]["model_version"] == served["no2"]

    for model in client.search_registered_models():  # every champion gone (aliases only: the copy shares its artifacts)
        if "champion" in (model.aliases or {}):
            client.delete_registered_model_alias(model.name, "champion")
    for _ in range(2):
        service.refresh()
    status = service.status()
    assert status["status"] == "degraded" and status["models"] == served
    assert all(f"routeaq-{p} version {v}" in status["problems"]["registry_champions"] for p, v in served.items())
    alerts = [json.loads(request.data) for request, _ in httpserver.log]
    assert [a["event"] for a in alerts] == ["champion_missing_from_registry"] * 2  # one per change: the alias, then the wipe
    assert alerts[1]["models"] == {f"routeaq-{p}": v for p, v in served.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of this test's own on a free port, with a password; stopped by the test."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", "s3cr3t-pw", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://:s3cr3t-pw@127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
            time.sleep(0.1)
    yield url, process
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)


def test_redis_down_keeps_the_last_good_snapshot_and_readiness_says_so(trained_home, tmp_path, redis_server):
    url, process = redis_server
    home = served_copy(trained_home, tmp_path)
    RedisOnlineStore(url).publish(pl.read_parquet(home / "online" / "features.parquet"))
    service = Forecasts(settings_for(home, ROUTEAQ_ONLINE_STORE=url))
    assert service.refresh(), service._reason
    answer = service.forecast([RECENT])

    process.terminate()
    process.wait(timeout=10)
    assert not service.refresh()
    status = service.status()
    assert status["status"] == "degraded" and status["model_loaded"]
    assert status["problems"]["online_store"].startswith(f"online store redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]} cannot be read")
    assert "s3cr3t" not in json.dumps(status)
    assert service.forecast([RECENT]) == answer  # the last good snapshot still serves


def test_a_lagging_site_is_answered_hours_ahead_of_its_own_newest_observation(trained_home, tmp_path):
    """MY1's NO2 and PM2.5 feeds stop 5 hours before the network's newest hour (11:00): the next
    network hour is 6 hours after MY1's own data: it is answered 6 hours ahead, with the features
    of a forecast made at MY1's newest observation. Never the 1 h features saying 1."""
    home = served_copy(trained_home, tmp_path)
    online = home / "online" / "features.parquet"
    panel = pl.read_parquet(online)
    lag_from = datetime(2025, 8, 1, 7, tzinfo=UTC)
    lagging = (pl.col("site_id") == "MY1") & (pl.col("time") >= lag_from)
    panel.with_columns(pl.when(lagging).then(None).otherwise(pl.col(p)).alias(p) for p in ("no2", "pm25")).write_parquet(online)
    service = Forecasts(settings_for(home))
    assert service.refresh(), service._reason
    next_hour = datetime(2025, 8, 1, 12, tzinfo=UTC)

    lagged, current = service.forecast([ForecastItem("MY1", next_hour, "no2"), ForecastItem("CLL2", next_hour, "no2")])
    assert (lagged["hours_ahead"], lagged["model_name"], lagged["origin"]) == (6, "routeaq-no2", "2025-08-01T06:00:00Z")
    assert lagged["data_until"] == "2025-08-01T06:00:00Z"
    assert (current["hours_ahead"], current["model_name"], current["origin"]) == (1, "routeaq-no2", "2025-08-01T11:00:00Z")
    with pytest.raises(OutOfRange) as refused:
        service.forecast([ForecastItem("MY1", datetime(2025, 8, 3, 7, tzinfo=UTC), "pm25")])
    assert "newest pm25 observation at MY1 is 2025-08-01T06:00:00+00:00, 49 hours before it" in refused.value.message
    assert "pm25 is forecast 1 to 48 hours after it" in refused.value.message and refused.value.field == "timestamp"
    # the hour after MY1's own newest observation is its one-hour forecast
    (own_next,) = service.forecast([ForecastItem("MY1", datetime(2025, 8, 1, 7, tzinfo=UTC), "pm25")])
    assert (own_next["hours_ahead"], own_next["origin"]) == (1, "2025-08-01T06:00:00Z")
    status = service.status()
    assert status["data_until"]["MY1"]["no2"].startswith("2025-08-01T06:00") and status["data_until"]["MY1"]["o3"].startswith("2025-08-01T11:00")

    log = PredictionLog(tmp_path / "predictions")
    log.append([lagged, current])
    logged = read_prediction_log(tmp_path / "predictions").sort("site_id")
    assert logged["hours_ahead"].to_list() == [1, 6] and (logged["time"] - logged["origin"]).to_list() == [timedelta(hours=1), timedelta(hours=6)]


@contextmanager
def small_disk(folder: Path, size: str = "64k"):
    """A tmpfs of ``size`` at ``folder``: a disk that fills. Skips where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a tmpfs mount (root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_disk_that_fills_under_the_prediction_log_tears_no_line_and_answering_goes_on(forecasts, tmp_path, caplog):
    """A real full disk (a 64 kB tmpfs): the log is cut back to its last whole line, every line
    logged reads back, readiness names the fault until space returns, the fault is logged once,
    and the service's logging step never raises (the answer goes out)."""
    from routeaq_serving.prediction_log import log_answers
    from test_monitoring import served

    hour = datetime(2025, 8, 1, 10, tzinfo=UTC)
    with small_disk(tmp_path / "disk") as disk:
        ballast = disk / "ballast"
        ballast.write_bytes(b"x" * 16_000)
        service = SimpleNamespace(prediction_log=PredictionLog(disk / "predictions"), forecasts=forecasts)
        logged, batches = 0, 0
        with caplog.at_level(logging.ERROR, logger="routeaq.serving"):
            while service.prediction_log.problem is None and batches < 500:
                batch = [served(site, hour, "no2", 10.0 + batches) for site in ("CLL2", "MY1", "MAN3")]
                log_answers(service, batch)
                logged += len(batch) if service.prediction_log.problem is None else 0
                batches += 1
            for _ in range(3):  # more requests on the full disk: answered, not logged, reported once
                log_answers(service, [served("MY1", hour, "o3", 1.0)])
        assert service.prediction_log.problem is not None, "the disk never filled"
        assert "No space left on device" in service.prediction_log.problem and "6 predictions not logged" in service.prediction_log.problem
        assert forecasts.status()["status"] == "degraded" and forecasts.status()["problems"]["prediction_log"] == service.prediction_log.problem
        assert len([r for r in caplog.records if "predictions not logged" in r.getMessage()]) == 1
        (day_file,) = (disk / "predictions").iterdir()
        text = day_file.read_text()
        assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())
        assert len(text.splitlines()) == logged

        ballast.unlink()  # space again: the next prediction is logged and readiness clears
        log_answers(service, [served("CLL2", hour, "pm25", 3.0)])
        assert service.prediction_log.problem is None and "prediction_log" not in forecasts.status()["problems"]
        assert len(day_file.read_text().splitlines()) == logged + 1
        service.prediction_log.close()
