"""Forecasters in the MLflow model registry: log a candidate, load a version or the champion,
move the ``champion`` alias. Used by the training assets and by the service alike.

What a load reads, and how: the registry's answers (names, versions, aliases) over MLflow's
client; the model version's ``MLmodel`` file (YAML) for its metadata; and the booster from the
``lightgbm`` flavor's text file with ``lightgbm.Booster(model_file=...)``. Nothing is unpickled:
a version logged in a pickled flavor (an sklearn wrapper, cloudpickle) is refused.

A reader (``read_only=True``, the service) never creates a store: MLflow's SQL store creates a
missing SQLite file and the tables of an empty database on first use, so a reader checks that
the store exists and holds MLflow's tables first, and raises ``RegistryUnavailable`` naming the
URI (without its password) otherwise."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from routeaq_assets.adapters.redact import redact_uri
from routeaq_assets.core.models import TARGET_KIND, Forecaster

CHAMPION = "champion"
EXPERIMENT = "routeaq-forecasts"
BACKTEST_EXPERIMENT = "routeaq-backtests"
PIP_REQUIREMENTS = ["lightgbm==4.7.0", "numpy", "polars"]
# MLflow's answers for a registered model or alias that does not exist.
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
BOOSTER_CLASS = "lightgbm.basic.Booster"
# A candidate's run keeps what its promotion decision reads (``ForecastRegistry.candidate_record``).
CANDIDATE_RECORD = "candidate.json"
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


class RegistryUnavailable(Exception):
    """The configured registry does not exist or cannot be read; the message names the URI."""


def require_existing_store(tracking_uri: str) -> None:
    """Raise ``RegistryUnavailable`` unless ``tracking_uri`` names an MLflow store that exists.
    Servers (``http(s)://``) are asked when first used; SQL stores and local folders are checked
    here, without creating anything."""
    from urllib.parse import urlsplit

    shown = redact_uri(tracking_uri)
    scheme = urlsplit(tracking_uri).scheme.split("+")[0]
    if scheme == "sqlite":
        path = Path(tracking_uri.split("///", 1)[1]) if "///" in tracking_uri else None
        if path is None or not path.is_file() or path.stat().st_size == 0:
            raise RegistryUnavailable(f"no MLflow store at {shown}: train a model first, or point MLFLOW_TRACKING_URI at the registry")
    if scheme in DATABASE_SCHEMES:
        import sqlalchemy

        engine = sqlalchemy.create_engine(tracking_uri)
        try:
            with engine.connect() as connection:
                present = sqlalchemy.inspect(connection).has_table("registered_models")
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise RegistryUnavailable(f"MLflow store {shown} cannot be read: {type(exc.orig or exc).__name__}") from None
        finally:
            engine.dispose()
        if not present:
            raise RegistryUnavailable(f"{shown} holds no MLflow registry: train a model first, or point MLFLOW_TRACKING_URI at the registry")
    if scheme in ("", "file"):
        folder = Path(urlsplit(tracking_uri).path if scheme else tracking_uri)
        if not folder.is_dir():
            raise RegistryUnavailable(f"no MLflow store at {shown}: train a model first, or point MLFLOW_TRACKING_URI at the registry")


def direct_artifact(lead: int) -> str:
    """Where a candidate's run keeps the booster of a lead that has its own (``Forecaster.direct``)."""
    return f"direct/lead-{lead}.txt"


@dataclass
class RegisteredForecaster:
    name: str
    version: str
    forecaster: Forecaster
    metadata: dict[str, Any]


class ForecastRegistry:
    def __init__(self, tracking_uri: str, artifact_root: Path | None = None, read_only: bool = False):
        import mlflow
        from mlflow import MlflowClient

        if read_only:
            require_existing_store(tracking_uri)
        self._mlflow = mlflow
        self.tracking_uri = tracking_uri
        # Reading goes through this client only; the fluent API (runs, log_model), which needs the
        # process-wide tracking URI, is pointed at it when something is logged.
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.artifact_root = artifact_root

    def _fluent(self):  # noqa: ANN202 - the mlflow module
        self._mlflow.set_tracking_uri(self.tracking_uri)
        self._mlflow.set_registry_uri(self.tracking_uri)
        return self._mlflow

    def _in_run(self) -> bool:
        """Whether a run is open in this process (the Dagster run's MLflow run in production):
        what is logged then nests under it."""
        return self._mlflow.active_run() is not None

    def experiment_id(self, name: str = EXPERIMENT) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (self.artifact_root / name).resolve().as_uri() if self.artifact_root else None
        return self.client.create_experiment(name, artifact_location=location)

    def log_backtest(self, run_name: str, params: dict[str, Any], metrics: dict[str, float], artifacts: dict[str, bytes]) -> str:
        """Record a backtest: its settings, headline metrics and files (tables, plots)."""
        import tempfile

        mlflow = self._fluent()
        with mlflow.start_run(experiment_id=self.experiment_id(BACKTEST_EXPERIMENT), run_name=run_name, nested=self._in_run()) as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            with tempfile.TemporaryDirectory() as folder:
                for name, data in artifacts.items():
                    (Path(folder) / name).write_bytes(data)
                mlflow.log_artifacts(folder)
        return run.info.run_id

    def log_candidate(
        self,
        name: str,
        forecaster: Forecaster,
        *,
        params: dict[str, Any],
        metrics: dict[str, float],
        metadata: dict[str, Any],
        example: pl.DataFrame,
        run_name: str,
        record: dict[str, Any],
        tags: dict[str, str] | None = None,
    ) -> tuple[str, str]:
        """Log the booster, its parameters and held-out metrics, register a new version. ``record``
        is what the promotion decision reads (``candidate_record``), kept in the run as JSON.

        Returns (run_id, version)."""
        import mlflow.lightgbm
        from mlflow.models import infer_signature

        from routeaq_assets.core.features import feature_matrix

        mlflow = self._fluent()
        full_metadata = {**metadata, **forecaster.metadata()}
        with mlflow.start_run(experiment_id=self.experiment_id(), run_name=run_name, tags=tags or {}, nested=self._in_run()) as run:
            mlflow.log_params({k: v for k, v in params.items() if not isinstance(v, (dict, list))})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            mlflow.log_dict(full_metadata, "forecaster.json")
            mlflow.log_dict(record, CANDIDATE_RECORD)
            for lead, booster in sorted(forecaster.direct.items()):  # a lead's own booster, in LightGBM's text form too
                mlflow.log_text(booster.model_to_string(), direct_artifact(lead))
            x = feature_matrix(example.head(5), forecaster.feature_names)
            signature = infer_signature(
                pl.DataFrame(x, schema=list(forecaster.feature_names), orient="row").to_pandas(),
                forecaster.booster.predict(x),
            )
            info = mlflow.lightgbm.log_model(
                forecaster.booster,
                name="model",
                registered_model_name=name,
                signature=signature,
                pip_requirements=PIP_REQUIREMENTS,
                metadata=full_metadata,
            )
        version = str(info.registered_model_version)
        for key, value in (tags or {}).items():
            self.client.set_model_version_tag(name, version, key, value)
        return run.info.run_id, version

    def candidate_record(self, name: str, version: str) -> dict[str, Any]:
        """What the promotion decision reads about registered version ``version`` of ``name``, from
        the run that logged it: the ``record`` given to ``log_candidate`` (held-out scores per lead
        as ``by_lead``, keyed by int, ``interval_coverage``, the training ``config``, the champion
        compared as ``champion_version`` and ``champion_refused``, the window), with ``model_name``,
        ``version`` and ``run_id``. Raises ``LookupError`` naming the version when it is not
        registered or its run keeps no record."""
        from mlflow.exceptions import MlflowException

        shown = redact_uri(self.tracking_uri)
        try:
            mv = self.client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code in NOT_FOUND:
                raise LookupError(f"{name} v{version} is not registered in {shown}") from None
            raise
        try:
            local = self._mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=CANDIDATE_RECORD, tracking_uri=self.tracking_uri)
        except MlflowException as exc:
            if exc.error_code in NOT_FOUND:
                raise LookupError(f"the run {mv.run_id} of {name} v{version} in {shown} keeps no {CANDIDATE_RECORD}: train a new candidate") from None
            raise
        record = json.loads(Path(local).read_text())
        return {
            **record,
            "by_lead": {int(h): m for h, m in record["by_lead"].items()},
            "model_name": name,
            "version": str(mv.version),
            "run_id": mv.run_id,
        }

    def load(self, name: str, version: str | None = None) -> RegisteredForecaster | None:
        """A registered version, or the champion when ``version`` is None (None if there is none)."""
        import lightgbm
        from mlflow.exceptions import MlflowException

        try:
            mv = (
                self.client.get_model_version_by_alias(name, CHAMPION)
                if version is None
                else self.client.get_model_version(name, version)
            )
        except MlflowException as exc:
            if exc.error_code in NOT_FOUND:
                return None
            raise
        uri = self.client.get_model_version_download_uri(name, mv.version)
        local = self._mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=self.tracking_uri)
        mlmodel = self._mlflow.models.Model.load(Path(local) / "MLmodel")
        flavor = mlmodel.flavors.get("lightgbm") or {}
        if flavor.get("model_class", BOOSTER_CLASS) != BOOSTER_CLASS or not flavor.get("data"):
            raise ValueError(f"{name} v{mv.version} is not a LightGBM booster in text form ({flavor.get('model_class')!r}): refusing to unpickle it")
        booster = lightgbm.Booster(model_file=str(Path(local) / flavor["data"]))
        metadata = json.loads(json.dumps(mlmodel.metadata or {}))
        if metadata.get("target_kind") != TARGET_KIND:
            raise ValueError(f"{name} v{mv.version} predicts {metadata.get('target_kind')!r}, this code serves {TARGET_KIND!r}: retrain it")
        direct = {
            int(lead): lightgbm.Booster(
                model_file=self._mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=direct_artifact(lead), tracking_uri=self.tracking_uri)
            )
            for lead in metadata.get("direct_leads", [])
        }
        forecaster = Forecaster(
            booster=booster,
            direct=direct,
            quantiles={(int(lead), int(level_bin)): (float(lo), float(hi)) for lead, level_bin, lo, hi in metadata.get("interval_quantiles", [])},
            level_edges={int(lead): tuple(float(e) for e in edges) for lead, edges in metadata.get("level_edges", {}).items()},
            leads=tuple(int(h) for h in metadata.get("leads", [1])),
            q_lower=float(metadata["q_lower"]),
            q_upper=float(metadata["q_upper"]),
            coverage=float(metadata["coverage"]),
            feature_names=tuple(metadata["feature_names"]),
        )
        return RegisteredForecaster(name=name, version=str(mv.version), forecaster=forecaster, metadata=metadata)

    def _champion(self, name: str):  # noqa: ANN202 - an MLflow ModelVersion
        """The model version holding the champion alias; None when the model or alias does not
        exist. Any other failure (an unreachable server) raises."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException as exc:
            if exc.error_code in NOT_FOUND:
                return None
            raise

    def champion_version(self, name: str) -> str | None:
        """The champion's version; None when the model or alias does not exist."""
        mv = self._champion(name)
        return str(mv.version) if mv is not None else None

    def champion_trained_until(self, name: str) -> tuple[str | None, datetime | None]:
        """The champion's version and the end of the newest hour it trained on (its run's
        ``holdout_end``, which is exclusive); (None, None) when the model or alias does not exist."""
        mv = self._champion(name)
        if mv is None:
            return None, None
        return str(mv.version), datetime.fromisoformat(self.client.get_run(mv.run_id).data.params["holdout_end"])

    def champions(self, prefix: str) -> dict[str, str]:
        """The champion version of every registered model whose name starts with ``prefix-``,
        in one query (models without a champion are left out)."""
        models = self.client.search_registered_models(filter_string=f"name LIKE '{prefix}-%'")
        return {m.name: str(m.aliases[CHAMPION]) for m in models if CHAMPION in (m.aliases or {})}

    def promote(self, name: str, version: str, reason: str) -> None:
        self.client.set_registered_model_alias(name, CHAMPION, version)
        self.client.set_model_version_tag(name, version, "promotion", "promoted")
        self.client.set_model_version_tag(name, version, "promotion_reason", reason)

    def record_rejection(self, name: str, version: str, reason: str) -> None:
        self.client.set_model_version_tag(name, version, "promotion", "rejected")
        self.client.set_model_version_tag(name, version, "promotion_reason", reason)
