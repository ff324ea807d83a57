"""Alerts people subscribe to: ``POST /api/subscriptions``, ``GET /api/subscriptions/confirm`` and
``GET /api/subscriptions/unsubscribe`` (GETs, so that the links in a message work).

Double opt-in: a subscription is stored *pending* and a confirmation message with a confirm link
goes to the channel given (the webhook, or the e-mail address through the deployment's SMTP
server); the ``subscription_alerts`` asset alerts confirmed subscriptions only. Every message
carries an unsubscribe link, which deletes the subscription with its address and the records of
the alerts sent to it. The rules of when an alert is due are in ``core.subscriptions``.

Each client address may call these routes ``ROUTEAQ_SUBSCRIPTION_REQUESTS_PER_MINUTE`` times a
minute (default 10; 429 beyond). Addresses and webhook URLs appear in no log line and no answer:
subscriptions are named by their ids.
"""

from __future__ import annotations

import html
import logging
import secrets
import threading
import time
from collections import deque

import bentoml
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, StringConstraints
from typing_extensions import Annotated

from routeaq_assets.adapters.alert_delivery import check_webhook, deliver, smtp_settings
from routeaq_assets.adapters.subscription_store import subscription_store
from routeaq_assets.core.environment import Settings
from routeaq_assets.core.subscriptions import (
    InvalidSubscription, Subscription, checked_band, checked_email, checked_sites, confirmation_message, new_token, token_hash,
)
from routeaq_serving.errors import ChannelUnavailable, OutOfRange, TooManyRequests

log = logging.getLogger("routeaq.subscriptions")
router = APIRouter(tags=["subscriptions"])
WINDOW_S = 60.0


class SubscriptionRequest(BaseModel):
    sites: list[Annotated[str, StringConstraints(max_length=16)]] = Field(max_length=100, examples=[["MY1", "CLL2"]])
    band: str = Field(max_length=32, description="Moderate, High or Very High: alert when the daily index is forecast to reach it.", examples=["Moderate"])
    webhook_url: str | None = Field(None, max_length=4096, description="An https URL that takes a JSON POST (Slack, Discord, ntfy).")
    email: str | None = Field(None, max_length=320)


class RateLimiter:
    """At most ``limit`` calls per client address in any ``window_s`` seconds (sliding window)."""

    def __init__(self, limit: int, window_s: float = WINDOW_S):
        self.limit, self.window_s = limit, window_s
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        """0 when the call may go ahead (and counts it), else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            if len(self._calls) > 10_000:  # forget clients that have been quiet for a window
                self._calls = {c: q for c, q in self._calls.items() if q and q[-1] > now - self.window_s}
            calls = self._calls.setdefault(client, deque())
            while calls and calls[0] <= now - self.window_s:
                calls.popleft()
            if len(calls) >= self.limit:
                return calls[0] + self.window_s - now
            calls.append(now)
            return 0.0


class Subscriptions:
    """What the service holds for subscriptions: the store, the channels' settings and the limiter."""

    def __init__(self, settings: Settings):
        self.store = subscription_store(settings)
        self.smtp = smtp_settings(settings)
        self.allow_loopback = settings.alerts_allow_loopback
        self.service_url = settings.service_url
        self.limiter = RateLimiter(settings.subscription_requests_per_minute)


def _limited(request: Request) -> Subscriptions:
    subscriptions: Subscriptions = bentoml.get_current_service().subscriptions
    wait = subscriptions.limiter.wait_s(request.client.host if request.client else "unknown")
    if wait:
        raise TooManyRequests(
            f"too many subscription requests from your address: at most {subscriptions.limiter.limit} a minute; retry in {max(1, round(wait))} s"
        )
    return subscriptions


def _channel(body: SubscriptionRequest, subscriptions: Subscriptions) -> tuple[str, str]:
    if (body.webhook_url is None) == (body.email is None):
        raise InvalidSubscription("give exactly one channel: webhook_url or email", "email" if body.email is not None else "webhook_url")
    if body.email is not None:
        if subscriptions.smtp is None:
            raise InvalidSubscription("e-mail alerts are not offered by this service (no SMTP server configured): subscribe a webhook_url", "email")
        return "email", checked_email(body.email)
    check_webhook(body.webhook_url, subscriptions.allow_loopback)
    return "webhook", body.webhook_url


@router.post(
    "/api/subscriptions",
    status_code=202,
    summary="Subscribe sites to alerts when their daily index is forecast to reach a band; a confirmation message is sent first",
    responses={422: {"description": "A bad site, band, e-mail address or webhook URL (named by field); nothing stored"}, 429: {"description": "Too many requests"}},
)
def subscribe(body: SubscriptionRequest, subscriptions: Subscriptions = Depends(_limited)) -> JSONResponse:
    state = bentoml.get_current_service().forecasts.current()
    try:
        sites = checked_sites(body.sites, state.sites)
        band = checked_band(body.band)
        channel, destination = _channel(body, subscriptions)
    except InvalidSubscription as exc:
        raise OutOfRange(exc.message, exc.field) from None
    subscription = Subscription(f"sub_{secrets.token_hex(8)}", channel, destination, band, sites, "pending")
    confirm_token, confirm_hash = new_token()
    unsubscribe_token, unsubscribe_hash = new_token()
    subscriptions.store.add_pending(subscription, confirm_hash, unsubscribe_hash)
    message = confirmation_message(subscription, subscriptions.service_url, confirm_token, unsubscribe_token)
    delivery = deliver(channel, destination, message, subscriptions.smtp, subscriptions.allow_loopback)
    if not delivery.delivered:
        subscriptions.store.remove(subscription.id)
        log.warning(f"subscription {subscription.id}: confirmation by {channel} not delivered ({delivery.error}); not kept")
        field = "webhook_url" if channel == "webhook" else "email"
        if channel == "email" and "refused the recipient" not in (delivery.error or ""):
            raise ChannelUnavailable(f"the confirmation e-mail could not be sent ({delivery.error}); nothing was stored: try again later", field)
        raise OutOfRange(f"the confirmation could not be delivered to {field} ({delivery.error}); nothing was stored", field)
    log.info(f"subscription {subscription.id}: pending, confirmation sent by {channel} ({len(sites)} sites, {band})")
    return JSONResponse(
        status_code=202,
        content={
            "subscription_id": subscription.id, "status": "pending", "channel": channel, "sites": list(sites), "band": band,
            "message": f"a confirmation was sent to the {'e-mail address' if channel == 'email' else 'webhook'}: no alert is sent until its link is opened",
        },
    )


def _answer(request: Request, status: int, title: str, content: dict) -> HTMLResponse | JSONResponse:
    """JSON for a client that asks for it, else a small page (the link was opened in a browser)."""
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(status_code=status, content=content)
    text = html.escape(content.get("message") or content.get("error", ""))
    return HTMLResponse(status_code=status, content=f"<!doctype html><title>RouteAQ alerts</title><h1>{html.escape(title)}</h1><p>{text}</p>")


@router.get("/api/subscriptions/confirm", summary="Confirm a subscription (the link in its confirmation message)")
def confirm(request: Request, token: str = Query(min_length=1, max_length=128), subscriptions: Subscriptions = Depends(_limited)):
    found = subscriptions.store.confirm(token_hash(token))
    if found is None:
        return _answer(request, 404, "Link not found", {"error": "unknown confirmation link: the subscription was removed, or expired unconfirmed after 48 hours", "field": "token"})
    subscription_id, status = found
    log.info(f"subscription {subscription_id}: {status}")
    return _answer(request, 200, "Alerts confirmed", {"subscription_id": subscription_id, "status": "confirmed",
                                                      "message": "alerts are on: every alert carries a link to stop them" if status == "confirmed" else "already confirmed: alerts are on"})


@router.get("/api/subscriptions/unsubscribe", summary="Remove a subscription and everything kept about it (the link in every message)")
def unsubscribe(request: Request, token: str = Query(min_length=1, max_length=128), subscriptions: Subscriptions = Depends(_limited)):
    subscription_id = subscriptions.store.unsubscribe(token_hash(token))
    if subscription_id is None:
        return _answer(request, 200, "Nothing to remove", {"status": "not found", "message": "no subscription has this link: it was removed already"})
    log.info(f"subscription {subscription_id}: removed with its sent alerts")
    return _answer(request, 200, "Unsubscribed", {"subscription_id": subscription_id, "status": "removed",
                                                   "message": "unsubscribed: the address and the record of alerts sent to it are deleted"})


def install(app: FastAPI) -> None:
    """Add the subscription routes to the service's app."""
    app.include_router(router)
