"""Air-quality alerts people subscribe to: the rules, with no I/O.

A person names sites, a threshold band (Moderate, High or Very High: a daily index of 4, 7 or 10
and above) and one channel (a webhook or an e-mail address). After each new forecast, a site's
day (today or tomorrow, UK days, as ``POST /predict/daily`` answers them) **reaches** a band when
the forecast index is in it or above, or when the probability that the index reaches the band's
first index is at least ``ALERT_PROBABILITY`` (0.5). The day's *alert band* is the highest band it
reaches; an alert is due when that band is the subscription's or above it and no alert for the
same subscription, site and day was sent at that band or a higher one. So a person gets at most one
alert per site and forecast day, and one more each time the day's band rises (Moderate, then
High: two alerts; Moderate twice: one; High, then Moderate: one).

Also here: the checks of what the public may give (sites, a band, an e-mail address; a webhook
URL is checked, with the addresses its host resolves to, in ``adapters.alert_delivery`` beside the
connection that check guards) and the text of the messages.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import date

ALERT_PROBABILITY = 0.5
# The bands a subscription may name, with the first index of each (Defra's DAQI bands).
THRESHOLDS = {"Moderate": 4, "High": 7, "Very High": 10}
CHANNELS = ("webhook", "email")
MAX_SITES = 20
PENDING_HOURS = 48  # a subscription not confirmed within this is deleted with its address


class InvalidSubscription(ValueError):
    """What a person gave cannot be subscribed; ``field`` names the request field at fault."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.message, self.field = message, field


@dataclass(frozen=True)
class Subscription:
    id: str
    channel: str  # "webhook" or "email"
    destination: str  # the webhook URL or the e-mail address: never logged
    band: str
    sites: tuple[str, ...]
    status: str  # "pending" until confirmed, then "confirmed"

    def __repr__(self) -> str:  # a repr in a traceback or log names the subscription, not the person
        return f"Subscription({self.id}, {self.channel}, {self.band}, {list(self.sites)}, {self.status})"


@dataclass(frozen=True)
class DayForecast:
    """One site's daily index forecast for one UK day, as ``POST /predict/daily`` answers it."""

    site_id: str
    day: date
    index: int | None
    p_at_least: dict[int, float]  # probability that the index reaches k, k = 1..10

    @classmethod
    def from_answer(cls, site_id: str, day: dict) -> "DayForecast":
        return cls(site_id, date.fromisoformat(day["day"]), day["index"], {int(k): float(p) for k, p in day["p_index_at_least"].items()})


@dataclass(frozen=True)
class Alert:
    subscription_id: str
    site_id: str
    day: date
    band: str  # the band the day reaches (the subscription's or higher)
    index: int | None  # the forecast index
    probability: float  # the probability that the index reaches ``band``


def rank(band: str) -> int:
    return THRESHOLDS[band]


def band_reached(forecast: DayForecast) -> str | None:
    """The highest band the day reaches by the rule above, or None below Moderate."""
    reached = [
        band for band, first in THRESHOLDS.items()
        if (forecast.index is not None and forecast.index >= first) or forecast.p_at_least.get(first, 0.0) >= ALERT_PROBABILITY
    ]
    return max(reached, key=rank) if reached else None


def due_alerts(subscription: Subscription, forecasts: list[DayForecast], sent: dict[tuple[str, str, date], str]) -> tuple[list[Alert], int]:
    """The alerts due to ``subscription`` for ``forecasts`` (its sites' days), given ``sent``:
    (subscription id, site, day) -> the highest band already sent. Also returns how many site-days
    reached the threshold but were sent at that band or higher already (skipped)."""
    due, skipped = [], 0
    for forecast in forecasts:
        if forecast.site_id not in subscription.sites:
            continue
        band = band_reached(forecast)
        if band is None or rank(band) < rank(subscription.band):
            continue
        before = sent.get((subscription.id, forecast.site_id, forecast.day))
        if before is not None and rank(before) >= rank(band):
            skipped += 1
            continue
        due.append(Alert(subscription.id, forecast.site_id, forecast.day, band, forecast.index, forecast.p_at_least.get(THRESHOLDS[band], 0.0)))
    return due, skipped


# ---- what the public may give -------------------------------------------------------------

EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")


def checked_band(band: str) -> str:
    for name in THRESHOLDS:
        if band.strip().lower() == name.lower():
            return name
    raise InvalidSubscription(f"band must be one of {list(THRESHOLDS)} (daily index 4, 7 or 10 and above), got {band!r}", "band")


def checked_sites(sites: list[str], known: frozenset[str] | set[str]) -> tuple[str, ...]:
    """The sites in upper case, each once, all served; else ``InvalidSubscription`` on ``sites``."""
    wanted = tuple(dict.fromkeys(s.strip().upper() for s in sites))
    if not wanted or len(wanted) > MAX_SITES:
        raise InvalidSubscription(f"sites must list 1 to {MAX_SITES} site ids, got {len(wanted)}", "sites")
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise InvalidSubscription(f"unknown site ids {unknown[:5]}; the service forecasts {sorted(known)}", "sites")
    return wanted


def checked_email(address: str) -> str:
    """A plain ``local@domain.tld`` address (no display name, no comments, no IP literal). The
    message names the field, never the address (answers and logs are not the place for it)."""
    address = address.strip()
    if len(address) > 254 or not EMAIL.match(address) or ".." in address or address.startswith(".") or ".@" in address:
        raise InvalidSubscription("email must be a plain e-mail address: a name, @ and a domain such as example.org", "email")
    return address


# ---- tokens and messages ----------------------------------------------------------------

def new_token() -> tuple[str, str]:
    """A link token and the hash that is stored in its place."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Message:
    """What is sent: a title, the text, and fields for machines (webhooks get them as JSON)."""

    title: str
    text: str
    fields: dict

    def webhook_body(self) -> dict:
        """One JSON body that Slack (``text``), Discord (``content``) and ntfy (``message`` and
        ``title``, with ntfy's templating) each show, plus the structured fields."""
        return {"text": self.text, "content": self.text[:2000], "message": self.text, "title": self.title, **self.fields}


def link(service_url: str, route: str, token: str) -> str:
    return f"{service_url.rstrip('/')}/api/subscriptions/{route}?token={token}"


def confirmation_message(subscription: Subscription, service_url: str, confirm_token: str, unsubscribe_token: str) -> Message:
    confirm, unsubscribe = link(service_url, "confirm", confirm_token), link(service_url, "unsubscribe", unsubscribe_token)
    sites = ", ".join(subscription.sites)
    text = (
        f"Someone (we hope you) asked RouteAQ to alert this {'address' if subscription.channel == 'email' else 'webhook'} when the daily air quality "
        f"forecast for {sites} reaches {subscription.band} or above. Confirm: {confirm}\n"
        f"Nothing is sent until you confirm. If you did not ask, ignore this or remove it: {unsubscribe}"
    )
    return Message(
        "Confirm your RouteAQ air quality alerts", text,
        {"kind": "confirmation", "subscription_id": subscription.id, "sites": list(subscription.sites), "band": subscription.band,
         "confirm_url": confirm, "unsubscribe_url": unsubscribe},
    )


def alert_message(alert: Alert, service_url: str, unsubscribe_token: str) -> Message:
    unsubscribe = link(service_url, "unsubscribe", unsubscribe_token)
    title = f"{alert.band} air pollution forecast at {alert.site_id} on {alert.day:%A %-d %B}"
    text = (
        f"{title}: daily air quality index {alert.index} (1-10), probability of {alert.band} or above {alert.probability:.0%}. "
        f"Forecast: {service_url.rstrip('/')}/#site={alert.site_id}\nStop these alerts: {unsubscribe}"
    )
    return Message(
        title, text,
        {"kind": "alert", "subscription_id": alert.subscription_id, "site_id": alert.site_id, "day": alert.day.isoformat(), "index": alert.index,
         "band": alert.band, "probability": round(alert.probability, 3), "unsubscribe_url": unsubscribe},
    )
