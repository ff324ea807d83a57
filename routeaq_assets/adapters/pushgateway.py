"""The batch stage's figures (``core.prometheus``) pushed to a Prometheus Pushgateway: the
convention for batch jobs, whose processes end before any scrape. Prometheus scrapes the gateway,
which keeps each group's last push and its ``push_time_seconds``.

Off unless ``ROUTEAQ_PUSHGATEWAY_URL`` is set. Each stage pushes one group (``job="routeaq"``,
``stage`` and, for a stage that runs per pollutant, ``pollutant``) and a push replaces that
group's figures, so a series a stage no longer reports goes with its next push. A push that
fails is logged and never fails the run that made the figures: they are in Dagster's metadata as
well, and the ``RouteAQMonitoringNotPushed`` rule (deploy/prometheus/rules/routeaq.yml) fires when a
monitoring group stops arriving. The URL's path and credentials are never logged (``destination``).
"""

from __future__ import annotations

from prometheus_client import push_to_gateway

from routeaq_assets.adapters.redact import destination
from routeaq_assets.core.prometheus import Figure, registry_of

JOB = "routeaq"


class Pushgateway:
    def __init__(self, url: str, timeout_s: float = 5.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"ROUTEAQ_PUSHGATEWAY_URL must start with http:// or https:// (got a value starting {url[:8]!r})")
        self._url, self.timeout_s = url.rstrip("/"), timeout_s

    @property
    def destination(self) -> str:
        return destination(self._url)

    def __repr__(self) -> str:
        return f"Pushgateway({self.destination})"

    def push(self, stage: str, figures: list[Figure], **grouping: str) -> tuple[bool, str]:
        """Replace the group ``stage`` (and ``grouping``) with ``figures``: whether it was taken,
        and what happened in words for the run's log. Never raises for an unreachable or refusing
        gateway."""
        registry = registry_of(figures)
        try:
            push_to_gateway(self._url, job=JOB, registry=registry, grouping_key={"stage": stage, **grouping}, timeout=self.timeout_s)
        except OSError as exc:  # URLError, HTTPError, timeouts and refused connections
            return False, f"metrics of {stage} not pushed to {self.destination}: {type(exc).__name__}: {getattr(exc, 'reason', '') or getattr(exc, 'code', '')}"
        return True, f"{len(figures)} metrics of {stage} pushed to {self.destination}"


def pushgateway_from_settings(url: str) -> Pushgateway | None:
    """The configured Pushgateway, or None when pushing is off (no URL)."""
    return Pushgateway(url) if url else None


def push(url: str, stage: str, figures: list[Figure], log, **grouping: str) -> None:  # noqa: ANN001 - a logger
    """Push ``figures`` where ``url`` says (nothing when it is empty) and log what happened: a
    failed push as a warning."""
    gateway = pushgateway_from_settings(url)
    if gateway is None:
        return
    taken, said = gateway.push(stage, figures, **grouping)
    (log.info if taken else log.warning)(said)
