"""adapters.redact: the one redaction of addresses, for messages, logs and metadata."""

import ast
from pathlib import Path

import pytest

from routeaq_assets.adapters.redact import destination, redact_uri, scrub

PACKAGES = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://routeaq:hunter2@db:5432/routeaq", "postgresql://routeaq:***@db:5432/routeaq"),
        ("postgresql://routeaq:p%40ss@db/routeaq", "postgresql://routeaq:***@db/routeaq"),
        ("http://mlflow:5000?token=hunter2&x=1", "http://mlflow:5000?token=***&x=1"),
        ("http://mlflow:5000", "http://mlflow:5000"),
        ("/srv/routeaq/online/features.parquet", "/srv/routeaq/online/features.parquet"),
    ],
)
def test_an_address_keeps_its_store_and_loses_its_secret(uri, shown):
    assert redact_uri(uri) == shown


def test_text_quoting_an_address_loses_its_secrets():
    uri = "redis://:hunter2@cache:6379/0"
    text = f"Error connecting to {uri}: password hunter2 refused; fallback redis://admin:s3cret@other:6379 refused"
    scrubbed = scrub(text, uri)
    assert "hunter2" not in scrubbed and "s3cret" not in scrubbed  # the configured address's and any other URL's password
    assert "redis://:***@cache:6379/0" in scrubbed and "redis://admin:***@other:6379" in scrubbed
    assert scrub("GET http://host:5000/a@b failed", "") == "GET http://host:5000/a@b failed"  # a port is not a password


def test_a_webhook_is_named_by_scheme_host_and_port_only():
    assert destination("https://hooks.example.org:8443/services/T000/B000/SECRET?x=1") == "https://hooks.example.org:8443"


def test_redaction_is_written_once():
    """No module but adapters.redact masks a password in a URL (production.py had its own regex)."""
    for path in [*PACKAGES.glob("routeaq_assets/**/*.py"), *PACKAGES.glob("routeaq_serving/**/*.py")]:
        if path.name == "redact.py":
            continue
        tree = ast.parse(path.read_text())
        named = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}  # module functions, not properties
        assert not named & {"redact", "redact_uri", "scrub", "destination"}, f"{path} redacts on its own"
