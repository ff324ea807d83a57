"""Alerts as a generic JSON webhook: one POST per event, retried with backoff
(``routeaq_assets.adapters.retries``).

Off unless a URL is configured (``ROUTEAQ_WEBHOOK_URL``); an optional bearer token
(``ROUTEAQ_WEBHOOK_TOKEN``) goes in the Authorization header. Neither the token nor the URL's
path and query (where services such as Slack put their secret) is ever logged or returned:
``destination`` is the scheme and host only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone

from routeaq_assets.adapters.redact import destination
from routeaq_assets.adapters.retries import RetryPolicy

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
        self._url, self._token, self.timeout_s = url, token, timeout_s
        # A 5xx answer, a timeout or a refused connection is worth another try; a 4xx is not.
        self.retry_policy = RetryPolicy(retries, backoff_s, errors=(urllib.error.URLError, TimeoutError, ConnectionError),
                                        retry_answer=lambda status: status >= 500)

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

        def post() -> int:
            request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return response.status
            except urllib.error.HTTPError as exc:  # an answer, judged by the policy: not an error to retry on
                return exc.code

        try:
            status, attempts = self.retry_policy.call(post)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            return Delivery(event, False, self.retry_policy.retries + 1, None, self.destination, type(reason).__name__)
        if status >= 400:
            return Delivery(event, False, attempts, status, self.destination, f"HTTP {status}")
        return Delivery(event, True, attempts, status, self.destination)


def notifier_from_settings(url: str, token: str = "") -> WebhookNotifier | None:
    """The configured notifier, or None when alerts are off (no URL)."""
    return WebhookNotifier(url, token) if url else None
