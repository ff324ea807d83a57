"""Shared fixtures: an isolated RouteAQ home per test, and one trained home per session."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

# Partitions are declared when the definitions load: the suite's reach back to the real 2017 files,
# whatever a demo wrote into the developer's .routeaq (core.environment.partitions_start).
os.environ["ROUTEAQ_PARTITIONS_START"] = "2015-01-01-00:00"
# OpenMP threads (LightGBM) sleep rather than spin while they wait; on two workers each worker,
# and each process it starts, trains and predicts on one thread: two workers fill two cores
# without the threads of one spinning on the core the other needs.
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from routeaq_assets.core.environment import load_settings  # noqa: E402 - after the partitions' start
from routeaq_assets.environments import local_resources  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEST_SITES = ["CLL2", "MY1", "MAN3"]
# A short window ending where the demo ends: enough for a held-out week and a trained model.
WINDOW_END = datetime(2025, 8, 1, 12, tzinfo=timezone.utc)
WINDOW_START = WINDOW_END - timedelta(days=24)


def partition_key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


def home_env(home: Path) -> dict[str, str]:
    """Environment for a RouteAQ home: data, Dagster instance, BentoML's home and sites."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        (dagster_home / "dagster.yaml").symlink_to(REPO / "dagster.yaml")
    return {
        "ROUTEAQ_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "ROUTEAQ_SITES": ",".join(TEST_SITES),
        "OMP_WAIT_POLICY": "PASSIVE",
        # bentoml serve keeps its Prometheus files in $BENTOML_HOME/prometheus_multiproc_dir and
        # clears it at start: two services sharing it (two test workers) lose each other's metrics.
        "BENTOML_HOME": str(home / "bentoml"),
    }


def make_definitions(home: Path, **overrides) -> dg.Definitions:
    from routeaq_assets.definitions import build_definitions

    os.environ.update(home_env(home))
    resources = local_resources(load_settings())
    resources.update(overrides)
    return build_definitions(resources)


SITES_CONFIG = {"ops": {"site_registry": {"config": {"sites": TEST_SITES}}}}
# Three weeks of three sites give about 500 held-out hours: the coverage gate gets a wider band.
TRAIN_CONFIG = {"ops": {f"{p}_candidate": {"config": {"coverage_tolerance": 0.1}} for p in ("pm25", "pm10", "no2", "o3")}}


def run_pipeline(home: Path, start: datetime = WINDOW_START, end: datetime = WINDOW_END, train: bool = True) -> dg.Definitions:
    """Registry, a single-run backfill of [start, end), then (optionally) the training job."""
    defs = make_definitions(home)
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, run_config=SITES_CONFIG, instance=instance).success
    ingest = defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": partition_key(start),
            "dagster/asset_partition_range_end": partition_key(end - timedelta(hours=1)),
        },
    )
    assert ingest.success
    if train:
        assert defs.resolve_job_def("train_job").execute_in_process(instance=instance, run_config=TRAIN_CONFIG).success
    return defs


def copy_home(trained_home: Path, into: Path) -> Path:
    """A home of the test's own with everything of the trained home: a test that writes (trains,
    serves and logs, changes the registry) works on a copy, so the suite passes in any order."""
    home = into / "routeaq"
    shutil.copytree(trained_home, home, symlinks=True)
    return home


# The fast tier (``make test-fast``): everything but the tests that train (the trained home, or a
# pipeline of their own) or start processes (bentoml serve, the Dagster CLI, servers).
SLOW_FIXTURES = {"trained_home", "local_home", "production_stack"}
SLOW_MODULES = {
    "test_e2e", "test_dagster_ui", "test_production", "test_production_shared", "test_production_settings", "test_monitoring_loop",
    "test_monitoring_drift", "test_reliability", "test_page", "test_assets", "test_evaluation", "test_progress",
}


# The files of a minute or more (two workers, 2026-12-05), longest first. The first two keep both
# workers busy from the start: test_production builds its own stack while test_dagster_ui's
# worker builds the shared trained home.
LONGEST_FILES = ("test_production", "test_dagster_ui", "test_reliability", "test_e2e", "test_monitoring_loop", "test_subscriptions", "test_evaluation")


def pytest_itemcollected(item):
    """Mark the slow tests as they are collected (before ``-m "not slow"`` deselects by the
    marks): those of ``SLOW_MODULES``, those using ``SLOW_FIXTURES``, and the end-to-end ones."""
    if item.module.__name__ in SLOW_MODULES or SLOW_FIXTURES & set(item.fixturenames) or item.get_closest_marker("e2e"):
        item.add_marker(pytest.mark.slow)


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle, which it keeps within each group
def pytest_collection_modifyitems(items):
    """Order the files for ``make test``, which hands whole files to two workers in this order:
    the longest files first, then the other files that hold a slow test, then the rest (a long
    file started last would leave one worker idle)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item) -> tuple[int, int]:
        name = item.module.__name__
        return (0, LONGEST_FILES.index(name)) if name in LONGEST_FILES else (1 if item.path in slow_files else 2, 0)

    items.sort(key=rank)  # stable: the files of a group, and each file's tests, keep pytest-randomly's order


@pytest.fixture(autouse=True)
def no_inherited_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in the process environment; without
    this, a test would read the MLflow store of the test that logged before it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    for key, value in home_env(tmp_path / "routeaq").items():
        monkeypatch.setenv(key, value)
    return tmp_path / "routeaq"


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory) -> Path:
    """One home with ingested data and promoted champions (each forecasting 1 to 48 hours ahead),
    shared by read-only tests. Under pytest-xdist the workers share one: the first to need it
    builds it under a file lock, the others wait and read it (training twice would cost each
    worker the other's CPU)."""
    from routeaq_assets.adapters.locks import file_lock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    built, home = root / "trained" / "built", root / "trained" / "routeaq"
    with file_lock(root / "trained.lock", exclusive=True, timeout_s=1800, what="the suite's trained home"):
        if not built.exists():
            shutil.rmtree(home, ignore_errors=True)  # what a worker that failed to build left
            saved = dict(os.environ)
            try:
                os.environ.pop("MLFLOW_TRACKING_URI", None)  # set by whichever test logged before this one
                run_pipeline(home)
            finally:
                os.environ.clear()
                os.environ.update(saved)
            built.touch()
    return home


def register_candidate(defs: dg.Definitions, instance: dg.DagsterInstance, pollutant: str, record: dict) -> str:
    """A candidate as ``{pollutant}_candidate`` leaves one, with the promotion ``record`` given: the
    champion's forecaster registered again as a new version whose MLflow run keeps ``record``, and
    a materialization of ``{pollutant}_candidate`` in ``instance`` naming that version."""
    name = f"routeaq-{pollutant}"
    registry = defs.resources["model_store"].registry()
    champion = registry.load(name)
    holdout_start, holdout_end = (datetime.fromisoformat(champion.metadata[k]) for k in ("holdout_start", "holdout_end"))
    example = defs.resources["warehouse"].stored_features(pollutant, holdout_start, holdout_end, (1, 24))
    _, version = registry.log_candidate(
        name, champion.forecaster, params={}, metrics={}, metadata=champion.metadata, example=example, run_name=f"{pollutant}-given", record=record
    )
    instance.report_runless_asset_event(dg.AssetMaterialization(f"{pollutant}_candidate", metadata={"model_name": name, "model_version": version}))
    return version
