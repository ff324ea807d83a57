"""The folders the service and the pipeline share, by name: key prefixes under the lake's prefix
in production (``adapters.shared``), folders under ``ROUTEAQ_HOME`` when embedded."""

from __future__ import annotations

PREDICTIONS, HISTORY = "predictions", "history"
# The monitoring reports and plots: the lake's ``reports/`` keys, which the service serves at
# ``/reports/...`` so that the Dagster UI links to pages a browser opens.
REPORTS = "reports"


def report_url(service_url: str, key: str) -> str:
    """The address at which the service serves the lake's ``reports/...`` file ``key``."""
    if not key.startswith(f"{REPORTS}/"):
        raise ValueError(f"{key!r} is not a report: report keys start with {REPORTS}/")
    return f"{service_url.rstrip('/')}/{key}"
