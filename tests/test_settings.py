"""core.environment: the settings on pydantic-settings, each variable's default as documented and
each bound refused with an error that names the variable and what it must be."""

import re
from pathlib import Path

import pytest

from routeaq_assets.core.environment import DEFAULT_DEMO_SITES, VARIABLES, ConfigurationError, load_settings


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No setting of the environment the tests run in leaks into these."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ROUTEAQ_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_every_default_is_the_documented_one(clean, tmp_path):
    settings = load_settings()
    home = (tmp_path / "home").resolve()
    assert settings.home == home and settings.sites == DEFAULT_DEMO_SITES and settings.source == "demo" and settings.environment == "local"
    assert settings.mlflow_tracking_uri == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    assert (settings.source_folder, settings.online_store, settings.live, settings.live_hours, settings.live_url) == (None, "", "", 48, "")
    assert (settings.refresh_seconds, settings.prediction_flush_seconds) == (30.0, 60.0)
    assert (settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url, settings.aws_region) == ("", "routeaq", "", "us-east-1")
    assert (settings.webhook_url, settings.webhook_token, settings.pushgateway_url, settings.demo_shift) == ("", "", "", "")
    assert settings.service_url == "http://localhost:8000" and settings.model_prefix == "routeaq"
    assert (settings.subscriptions_db, settings.smtp_host, settings.smtp_port, settings.smtp_from, settings.smtp_user, settings.smtp_password) == ("", "", 25, "", "", "")
    assert (settings.smtp_starttls, settings.alerts_allow_loopback, settings.subscription_requests_per_minute) == (False, False, 10)


def test_values_are_read_as_the_docs_describe(clean, tmp_path):
    for name, value in {
        "ROUTEAQ_SITES": " my1, ,cll2 ", "ROUTEAQ_SOURCE": "LOCAL", "ROUTEAQ_SOURCE_FOLDER": str(tmp_path / "tables"), "ROUTEAQ_ENV": " Production ",
        "ROUTEAQ_S3_PREFIX": "/lake/", "AWS_DEFAULT_REGION": "eu-west-2", "ROUTEAQ_SMTP_STARTTLS": "1", "ROUTEAQ_SERVICE_URL": "  ",
        "ROUTEAQ_SMTP_PASSWORD": " pass word ", "ROUTEAQ_SMTP_USER": "u", "ROUTEAQ_REFRESH_SECONDS": "0.5",
    }.items():
        clean.setenv(name, value)
    settings = load_settings()
    assert settings.sites == ("MY1", "CLL2") and settings.source == "local" and settings.source_folder == (tmp_path / "tables").resolve()
    assert settings.environment == "production" and settings.s3_prefix == "lake" and settings.aws_region == "eu-west-2"
    assert settings.smtp_port == 587 and settings.smtp_starttls  # STARTTLS's port unless one is given
    assert settings.service_url == "http://localhost:8000"  # a blank value is unset
    assert settings.smtp_password == " pass word " and settings.refresh_seconds == 0.5
    assert "pass word" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value", "must"),
    [
        ("ROUTEAQ_ENV", "prod", "one of 'local', 'production'"),
        ("ROUTEAQ_SOURCE", "s3", "one of 'demo', 'openair', 'ukair', 'local'"),
        ("ROUTEAQ_LIVE", "rest", "'sos' or empty"),
        ("ROUTEAQ_REFRESH_SECONDS", "0", "a positive number of seconds"),
        ("ROUTEAQ_REFRESH_SECONDS", "-5", "a positive number of seconds"),
        ("ROUTEAQ_REFRESH_SECONDS", "soon", "a positive number of seconds"),
        ("ROUTEAQ_REFRESH_SECONDS", "nan", "a positive number of seconds"),
        ("ROUTEAQ_PREDICTION_FLUSH_SECONDS", "0", "a positive number of seconds"),
        ("ROUTEAQ_PREDICTION_FLUSH_SECONDS", "inf", "a positive number of seconds"),
        ("ROUTEAQ_LIVE_HOURS", "0", "a whole number of hours of at least 1"),
        ("ROUTEAQ_LIVE_HOURS", "1.5", "a whole number of hours of at least 1"),
        ("ROUTEAQ_SMTP_PORT", "0", "a port number 1-65535"),
        ("ROUTEAQ_SMTP_PORT", "65536", "a port number 1-65535"),
        ("ROUTEAQ_SUBSCRIPTION_REQUESTS_PER_MINUTE", "0", "a whole number of at least 1"),
        ("ROUTEAQ_SMTP_STARTTLS", "yes", "1 (on) or 0 (off)"),
        ("ROUTEAQ_ALERTS_ALLOW_LOOPBACK", "true", "1 (on) or 0 (off)"),
    ],
)
def test_each_bound_is_refused_naming_the_variable_and_what_it_must_be(clean, variable, value, must):
    clean.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=re.escape(f"{variable} must be {must}, got")):
        load_settings()


@pytest.mark.parametrize("variable", ["ROUTEAQ_SERVICE_URL", "ROUTEAQ_SOS_URL", "ROUTEAQ_WEBHOOK_URL", "ROUTEAQ_PUSHGATEWAY_URL"])
def test_a_url_that_is_not_http_is_refused_without_showing_it_whole(clean, variable):
    clean.setenv(variable, "hooks.example.org/services/SECRET")
    with pytest.raises(ConfigurationError, match=f"{variable} must start with http:// or https://") as raised:
        load_settings()
    assert "SECRET" not in str(raised.value)


def test_several_wrong_values_are_named_together(clean):
    clean.setenv("ROUTEAQ_LIVE_HOURS", "-1")
    clean.setenv("ROUTEAQ_REFRESH_SECONDS", "0")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert "ROUTEAQ_LIVE_HOURS must be" in str(raised.value) and "ROUTEAQ_REFRESH_SECONDS must be" in str(raised.value)


def test_settings_are_validated_once_per_environment(clean, tmp_path):
    """load_settings is called on every sensor tick and service refresh: the same variables give
    the same settings without validating again, and a changed variable is seen at once."""
    first = load_settings()
    assert load_settings() is first
    clean.setenv("ROUTEAQ_REFRESH_SECONDS", "5")
    assert load_settings().refresh_seconds == 5.0
    clean.chdir(tmp_path)
    clean.setenv("ROUTEAQ_HOME", "relative-home")
    assert load_settings().home == Path(tmp_path / "relative-home").resolve()
