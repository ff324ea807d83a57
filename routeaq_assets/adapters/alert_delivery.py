"""Sending subscription messages: a JSON POST to a webhook, or an e-mail through the deployment's
SMTP server. Used by the service (confirmation messages) and by the ``subscription_alerts`` asset.

A webhook URL comes from the public, so it must not reach inside the deployment's network
(server-side request forgery): ``check_webhook`` resolves the host and refuses unless every
address is public (``address_problem``). Sending checks again and connects to
the very address it checked (the name is not resolved a second time, so a DNS answer that changes
between check and connection cannot redirect it), with TLS verified against the URL's host name.
Redirects are not followed (a 3xx is a failed delivery), and every step times out after
``TIMEOUT_S``. Failures are described without the URL or the address.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import urlsplit

from routeaq_assets.core.environment import Settings
from routeaq_assets.core.subscriptions import InvalidSubscription, Message

TIMEOUT_S = 5.0
HTTPS_ONLY = "webhook_url must start with https://"


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    error: str | None = None  # never the URL or the address


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    user: str = ""
    password: str = ""
    starttls: bool = False

    def __repr__(self) -> str:
        return f"SmtpSettings({self.host}:{self.port}, starttls={self.starttls})"


def smtp_settings(settings: Settings) -> SmtpSettings | None:
    """The SMTP server of e-mail alerts, or None when e-mail alerts are off (no ROUTEAQ_SMTP_HOST)."""
    if not settings.smtp_host:
        return None
    return SmtpSettings(settings.smtp_host, settings.smtp_port, settings.smtp_from, settings.smtp_user, settings.smtp_password, settings.smtp_starttls)


def webhook_url_problem(url: str, allow_loopback: bool) -> str | None:
    """What is wrong with a webhook URL before resolving its host: not https (or, with
    ``allow_loopback``, http), credentials in it, no host, or an IP literal that is not public."""
    if len(url) > 2048:
        return "webhook_url is longer than 2048 characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "webhook_url is not a valid URL"
    schemes = ("https", "http") if allow_loopback else ("https",)
    if parts.scheme not in schemes:
        return HTTPS_ONLY if not allow_loopback else HTTPS_ONLY + " (or http:// to a loopback address on this deployment)"
    if not parts.hostname:
        return "webhook_url has no host"
    if parts.username or parts.password:
        return "webhook_url must not carry a user name or password"
    if port == 0:
        return "webhook_url has port 0"
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return None
    return resolved_problem([parts.hostname], allow_loopback, parts.scheme)


def address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> str | None:
    """Why a webhook may not be sent to ``address``: only public addresses are allowed (and,
    with ``allow_loopback``, 127.0.0.0/8 and ::1). An IPv4 address written as IPv6
    (``::ffff:10.0.0.1``, 6to4, Teredo) is judged as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if carried is not None:
            return address_problem(carried, allow_loopback)
    if address.is_loopback:
        return None if allow_loopback else "webhook_url resolves to a loopback address"
    if not address.is_global or address.is_multicast or address.is_reserved or address.is_unspecified or address.is_link_local or address.is_private:
        return "webhook_url resolves to a private, link-local, multicast, reserved or unspecified address"
    return None


def resolved_problem(addresses: list[str], allow_loopback: bool, scheme: str = "https") -> str | None:
    """Every address the host resolves to must be allowed (an attacker's name may resolve to
    a public and a private address at once), and plain http goes to loopback only."""
    if not addresses:
        return "webhook_url's host does not resolve"
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        problem = address_problem(address, allow_loopback)
        if problem:
            return problem
        if scheme != "https" and not address.is_loopback:
            return HTTPS_ONLY + " (http:// goes to a loopback address only)"
    return None


def _addresses(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):  # no such name, or not a name at all
        return []
    return list(dict.fromkeys(info[4][0] for info in infos))


def check_webhook(url: str, allow_loopback: bool) -> str:
    """The address to connect to for ``url``, once the URL and every address its host resolves
    to pass the checks; else ``InvalidSubscription`` on ``webhook_url``."""
    problem = webhook_url_problem(url, allow_loopback)
    if problem:
        raise InvalidSubscription(problem, "webhook_url")
    parts = urlsplit(url)
    addresses = _addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    problem = resolved_problem(addresses, allow_loopback, parts.scheme)
    if problem:
        raise InvalidSubscription(problem, "webhook_url")
    return addresses[0]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, verifying the certificate for the URL's host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def post_webhook(url: str, message: Message, allow_loopback: bool, timeout_s: float = TIMEOUT_S) -> Delivery:
    """POST the message's JSON body to ``url``: delivered on a 2xx answer; a 3xx (not followed),
    4xx, 5xx, a timeout or a refused connection is a failed delivery."""
    try:
        address = check_webhook(url, allow_loopback)
    except InvalidSubscription as exc:
        return Delivery(False, f"refused: {exc.message}")
    parts = urlsplit(url)
    https = parts.scheme == "https"
    kind = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
    connection = kind(parts.hostname, address, parts.port or (443 if https else 80), timeout_s)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = json.dumps(message.webhook_body(), default=str).encode()
    try:
        connection.request("POST", target, body, {"Content-Type": "application/json", "User-Agent": "RouteAQ-alerts"})
        response = connection.getresponse()
        response.read(65536)
    except (OSError, http.client.HTTPException) as exc:
        return Delivery(False, type(exc).__name__)
    finally:
        connection.close()
    if 200 <= response.status < 300:
        return Delivery(True)
    if 300 <= response.status < 400:
        return Delivery(False, f"HTTP {response.status}: a redirect, not followed")
    return Delivery(False, f"HTTP {response.status}")


def send_email(smtp: SmtpSettings, to: str, message: Message, timeout_s: float = 10.0) -> Delivery:
    """Send the message as plain text through the configured SMTP server (STARTTLS first when
    configured, then the login when a user is set)."""
    email = EmailMessage()
    email["From"], email["To"], email["Subject"] = smtp.sender, to, message.title
    email.set_content(message.text)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout_s) as server:
            if smtp.starttls:
                server.starttls(context=ssl.create_default_context())
            if smtp.user:
                server.login(smtp.user, smtp.password)
            server.send_message(email)
    except smtplib.SMTPRecipientsRefused:
        return Delivery(False, "the SMTP server refused the recipient")
    except smtplib.SMTPResponseException as exc:  # the server's text may quote the address: only its code
        return Delivery(False, f"SMTP {exc.smtp_code}")
    except (OSError, smtplib.SMTPException) as exc:
        return Delivery(False, type(exc).__name__)
    return Delivery(True)


def deliver(channel: str, destination: str, message: Message, smtp: SmtpSettings | None, allow_loopback: bool) -> Delivery:
    if channel == "webhook":
        return post_webhook(destination, message, allow_loopback)
    if smtp is None:
        return Delivery(False, "no SMTP server configured (ROUTEAQ_SMTP_HOST)")
    return send_email(smtp, destination, message)
