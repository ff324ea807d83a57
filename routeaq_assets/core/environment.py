"""The one place that reads deployment settings from the environment.

With no variable set, everything is embedded under ``ROUTEAQ_HOME`` (default ``./.routeaq``):
a DuckDB warehouse, a local lake folder, a SQLite MLflow store, the online feature file and
the prediction log. ``ROUTEAQ_ENV=production`` switches to the production parts, whose
addresses come from their own variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DEMO_SITES = ("CLL2", "MY1", "MAN3", "BIRR", "CARD", "LEED")
SOURCES = ("demo", "openair", "ukair", "local")
MODEL_PREFIX = "routeaq"


def model_name(pollutant: str, prefix: str = MODEL_PREFIX, horizon: int = 1) -> str:
    """The registered MLflow model of a pollutant and horizon: ``routeaq-pm25`` for the served
    one-hour model, ``routeaq-pm25-6h`` for six hours ahead."""
    return f"{prefix}-{pollutant}" if horizon == 1 else f"{prefix}-{pollutant}-{horizon}h"


def get_environment() -> str:
    env = os.environ.get("ROUTEAQ_ENV", "local").strip().lower()
    if env not in ("local", "production"):
        raise ValueError(f"ROUTEAQ_ENV must be 'local' or 'production', got {env!r}")
    return env


@dataclass(frozen=True)
class Settings:
    home: Path
    sites: tuple[str, ...]
    source: str
    mlflow_tracking_uri: str
    source_folder: Path | None = None
    online_store: str = ""
    model_prefix: str = MODEL_PREFIX
    webhook_url: str = field(default="", repr=False)  # alerts; off when empty
    webhook_token: str = field(default="", repr=False)
    demo_shift: str = ""  # an injected shift of the demo network (sources.demo_network.Shift.parse)

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def lake_root(self) -> Path:
        return self.home / "lake"

    @property
    def demo_network_root(self) -> Path:
        return self.home / "demo_network"

    @property
    def online_features_path(self) -> Path:
        return self.home / "online" / "features.parquet"

    @property
    def online_store_target(self) -> str:
        """``redis://...`` in production, else the embedded Parquet file."""
        return self.online_store or str(self.online_features_path)

    @property
    def history_dir(self) -> Path:
        return self.home / "offline"

    @property
    def prediction_log_dir(self) -> Path:
        return self.home / "predictions"

    def model_name(self, pollutant: str, horizon: int = 1) -> str:
        return model_name(pollutant, self.model_prefix, horizon)


def load_settings() -> Settings:
    home = Path(os.environ.get("ROUTEAQ_HOME", ".routeaq")).resolve()
    sites_env = os.environ.get("ROUTEAQ_SITES", "").strip()
    sites = tuple(s.strip().upper() for s in sites_env.split(",") if s.strip()) or DEFAULT_DEMO_SITES
    source = os.environ.get("ROUTEAQ_SOURCE", "demo").strip().lower()
    if source not in SOURCES:
        raise ValueError(f"ROUTEAQ_SOURCE must be one of {SOURCES}, got {source!r}")
    folder = os.environ.get("ROUTEAQ_SOURCE_FOLDER", "").strip()
    if source == "local" and not folder:
        raise ValueError("ROUTEAQ_SOURCE=local needs ROUTEAQ_SOURCE_FOLDER: the folder of openair-format tables")
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    return Settings(
        home=home,
        sites=sites,
        source=source,
        mlflow_tracking_uri=tracking,
        source_folder=Path(folder).resolve() if folder else None,
        online_store=os.environ.get("ROUTEAQ_ONLINE_STORE", "").strip(),
        webhook_url=os.environ.get("ROUTEAQ_WEBHOOK_URL", "").strip(),
        webhook_token=os.environ.get("ROUTEAQ_WEBHOOK_TOKEN", "").strip(),
        demo_shift=os.environ.get("ROUTEAQ_DEMO_SHIFT", "").strip(),
    )
