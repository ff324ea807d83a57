"""The production resources (``ROUTEAQ_ENV=production``): the lake on S3 through dagster-aws (the
warehouse's tables in Delta Lake),
the model registry on an MLflow tracking server through dagster-mlflow, the online store on
Redis and the service's yearly history files in the lake's bucket. Dagster's own storage is
PostgreSQL, set by the instance (``deploy/dagster.yaml``).

Building them checks that every service answers: a deployment with a missing variable or an
unreachable service fails when the code location loads, with an error that names the service."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from routeaq_assets.adapters.registry import EXPERIMENT
from routeaq_assets.adapters.shared import SharedFolder
from routeaq_assets.adapters.stores import HistoryStore
from routeaq_assets.core.environment import ConfigurationError, Settings
from routeaq_assets.adapters.redact import redact_uri, scrub
from routeaq_assets.core.shared_folders import HISTORY
from routeaq_assets.model_store import ModelStore
from routeaq_assets.online_store import OnlineStore
from routeaq_assets.storage import DeltaWarehouse, S3Lake

CHECK_TIMEOUT_S = 5.0


class ServiceUnreachable(RuntimeError):
    """A production service did not answer at start-up; the message names each one."""


class TrackedModelStore(ModelStore):
    """The model registry on an MLflow tracking server, with each Dagster run's MLflow runs grouped.

    dagster-mlflow's ``mlflow_tracking`` is an old-style resource (a function of the init
    context), so it is wrapped rather than exposed: when a run starts, it opens one MLflow run
    per Dagster run (tagged ``dagster_run_id`` and named for the job, found again by any step
    process of the same run), and every candidate or backtest the run logs is nested under it.
    The resource's teardown ends that MLflow run, which is what dagster-mlflow's
    ``end_mlflow_on_run_finished`` hook would do, without adding the hook to every job."""

    experiment_name: str = EXPERIMENT
    _tracking: object = PrivateAttr(default=None)
    _run: object = PrivateAttr(default=None)  # dagster-mlflow's MlFlow of this Dagster run

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.dagster_run is None:  # built outside a run (a test's resource context)
            return
        from dagster_mlflow import mlflow_tracking

        tracking_context = SimpleNamespace(
            log=context.log,
            dagster_run=context.dagster_run,
            run_id=context.dagster_run.run_id,
            resource_config={
                "experiment_name": self.experiment_name,
                "mlflow_tracking_uri": self.tracking_uri,
                "parent_run_id": None,
                "mlflow_run_id": None,
                "env": {},
                "env_to_tag": None,
                "extra_tags": {"routeaq_job": context.dagster_run.job_name},
            },
        )
        self._tracking = mlflow_tracking.resource_fn(tracking_context)  # a generator resource: set up, yield, clean up
        self._run = next(self._tracking)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._run is not None:
            self._run.end_run()
            next(self._tracking, None)


class SharedOnlineStore(OnlineStore):
    """The online store, with the yearly history files written to the lake's bucket
    (``{prefix}/history/``), where every service pod finds them, instead of a local folder."""

    s3: S3Resource
    bucket: str
    prefix: str = "routeaq"

    def history(self) -> HistoryStore:
        return HistoryStore(Path(self.history_folder), SharedFolder(self.s3.get_client(), self.bucket, f"{self.prefix}/{HISTORY}"))


def s3_resource(settings: Settings) -> S3Resource:
    """dagster-aws's S3 resource. Credentials come from the environment as ``dg.EnvVar`` (never
    written into the definitions); absent, boto3's default chain (an IAM role) supplies them."""
    credentials = {
        field: dg.EnvVar(variable)
        for field, variable in (("aws_access_key_id", "AWS_ACCESS_KEY_ID"), ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"))
        if os.environ.get(variable)
    }
    return S3Resource(region_name=settings.aws_region, endpoint_url=settings.s3_endpoint_url or None, max_attempts=3, **credentials)


def check_services(settings: Settings) -> None:
    """Ask each production service for a sign of life; raise one error naming all that failed."""
    import boto3
    import redis
    import requests
    from botocore.config import Config

    problems = []
    try:
        boto3.client(
            "s3",
            region_name=settings.aws_region,
            endpoint_url=settings.s3_endpoint_url or None,
            config=Config(connect_timeout=CHECK_TIMEOUT_S, read_timeout=CHECK_TIMEOUT_S, retries={"max_attempts": 1}),
        ).head_bucket(Bucket=settings.s3_bucket)
    except Exception as exc:  # any failure is reported, with the service it came from
        where = settings.s3_endpoint_url or "AWS"
        problems.append(f"S3 lake bucket {settings.s3_bucket!r} at {where} (ROUTEAQ_S3_BUCKET, AWS_ENDPOINT_URL): {type(exc).__name__}: {exc}")
    try:
        redis.Redis.from_url(settings.online_store, socket_connect_timeout=CHECK_TIMEOUT_S, socket_timeout=CHECK_TIMEOUT_S).ping()
    except Exception as exc:
        problems.append(f"Redis online store at {redact_uri(settings.online_store)} (ROUTEAQ_ONLINE_STORE): {type(exc).__name__}: {scrub(str(exc), settings.online_store)}")
    tracking = settings.mlflow_tracking_uri.rstrip("/")
    try:
        answer = requests.get(f"{tracking}/health", timeout=CHECK_TIMEOUT_S)
        if answer.status_code != 200:
            raise ConnectionError(f"/health answered HTTP {answer.status_code}")
    except Exception as exc:
        problems.append(f"MLflow tracking server at {redact_uri(tracking)} (MLFLOW_TRACKING_URI): {type(exc).__name__}: {scrub(str(exc), tracking)}")
    if problems:
        raise ServiceUnreachable("ROUTEAQ_ENV=production: these services do not answer:\n- " + "\n- ".join(problems))


def production_stores(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The warehouse, lake, model store and online store of production (the sources are the same
    in every environment: ``environments.source_resources``)."""
    missing = settings.missing_production_settings()
    if missing:
        raise ConfigurationError("ROUTEAQ_ENV=production needs these settings:\n- " + "\n- ".join(missing))
    check_services(settings)
    s3 = s3_resource(settings)
    return {
        "warehouse": DeltaWarehouse(location=f"s3://{settings.s3_bucket}/{settings.s3_prefix}/tables", s3=s3),
        "lake": S3Lake(s3=s3, bucket=settings.s3_bucket, prefix=settings.s3_prefix),
        "model_store": TrackedModelStore(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"), prefix=settings.model_prefix),
        "online_store": SharedOnlineStore(
            target=dg.EnvVar("ROUTEAQ_ONLINE_STORE"), history_folder=str(settings.history_dir), s3=s3, bucket=settings.s3_bucket, prefix=settings.s3_prefix
        ),
    }
