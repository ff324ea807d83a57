"""The one place that reads deployment settings from the environment.

With no variable set, everything is embedded under ``ROUTEAQ_HOME`` (default ``./.routeaq``):
a DuckDB warehouse, a local lake folder, a SQLite MLflow store, the online feature file, the
yearly history files and the prediction log. ``ROUTEAQ_ENV=production`` switches to the production parts, whose
addresses come from their own variables (``PRODUCTION_VARIABLES``). Settings are read when a
process starts its work (``load_settings()``), never when a module is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

DEFAULT_DEMO_SITES = ("CLL2", "MY1", "MAN3", "BIRR", "CARD", "LEED")
SOURCES = ("demo", "openair", "ukair", "local")
LIVE_SOURCES = ("", "sos")
MODEL_PREFIX = "routeaq"
ENVIRONMENTS = ("local", "production")
# What production needs, and what each variable points at (named in start-up errors).
PRODUCTION_VARIABLES = {
    "ROUTEAQ_S3_BUCKET": "the S3 bucket of the lake (observations, weather, features, reports)",
    "MLFLOW_TRACKING_URI": "the MLflow tracking server, http(s)://host:port",
    "ROUTEAQ_ONLINE_STORE": "the Redis online store, redis://host:6379/0",
}
# Read where set, never required: the lake's key prefix, an S3-compatible endpoint and the AWS
# credentials (absent on a pod with an IAM role: boto3's default chain finds them).
PRODUCTION_OPTIONAL_VARIABLES = ("ROUTEAQ_S3_PREFIX", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


class ConfigurationError(ValueError):
    """A deployment setting that is missing or malformed; the message names the variable."""


def model_name(pollutant: str, prefix: str = MODEL_PREFIX) -> str:
    """The registered MLflow model of a pollutant (``routeaq-pm25``): one model serves every hour
    ahead."""
    return f"{prefix}-{pollutant}"


DEFAULT_PARTITIONS_START = "2015-01-01-00:00"  # the openair archives reach back this far for most sites
PARTITIONS_START_FILE = "partitions_start"  # in ROUTEAQ_HOME: the demo's window start, written by the demo


def partitions_start() -> str:
    """The first hourly partition (UTC, ``YYYY-MM-DD-HH:MM``): ``ROUTEAQ_PARTITIONS_START`` (that
    form, or a date), else the first hour of the window the demo backfilled into this home
    (``$ROUTEAQ_HOME/partitions_start``), else 2015-01-01. Read when the definitions load, so that
    the Dagster UI counts and fills partitions from where the data starts."""
    given = os.environ.get("ROUTEAQ_PARTITIONS_START", "").strip()
    written = Path(os.environ.get("ROUTEAQ_HOME", ".routeaq")) / PARTITIONS_START_FILE
    value = given or (written.read_text().strip() if written.is_file() else DEFAULT_PARTITIONS_START)
    for form in ("%Y-%m-%d-%H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, form).strftime("%Y-%m-%d-%H:%M")
        except ValueError:
            continue
    where = "ROUTEAQ_PARTITIONS_START" if given else str(written)
    raise ConfigurationError(f"{where} must be an hour as YYYY-MM-DD-HH:MM (UTC) or a date, got {value!r}")


def get_environment() -> str:
    env = os.environ.get("ROUTEAQ_ENV", "local").strip().lower()
    if env not in ENVIRONMENTS:
        raise ConfigurationError(f"ROUTEAQ_ENV must be 'local' or 'production', got {env!r}")
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
    live: str = ""  # "sos": the last live_hours hours from the UK-AIR SOS, older ones from the archives
    live_hours: int = 48
    live_url: str = ""  # empty: the UK-AIR service's published address
    environment: str = "local"
    refresh_seconds: float = 30.0  # how often the service looks for a new champion or history
    # production: how often the service closes its prediction-log chunk and ships it to S3
    prediction_flush_seconds: float = 60.0
    s3_bucket: str = ""
    s3_prefix: str = "routeaq"
    s3_endpoint_url: str = ""  # an S3-compatible server (MinIO, moto); empty for AWS itself
    aws_region: str = "us-east-1"

    @property
    def lake_uri(self) -> str:
        return f"s3://{self.s3_bucket}/{self.s3_prefix}"

    def missing_production_settings(self) -> list[str]:
        """The production variables that are unset, each with what it points at."""
        values = {"ROUTEAQ_S3_BUCKET": self.s3_bucket, "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", ""), "ROUTEAQ_ONLINE_STORE": self.online_store}
        missing = [f"{name} ({meaning})" for name, meaning in PRODUCTION_VARIABLES.items() if not values[name]]
        if self.online_store and not self.online_store.startswith(("redis://", "rediss://")):
            missing.append(f"ROUTEAQ_ONLINE_STORE must be redis://... in production, got {self.online_store!r}")
        if values["MLFLOW_TRACKING_URI"] and not values["MLFLOW_TRACKING_URI"].startswith(("http://", "https://")):
            missing.append(f"MLFLOW_TRACKING_URI must be an MLflow server (http://...) in production, got {values['MLFLOW_TRACKING_URI']!r}")
        return missing
    webhook_url: str = field(default="", repr=False)  # alerts; off when empty
    webhook_token: str = field(default="", repr=False)
    pushgateway_url: str = field(default="", repr=False)  # the batch stage's metrics; off when empty
    # Where people reach the forecast service: the Dagster UI links reports and plots to it.
    service_url: str = "http://localhost:8000"
    demo_shift: str = ""  # an injected shift of the demo network (sources.demo_network.Shift.parse)
    # Alerts people subscribe to (core.subscriptions): where subscriptions are kept (empty: the
    # DuckDB file in the home; postgresql://... in production), the SMTP server for e-mail alerts
    # (off when no host), whether webhooks may go to loopback over http (tests and local demos
    # only) and the requests a minute each client address may make to the subscription routes.
    subscriptions_db: str = field(default="", repr=False)
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = ""
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = False
    alerts_allow_loopback: bool = False
    subscription_requests_per_minute: int = 10

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
    def subscriptions_path(self) -> Path:
        return self.home / "subscriptions.duckdb"

    @property
    def history_dir(self) -> Path:
        return self.home / "offline"

    @property
    def prediction_log_dir(self) -> Path:
        return self.home / "predictions"


def require_writable_home(home: Path) -> None:
    """Raise ``ConfigurationError`` naming ``home`` when nothing can be written there (a read-only
    mount, no permission, a full disk): every RouteAQ process writes under it, and finding out
    at start-up beats a raw ``OSError`` halfway through a run."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigurationError(
            f"ROUTEAQ_HOME {home} cannot be written ({exc.strerror or exc}): RouteAQ keeps its warehouse, lake, models, "
            "Dagster instance, caches and logs there; point ROUTEAQ_HOME at a writable folder"
        ) from None


def _flag(name: str) -> bool:
    value = os.environ.get(name, "").strip()
    if value not in ("", "0", "1"):
        raise ConfigurationError(f"{name} must be 1 (on) or 0 (off), got {value!r}")
    return value == "1"


def _subscription_settings() -> dict:
    """The settings of subscribed alerts: ``ROUTEAQ_SUBSCRIPTIONS_DB``, ``ROUTEAQ_SMTP_*``,
    ``ROUTEAQ_ALERTS_ALLOW_LOOPBACK`` and ``ROUTEAQ_SUBSCRIPTION_REQUESTS_PER_MINUTE``."""
    database = os.environ.get("ROUTEAQ_SUBSCRIPTIONS_DB", "").strip()
    if database and not database.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(
            "ROUTEAQ_SUBSCRIPTIONS_DB must be a PostgreSQL URL (postgresql://user@host:5432/db), or unset for the DuckDB file in ROUTEAQ_HOME;"
            f" got a value starting {database[:11]!r}"
        )
    host = os.environ.get("ROUTEAQ_SMTP_HOST", "").strip()
    starttls = _flag("ROUTEAQ_SMTP_STARTTLS")
    port = os.environ.get("ROUTEAQ_SMTP_PORT", "").strip() or ("587" if starttls else "25")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigurationError(f"ROUTEAQ_SMTP_PORT must be a port number 1-65535, got {port!r}")
    sender = os.environ.get("ROUTEAQ_SMTP_FROM", "").strip()
    user, password = os.environ.get("ROUTEAQ_SMTP_USER", "").strip(), os.environ.get("ROUTEAQ_SMTP_PASSWORD", "")
    if host and not sender:
        raise ConfigurationError("ROUTEAQ_SMTP_HOST is set without ROUTEAQ_SMTP_FROM: set the From address of alert e-mails (alerts@example.org)")
    if password and not starttls:
        raise ConfigurationError("ROUTEAQ_SMTP_PASSWORD is set without ROUTEAQ_SMTP_STARTTLS=1: the password would cross the network in clear")
    if bool(user) != bool(password):
        raise ConfigurationError("ROUTEAQ_SMTP_USER and ROUTEAQ_SMTP_PASSWORD go together: set both to log in, or neither")
    rate = os.environ.get("ROUTEAQ_SUBSCRIPTION_REQUESTS_PER_MINUTE", "10").strip()
    if not rate.isdigit() or int(rate) < 1:
        raise ConfigurationError(f"ROUTEAQ_SUBSCRIPTION_REQUESTS_PER_MINUTE must be a whole number of at least 1, got {rate!r}")
    return {
        "subscriptions_db": database, "smtp_host": host, "smtp_port": int(port), "smtp_from": sender, "smtp_user": user, "smtp_password": password,
        "smtp_starttls": starttls, "alerts_allow_loopback": _flag("ROUTEAQ_ALERTS_ALLOW_LOOPBACK"), "subscription_requests_per_minute": int(rate),
    }


def load_settings() -> Settings:
    home = Path(os.environ.get("ROUTEAQ_HOME", ".routeaq")).resolve()
    sites_env = os.environ.get("ROUTEAQ_SITES", "").strip()
    sites = tuple(s.strip().upper() for s in sites_env.split(",") if s.strip()) or DEFAULT_DEMO_SITES
    source = os.environ.get("ROUTEAQ_SOURCE", "demo").strip().lower()
    if source not in SOURCES:
        raise ConfigurationError(f"ROUTEAQ_SOURCE must be one of {SOURCES}, got {source!r}")
    folder = os.environ.get("ROUTEAQ_SOURCE_FOLDER", "").strip()
    if source == "local" and not folder:
        raise ConfigurationError("ROUTEAQ_SOURCE=local needs ROUTEAQ_SOURCE_FOLDER: the folder of openair-format tables")
    refresh = os.environ.get("ROUTEAQ_REFRESH_SECONDS", "30").strip()
    try:
        refresh_seconds = float(refresh)
    except ValueError:
        raise ConfigurationError(f"ROUTEAQ_REFRESH_SECONDS must be a number of seconds, got {refresh!r}") from None
    flush = os.environ.get("ROUTEAQ_PREDICTION_FLUSH_SECONDS", "60").strip()
    try:
        flush_seconds = float(flush)
    except ValueError:
        flush_seconds = 0.0
    if not flush_seconds > 0:
        raise ConfigurationError(f"ROUTEAQ_PREDICTION_FLUSH_SECONDS must be a positive number of seconds, got {flush!r}")
    live = os.environ.get("ROUTEAQ_LIVE", "").strip().lower()
    if live not in LIVE_SOURCES:
        raise ConfigurationError(f"ROUTEAQ_LIVE must be 'sos' or empty, got {live!r}")
    live_hours = os.environ.get("ROUTEAQ_LIVE_HOURS", "48").strip()
    if not live_hours.isdigit() or int(live_hours) < 1:
        raise ConfigurationError(f"ROUTEAQ_LIVE_HOURS must be a whole number of hours of at least 1, got {live_hours!r}")
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    return Settings(
        home=home,
        sites=sites,
        source=source,
        mlflow_tracking_uri=tracking,
        source_folder=Path(folder).resolve() if folder else None,
        online_store=os.environ.get("ROUTEAQ_ONLINE_STORE", "").strip(),
        live=live,
        live_hours=int(live_hours),
        live_url=os.environ.get("ROUTEAQ_SOS_URL", "").strip(),
        environment=get_environment(),
        refresh_seconds=refresh_seconds,
        prediction_flush_seconds=flush_seconds,
        s3_bucket=os.environ.get("ROUTEAQ_S3_BUCKET", "").strip(),
        s3_prefix=os.environ.get("ROUTEAQ_S3_PREFIX", "routeaq").strip().strip("/") or "routeaq",
        s3_endpoint_url=os.environ.get("AWS_ENDPOINT_URL", "").strip(),
        aws_region=os.environ.get("AWS_REGION", "").strip() or os.environ.get("AWS_DEFAULT_REGION", "").strip() or "us-east-1",
        webhook_url=os.environ.get("ROUTEAQ_WEBHOOK_URL", "").strip(),
        webhook_token=os.environ.get("ROUTEAQ_WEBHOOK_TOKEN", "").strip(),
        pushgateway_url=os.environ.get("ROUTEAQ_PUSHGATEWAY_URL", "").strip(),
        service_url=os.environ.get("ROUTEAQ_SERVICE_URL", "").strip() or "http://localhost:8000",
        demo_shift=os.environ.get("ROUTEAQ_DEMO_SHIFT", "").strip(),
        **_subscription_settings(),
    )
