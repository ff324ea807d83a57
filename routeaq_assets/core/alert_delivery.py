"""Sending subscription messages: a JSON POST to a webhook, or an e-mail through the deployment's
SMTP server. Used by the service (confirmation messages) and by the ``subscription_alerts`` asset.

A webhook URL comes from the public, so it must not reach inside the deployment's network
(server-side request forgery): ``check_webhook`` resolves the host and refuses unless every
address is public (``core.subscriptions.address_problem``). Sending checks again and connects to
the very address it checked (the name is not resolved a second time, so a DNS answer that changes
between check and connection cannot redirect it), with TLS verified against the URL's host name.
Redirects are not followed (a 3xx is a failed delivery), and every step times out after
``TIMEOUT_S``. Failures are described without the URL or the address.
"""

from __future__ import annotations

import http.client
import json
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import urlsplit

from routeaq_assets.core.environment import Settings
from routeaq_assets.core.subscriptions import InvalidSubscription, Message, resolved_problem, webhook_url_problem

TIMEOUT_S = 5.0


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
