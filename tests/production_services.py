"""Real services for the production-mode tests: a moto S3 server, a fresh PostgreSQL database,
a Redis key of its own, and an ``mlflow server`` on that database and S3. Each is started (or
created) by the fixture and stopped (or dropped) after."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import psycopg2
import pytest
import redis

from service_process import free_port, stop, wait_for_answer

BIN = Path(sys.executable).parent
PG = dict(host="127.0.0.1", port=5432, user="postgres")
REDIS = "redis://127.0.0.1:6379/0"
# moto accepts any credentials; set them so boto3 and the MLflow server never look elsewhere.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "routeaq-test", "AWS_SECRET_ACCESS_KEY": "routeaq-test-secret", "AWS_REGION": "us-east-1"}


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory) -> str:
    """A moto S3 server in a process of its own: delta-rs holds the GIL through some calls (a
    table's history), so a server thread in this process would wait for the call waiting for it."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    if not wait_for_answer(server, f"{endpoint}/moto-api/", log, "moto_server", 30):
        pytest.fail("moto_server exited: " + log.read_text()[-3000:])
    yield endpoint
    stop(server)


def s3_client(endpoint: str):  # noqa: ANN201 - a boto3 S3 client
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"], aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def bucket(s3_endpoint) -> str:
    name = unique("routeaq-lake")
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def new_database():
    """Creates uniquely named PostgreSQL databases on request; drops them after the test."""
    try:
        admin = psycopg2.connect(dbname="postgres", **PG)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is expected on 127.0.0.1:5432: {exc}")
    admin.autocommit = True
    created = []

    def create() -> str:
        name = f"routeaq_{uuid.uuid4().hex[:10]}"
        admin.cursor().execute(f"CREATE DATABASE {name}")
        created.append(name)
        return name

    yield create
    for name in created:
        admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


@pytest.fixture
def postgres_database(new_database) -> str:
    return new_database()


@pytest.fixture
def redis_target():
    """The online store's address with a key of this test's own, removed after."""
    key = unique("routeaq-test:online")
    client = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is expected on 127.0.0.1:6379: {exc}")
    yield f"{REDIS}#{key}"
    client.delete(key, f"{key}:version")


def start_mlflow_server(database: str, s3_endpoint: str, bucket: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` with its backend store in ``database`` and artifacts in the bucket,
    served through the server (clients need no S3 credentials)."""
    port = free_port()
    env = {**os.environ, **S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
         "--artifacts-destination", f"s3://{bucket}/mlflow"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_for_answer(process, f"{url}/health", log, "mlflow server", 90, ready=200):
        pytest.fail("mlflow server exited: " + log.read_text()[-3000:])
    return process, url


def production_env(bucket: str, s3_endpoint: str, tracking_uri: str, online_target: str) -> dict[str, str]:
    return {
        **S3_CREDENTIALS,
        "ROUTEAQ_ENV": "production",
        "ROUTEAQ_S3_BUCKET": bucket,
        "ROUTEAQ_S3_PREFIX": "routeaq",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "ROUTEAQ_ONLINE_STORE": online_target,
    }
