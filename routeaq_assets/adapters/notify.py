"""Alerts as a generic JSON webhook: one POST per event, retried with backoff.

Off unless a URL is configured (``ROUTEAQ_WEBHOOK_URL``); an optional bearer token
(``ROUTEAQ_WEBHOOK_TOKEN``) goes in the Authorization header. Neither the token nor the URL's
path and query (where services such as Slack put their secret) is ever logged or returned:
``destination`` is the scheme and host only.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone

from routeaq_assets.adapters.redact import destination

EVENTS = ("check_failed", "retrain_requested", "promotion_decision", "stale_data", "champion_loses_to_persistence", "champion_missing_from_registry")


@dataclass(frozen=True)
class Delivery:
    event: str
    delivered: bool
    attempts: int
    status: int | None
    destination: str
    error: str | None = None


class WebhookNotifier:
    def __init__(self, url: str, token: str = "", retries: int = 3, backoff_s: float = 1.0, timeout_s: float = 5.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must start with http:// or https:// (got a value starting {url[:8]!r})")
        self._url, self._token = url, token
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s

    @property
    def destination(self) -> str:
        return destination(self._url)

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.destination})"

    def send(self, event: str, summary: str, **figures) -> Delivery:
        """POST ``{"event", "summary", "sent_at", "source", **figures}``. A 5xx answer, a timeout or
        a refused connection is retried ``retries`` times with doubling waits; a 4xx is not (the
        receiver rejected the message itself)."""
        if event not in EVENTS:
            raise ValueError(f"unknown alert event {event!r}; one of {EVENTS}")
        body = json.dumps(
            {"event": event, "summary": summary, "sent_at": datetime.now(timezone.utc).isoformat(), "source": "routeaq", **figures},
            default=str,
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        error, status = None, None
        for attempt in range(1, self.retries + 2):
            request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return Delivery(event, True, attempt, response.status, self.destination)
            except urllib.error.HTTPError as exc:
                status, error = exc.code, f"HTTP {exc.code}"
                if exc.code < 500:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                error = f"{type(reason).__name__}"
            if attempt <= self.retries:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        return Delivery(event, False, attempt, status, self.destination, error)


def notifier_from_settings(url: str, token: str = "") -> WebhookNotifier | None:
    """The configured notifier, or None when alerts are off (no URL)."""
    return WebhookNotifier(url, token) if url else None
