"""The production Dagster instance (deploy/dagster.yaml) against the real PostgreSQL here."""

import shutil
import uuid

import dagster as dg
import psycopg2
import pytest

from conftest import REPO, SITES_CONFIG, make_definitions

PG = {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "postgres", "DAGSTER_PG_PASSWORD": ""}


@pytest.fixture
def postgres_database():
    name = f"routeaq_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is expected on 127.0.0.1:5432: {exc}")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    yield name
    admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


def test_runs_and_materializations_are_stored_in_postgres(home, tmp_path, monkeypatch, postgres_database):
    for key, value in {**PG, "DAGSTER_PG_DB": postgres_database}.items():
        monkeypatch.setenv(key, value)
    instance_home = tmp_path / "dagster-prod"
    instance_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", instance_home / "dagster.yaml")
    defs = make_definitions(home)
    with dg.DagsterInstance.from_config(str(instance_home)) as instance:
        result = dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, run_config=SITES_CONFIG, instance=instance)
        assert result.success
    with psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=postgres_database) as con:
        cursor = con.cursor()
        cursor.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
        assert cursor.fetchone()[0] == 1
        cursor.execute("SELECT count(*) FROM event_logs WHERE asset_key LIKE '%site_registry%' AND dagster_event_type = 'ASSET_MATERIALIZATION'")
        assert cursor.fetchone()[0] == 1
