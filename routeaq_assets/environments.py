"""The one mapping from environment to resources: which class serves each outside system, with
what settings. ``ROUTEAQ_ENV`` picks the stores (``local``: embedded files; ``production``: S3,
MLflow and Redis, in ``production.py``) and ``ROUTEAQ_SOURCE`` picks the observation and weather
sources, the same in every environment. Nothing else chooses a resource class."""

from __future__ import annotations

import dagster as dg

from routeaq_assets.core.environment import ConfigurationError, Settings, load_settings, require_writable_home
from routeaq_assets.lake import LocalLake
from routeaq_assets.model_store import ModelStore
from routeaq_assets.observation_sources import (
    DemoObservations,
    LocalObservations,
    ObservationSource,
    OpenairObservations,
    UkairObservations,
)
from routeaq_assets.online_store import OnlineStore
from routeaq_assets.warehouse import Warehouse
from routeaq_assets.weather_sources import DemoWeather, LocalWeather, OpenMeteoWeather, WeatherSource

# ROUTEAQ_SOURCE -> the observation source and the weather source that go with it.
OBSERVATION_SOURCES: dict[str, type[ObservationSource]] = {
    "demo": DemoObservations,
    "openair": OpenairObservations,
    "ukair": UkairObservations,
    "local": LocalObservations,
}
WEATHER_SOURCES: dict[str, type[WeatherSource]] = {
    "demo": DemoWeather,
    "openair": OpenMeteoWeather,
    "ukair": OpenMeteoWeather,
    "local": LocalWeather,
}


def _source_folder(settings: Settings) -> str:
    """Where the observation and weather sources read: the demo network, the user's folder, or
    the download cache of the HTTP sources."""
    if settings.source == "demo":
        return str(settings.demo_network_root)
    if settings.source == "local":
        return str(settings.source_folder)
    return str(settings.home / "sources")


def _source_class(classes: dict[str, type], settings: Settings, what: str) -> type:
    try:
        return classes[settings.source]
    except KeyError:
        raise ConfigurationError(f"ROUTEAQ_SOURCE={settings.source!r} has no {what} source: use one of {sorted(classes)}") from None


def source_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The observation and weather sources: the same in every environment."""
    observations = _source_class(OBSERVATION_SOURCES, settings, "observation")
    weather = _source_class(WEATHER_SOURCES, settings, "weather")
    folder = _source_folder(settings)
    # The demo network writes measurements and weather together: both take the injected shift.
    shift = {"demo_shift": settings.demo_shift} if settings.source == "demo" else {}
    return {
        "observations": observations(
            folder=folder, sites=list(settings.sites), live=settings.live, live_hours=settings.live_hours, live_url=settings.live_url, **shift
        ),
        "weather": weather(folder=folder, **shift),
    }


def local_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        **source_resources(settings),
        "warehouse": Warehouse(path=str(settings.warehouse_path)),
        "model_store": ModelStore(
            tracking_uri=settings.mlflow_tracking_uri, artifact_root=str(settings.home / "mlflow" / "artifacts"), prefix=settings.model_prefix
        ),
        "lake": LocalLake(root=str(settings.lake_root)),
        "online_store": OnlineStore(target=settings.online_store_target, history_folder=str(settings.history_dir)),
    }


def production_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    # Imported here: the production parts (dagster-aws, boto3, dagster-mlflow) load only in production.
    from routeaq_assets.production import production_stores

    stores = production_stores(settings)  # refuses missing settings and unreachable services first
    return {**source_resources(settings), **stores}


RESOURCES_BY_ENVIRONMENT = {"local": local_resources, "production": production_resources}


def get_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources of the environment ``ROUTEAQ_ENV`` names. In production this checks that every
    service answers, so a deployment with a missing or unreachable service fails at start-up."""
    settings = settings or load_settings()
    require_writable_home(settings.home)
    return RESOURCES_BY_ENVIRONMENT[settings.environment](settings)
