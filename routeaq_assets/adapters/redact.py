"""Store addresses without their secrets, for messages, logs and metadata.

A tracking URI, a Redis URL or a database URL may carry a user's password
(``postgresql://user:secret@host/db``, ``redis://:secret@host:6379/0``) or a token in its query
(``?password=...``, ``?token=...``). Anything shown to a client, written to a log or recorded as
metadata names the store by ``redact_uri(uri)``, and text that may quote the URI (an exception
from a client library) goes through ``scrub(text, uri)``. A webhook or gateway, whose path may be
the secret, is named by ``destination(url)``. These are the only redactions: pure string work
(``urllib.parse`` only splits the text).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

MASK = "***"
# The password of any ``scheme://user:password@host`` in free text (a URL an exception quotes).
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s/]*@")
SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "token", "secret", "key", "access_key", "secret_key", "sig", "signature")


def _secrets(uri: str) -> list[str]:
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:  # not a URL (a plain path): nothing to hide
        return []
    found = [password, unquote(password)] if password else []
    found += [value for key, value in parse_qsl(parts.query) if value and any(k in key.lower() for k in SECRET_QUERY_KEYS)]
    return found


def destination(url: str) -> str:
    """Scheme, host and port of ``url`` only: how a webhook or gateway is named in logs, where its
    path or query may hold the secret (a Slack webhook's path, say)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def redact_uri(uri: str) -> str:
    """``uri`` with its password and secret query values replaced by ``***``; the user name,
    host, port and path stay, so the store is still recognisable."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return uri
    if not _secrets(uri):
        return uri
    netloc = parts.netloc
    if password:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{MASK}@{hostport}"
    query = "&".join(
        f"{key}={MASK if any(k in key.lower() for k in SECRET_QUERY_KEYS) else value}" for key, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, *uris: str) -> str:
    """``text`` with every secret of ``uris`` (and each URI itself) replaced by its redacted form,
    and the password of any other URL in it masked."""
    for uri in uris:
        if not uri:
            continue
        text = text.replace(uri, redact_uri(uri))
        for secret in _secrets(uri):
            text = text.replace(secret, MASK)
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)
