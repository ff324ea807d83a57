"""The model registry as a resource: the MLflow tracking server the training assets log to and
the service loads from (production's is ``production.TrackedModelStore``)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from routeaq_assets.adapters.registry import ForecastRegistry
from routeaq_assets.core.environment import MODEL_PREFIX


class ModelStore(dg.ConfigurableResource):
    """The MLflow tracking server and model registry."""

    tracking_uri: str
    artifact_root: str = ""
    prefix: str = MODEL_PREFIX

    def registry(self) -> ForecastRegistry:
        return ForecastRegistry(self.tracking_uri, Path(self.artifact_root) if self.artifact_root else None)
