"""The one switch: ROUTEAQ_ENV=production selects the production resources from the same mapping,
and start-up fails with an error that names each missing setting or unreachable service."""

import os
import subprocess

import dagster as dg
import pytest

from conftest import REPO, TEST_SITES, make_definitions
from production_services import BIN, S3_CREDENTIALS, bucket, production_env, redis_target, s3_endpoint  # noqa: F401 - fixtures
from routeaq_assets.core.environment import ConfigurationError, load_settings
from routeaq_assets.environments import RESOURCES_BY_ENVIRONMENT, get_resources
from service_process import free_port

PRODUCTION = ("ROUTEAQ_S3_BUCKET", "MLFLOW_TRACKING_URI", "ROUTEAQ_ONLINE_STORE", "AWS_ENDPOINT_URL")


@pytest.fixture
def production(home, monkeypatch):
    for name in PRODUCTION:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ROUTEAQ_ENV", "production")
    return monkeypatch


def test_one_mapping_holds_both_environments():
    assert set(RESOURCES_BY_ENVIRONMENT) == {"local", "production"}


def test_missing_production_settings_are_named_at_start_up(production):
    with pytest.raises(ConfigurationError) as raised:
        get_resources()
    for name in ("ROUTEAQ_S3_BUCKET", "MLFLOW_TRACKING_URI", "ROUTEAQ_ONLINE_STORE"):
        assert name in str(raised.value)


def test_a_code_location_with_missing_settings_fails_to_load_with_the_reason(home, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION} | {"ROUTEAQ_ENV": "production", "ROUTEAQ_S3_BUCKET": "routeaq-lake"}
    result = subprocess.run(
        [str(BIN / "python"), "-c", "import routeaq_assets.definitions"],  # what loading the code location does
        env=env, cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode != 0
    assert "MLFLOW_TRACKING_URI" in result.stdout + result.stderr and "ROUTEAQ_ONLINE_STORE" in result.stdout + result.stderr


def test_unreachable_services_are_named_without_their_secrets(production):
    closed = f"127.0.0.1:{free_port()}"
    for name, value in {
        "ROUTEAQ_S3_BUCKET": "routeaq-lake", "AWS_ENDPOINT_URL": f"http://{closed}", **S3_CREDENTIALS,
        "MLFLOW_TRACKING_URI": f"http://{closed}", "ROUTEAQ_ONLINE_STORE": f"redis://:hunter2@{closed}/0",
    }.items():
        production.setenv(name, value)
    with pytest.raises(RuntimeError) as raised:
        get_resources()
    message = str(raised.value)
    assert "S3 lake bucket 'routeaq-lake'" in message and "Redis online store" in message and "MLFLOW_TRACKING_URI" in message
    assert "hunter2" not in message


def test_production_resources_point_at_the_services(production, s3_endpoint, bucket, redis_target, httpserver):
    httpserver.expect_request("/health").respond_with_data("OK")  # the MLflow server's answer
    for name, value in production_env(bucket, s3_endpoint, httpserver.url_for("").rstrip("/"), redis_target).items():
        production.setenv(name, value)
    resources = get_resources()
    local = RESOURCES_BY_ENVIRONMENT["local"](load_settings())
    assert type(resources["warehouse"]).__name__ == "DeltaWarehouse" and resources["warehouse"].location == f"s3://{bucket}/routeaq/tables"
    assert type(local["warehouse"]).__name__ == "Warehouse" and type(local["online_store"].target) is str
    picked = {key: resources[key] for key in ("lake", "model_store", "online_store")}
    with dg.build_resources(picked) as built:  # resolves the EnvVars, as a run does
        assert built.lake.write_bytes("reports/x.txt", b"x") == f"s3://{bucket}/routeaq/reports/x.txt"
        assert type(built.model_store).__name__ == "TrackedModelStore" and built.model_store.tracking_uri == httpserver.url_for("").rstrip("/")
        assert built.online_store.target == redis_target


def test_the_registry_holds_the_sites_of_the_settings_at_run_time(home, monkeypatch):
    """Sites are read when the resources are built, not when the code is imported."""
    monkeypatch.setenv("ROUTEAQ_SITES", "MY1")
    defs = make_definitions(home)  # sets ROUTEAQ_SITES to the test sites, after import
    assert dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources).success
    assert sorted(defs.resources["warehouse"].query("SELECT DISTINCT site_id FROM sites")["site_id"]) == sorted(TEST_SITES)
