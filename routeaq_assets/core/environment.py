"""The one place that reads deployment settings from the environment.

With no variable set, everything is embedded under ``ROUTEAQ_HOME`` (default ``./.routeaq``):
a DuckDB warehouse, a local lake folder, a SQLite MLflow store, the online feature file, the
yearly history files and the prediction log. ``ROUTEAQ_ENV=production`` switches to the production parts, whose
addresses come from their own variables (``PRODUCTION_VARIABLES``). Settings are read when a
process starts its work (``load_settings()``), never when a module is imported.

``Settings`` is a pydantic-settings model: each field names its variable, and every value is
checked when it is read (``MUST`` says what each bounded variable must be); a wrong one is a
``ConfigurationError`` naming the variable, what it must be and what it got.
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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


# What each checked variable must be, for the error that names it.
MUST = {
    "ROUTEAQ_ENV": f"one of {', '.join(map(repr, ENVIRONMENTS))}",
    "ROUTEAQ_SOURCE": f"one of {', '.join(map(repr, SOURCES))}",
    "ROUTEAQ_LIVE": "'sos' or empty",
    "ROUTEAQ_LIVE_HOURS": "a whole number of hours of at least 1",
    "ROUTEAQ_REFRESH_SECONDS": "a positive number of seconds",
    "ROUTEAQ_PREDICTION_FLUSH_SECONDS": "a positive number of seconds",
    "ROUTEAQ_SMTP_PORT": "a port number 1-65535",
    "ROUTEAQ_SUBSCRIPTION_REQUESTS_PER_MINUTE": "a whole number of at least 1",
    "ROUTEAQ_SMTP_STARTTLS": "1 (on) or 0 (off)",
    "ROUTEAQ_ALERTS_ALLOW_LOOPBACK": "1 (on) or 0 (off)",
}
HTTP_URLS = ("ROUTEAQ_SERVICE_URL", "ROUTEAQ_SOS_URL", "ROUTEAQ_WEBHOOK_URL", "ROUTEAQ_PUSHGATEWAY_URL")
FLAGS = ("ROUTEAQ_SMTP_STARTTLS", "ROUTEAQ_ALERTS_ALLOW_LOOPBACK")
UNSTRIPPED = ("ROUTEAQ_SMTP_PASSWORD",)  # a password is taken as given
LOWERED = ("ROUTEAQ_ENV", "ROUTEAQ_SOURCE", "ROUTEAQ_LIVE")


def _variable(name: str, default: Any = "", **kwargs: Any) -> Any:
    return Field(default, validation_alias=name, **kwargs)


class Settings(BaseSettings):
    """Every deployment setting, each field from the variable it names (``load_settings``)."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True)

    home: Path = _variable("ROUTEAQ_HOME", Path(".routeaq"))
    sites: Annotated[tuple[str, ...], NoDecode] = _variable("ROUTEAQ_SITES", DEFAULT_DEMO_SITES)
    source: Literal[SOURCES] = _variable("ROUTEAQ_SOURCE", "demo")
    mlflow_tracking_uri: str = _variable("MLFLOW_TRACKING_URI")  # unset: the SQLite store in the home
    source_folder: Path | None = _variable("ROUTEAQ_SOURCE_FOLDER", None)
    online_store: str = _variable("ROUTEAQ_ONLINE_STORE")
    live: Literal[LIVE_SOURCES] = _variable("ROUTEAQ_LIVE")  # "sos": the last live_hours hours from the UK-AIR SOS, older ones from the archives
    live_hours: int = _variable("ROUTEAQ_LIVE_HOURS", 48, ge=1)
    live_url: str = _variable("ROUTEAQ_SOS_URL")  # empty: the UK-AIR service's published address
    environment: Literal[ENVIRONMENTS] = _variable("ROUTEAQ_ENV", "local")
    refresh_seconds: float = _variable("ROUTEAQ_REFRESH_SECONDS", 30.0, gt=0, allow_inf_nan=False)  # how often the service looks for a new champion or history
    # production: how often the service closes its prediction-log chunk and ships it to S3
    prediction_flush_seconds: float = _variable("ROUTEAQ_PREDICTION_FLUSH_SECONDS", 60.0, gt=0, allow_inf_nan=False)
    s3_bucket: str = _variable("ROUTEAQ_S3_BUCKET")
    s3_prefix: str = _variable("ROUTEAQ_S3_PREFIX", "routeaq")
    s3_endpoint_url: str = _variable("AWS_ENDPOINT_URL")  # an S3-compatible server (MinIO, moto); empty for AWS itself
    aws_region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    webhook_url: str = _variable("ROUTEAQ_WEBHOOK_URL", repr=False)  # alerts; off when empty
    webhook_token: str = _variable("ROUTEAQ_WEBHOOK_TOKEN", repr=False)
    pushgateway_url: str = _variable("ROUTEAQ_PUSHGATEWAY_URL", repr=False)  # the batch stage's metrics; off when empty
    # Where people reach the forecast service: the Dagster UI links reports and plots to it.
    service_url: str = _variable("ROUTEAQ_SERVICE_URL", "http://localhost:8000")
    demo_shift: str = _variable("ROUTEAQ_DEMO_SHIFT")  # an injected shift of the demo network (sources.demo_network.Shift.parse)
    # Alerts people subscribe to (core.subscriptions): where subscriptions are kept (empty: the
    # DuckDB file in the home; postgresql://... in production), the SMTP server for e-mail alerts
    # (off when no host), whether webhooks may go to loopback over http (tests and local demos
    # only) and the requests a minute each client address may make to the subscription routes.
    subscriptions_db: str = _variable("ROUTEAQ_SUBSCRIPTIONS_DB", repr=False)
    smtp_host: str = _variable("ROUTEAQ_SMTP_HOST")
    smtp_port: int = _variable("ROUTEAQ_SMTP_PORT", 25, ge=1, le=65535)  # unset: 587 with STARTTLS, else 25
    smtp_from: str = _variable("ROUTEAQ_SMTP_FROM")
    smtp_user: str = _variable("ROUTEAQ_SMTP_USER")
    smtp_password: str = _variable("ROUTEAQ_SMTP_PASSWORD", repr=False)
    smtp_starttls: bool = _variable("ROUTEAQ_SMTP_STARTTLS", False)
    alerts_allow_loopback: bool = _variable("ROUTEAQ_ALERTS_ALLOW_LOOPBACK", False)
    subscription_requests_per_minute: int = _variable("ROUTEAQ_SUBSCRIPTION_REQUESTS_PER_MINUTE", 10, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _as_given(cls, values: Any) -> Any:
        """Trim (a blank value is unset), lower the enumerations, check the flags and URLs, and
        fill the defaults that depend on another variable."""
        if not isinstance(values, dict):
            return values
        given = {}
        for name, value in values.items():
            if isinstance(value, str) and name not in UNSTRIPPED:
                value = value.strip()
                if not value:
                    continue
                if name in LOWERED:
                    value = value.lower()
            given[name] = value
        for name in FLAGS:
            if name in given and given[name] not in ("0", "1", True, False):
                raise ValueError(f"{name} must be {MUST[name]}, got {given[name]!r}")
        for name in HTTP_URLS:  # the start only: a URL's path or query may hold its secret
            if isinstance(given.get(name), str) and not given[name].startswith(("http://", "https://")):
                raise ValueError(f"{name} must start with http:// or https://, got a value starting {given[name][:8]!r}")
        if "ROUTEAQ_SMTP_PORT" not in given:
            given["ROUTEAQ_SMTP_PORT"] = 587 if given.get("ROUTEAQ_SMTP_STARTTLS") in ("1", True) else 25
        if "MLFLOW_TRACKING_URI" not in given:
            given["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(given.get('ROUTEAQ_HOME', '.routeaq')).resolve() / 'mlflow' / 'mlflow.db'}"
        return given

    @field_validator("sites", mode="before")
    @classmethod
    def _site_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(s.strip().upper() for s in value.split(",") if s.strip()) or DEFAULT_DEMO_SITES
        return value

    @field_validator("home", "source_folder")
    @classmethod
    def _resolved(cls, value: Path | None) -> Path | None:
        return value.resolve() if value is not None else None

    @field_validator("s3_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return value.strip("/") or "routeaq"

    @model_validator(mode="after")
    def _together(self) -> Settings:
        """The settings that only make sense together."""
        if self.source == "local" and self.source_folder is None:
            raise ValueError("ROUTEAQ_SOURCE=local needs ROUTEAQ_SOURCE_FOLDER: the folder of openair-format tables")
        database = self.subscriptions_db
        if database and not database.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "ROUTEAQ_SUBSCRIPTIONS_DB must be a PostgreSQL URL (postgresql://user@host:5432/db), or unset for the DuckDB file in ROUTEAQ_HOME;"
                f" got a value starting {database[:11]!r}"
            )
        if self.smtp_host and not self.smtp_from:
            raise ValueError("ROUTEAQ_SMTP_HOST is set without ROUTEAQ_SMTP_FROM: set the From address of alert e-mails (alerts@example.org)")
        if self.smtp_password and not self.smtp_starttls:
            raise ValueError("ROUTEAQ_SMTP_PASSWORD is set without ROUTEAQ_SMTP_STARTTLS=1: the password would cross the network in clear")
        if bool(self.smtp_user) != bool(self.smtp_password):
            raise ValueError("ROUTEAQ_SMTP_USER and ROUTEAQ_SMTP_PASSWORD go together: set both to log in, or neither")
        return self

    @property
    def model_prefix(self) -> str:
        return MODEL_PREFIX

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


def _problem(error: dict) -> str:
    """One validation error in words: the variable, what it must be, what it got."""
    if error["type"] == "value_error":  # a check of ours: its message names the variable
        return str(error["ctx"]["error"])
    variable = str(error["loc"][0]) if error["loc"] else "a setting"
    return f"{variable} must be {MUST.get(variable, 'valid')}, got {error['input']!r}"


# Every variable the settings read, from the fields' own names for them.
VARIABLES = tuple(
    name
    for info in Settings.model_fields.values()
    for name in (info.validation_alias.choices if isinstance(info.validation_alias, AliasChoices) else [info.validation_alias])
)


@lru_cache(maxsize=16)
def _settings(values: tuple[str | None, ...], cwd: str) -> Settings:  # noqa: ARG001 - the cache's key
    try:
        return Settings()
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors(include_url=False)]
        raise ConfigurationError(problems[0] if len(problems) == 1 else "invalid settings:\n- " + "\n- ".join(problems)) from None


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


def load_settings() -> Settings:
    """The settings of the environment as it is now. Validated once per distinct environment
    (and working folder, which a relative ROUTEAQ_HOME depends on): later calls with the same
    variables cost a look at them."""
    return _settings(tuple(map(os.environ.get, VARIABLES)), os.getcwd())
