"""One HTTP client for every outside source: pooled connections, timeouts, retries with
backoff on 5xx, timeouts and refused connections (never on 404; ``routeaq_assets.adapters.retries``), and
a download cache with conditional requests."""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from routeaq_assets.core.files import write_atomically, written_within
from routeaq_assets.adapters.retries import RetryPolicy

USER_AGENT = "RouteAQ/0.1 (+https://github.com/routeaq)"
NOT_FOUND_TTL_S = 24 * 3600  # a missing site-year is asked for again after a day


class SourceUnavailable(RuntimeError):
    """An outside source failed after its retries (5xx, timeout, refused connection)."""


RETRY_STATUSES = (500, 502, 503, 504)
RETRIED_METHODS = ("GET", "HEAD")  # reading again is safe; nothing here posts to a source


class RetryingSession(requests.Session):
    """A session whose GET and HEAD requests go through ``policy``: asked again on a refused
    connection, a timeout or a 5xx of ``RETRY_STATUSES``. When the retries run out on a 5xx the
    last answer is returned (the caller names it), on an error that error is raised."""

    def __init__(self, policy: RetryPolicy):
        super().__init__()
        self.policy = policy

    def request(self, method, url, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - requests' signature
        if method.upper() not in RETRIED_METHODS:
            return super().request(method, url, *args, **kwargs)
        answer, _ = self.policy.call(lambda: super(RetryingSession, self).request(method, url, *args, **kwargs))
        return answer


def source_retries(retries: int = 3, backoff: float = 0.5) -> RetryPolicy:
    """The sources' retries: waits of 0.5, 1 and 2 s by default."""
    return RetryPolicy(retries, backoff, errors=(requests.ConnectionError, requests.Timeout),
                       retry_answer=lambda response: response.status_code in RETRY_STATUSES)


def make_session(retries: int = 3, backoff: float = 0.5, pool_size: int = 4) -> requests.Session:
    session = RetryingSession(source_retries(retries, backoff))
    adapter = HTTPAdapter(max_retries=0, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


@lru_cache(maxsize=1)
def shared_session() -> requests.Session:
    """One pooled session per process, so a backfill reuses its connections."""
    return make_session()


def fetch_to_cache(session: requests.Session, url: str, dest: Path, timeout: float = 30.0) -> Path | None:
    """Download ``url`` to ``dest`` unless the cached copy is still current.

    Returns None for 404 (the file does not exist: no data), remembered for a day so a backfill
    does not ask again for every hour. A cached copy is revalidated with
    ``If-None-Match``/``If-Modified-Since``; a 304 keeps it. The file is replaced atomically.
    """
    meta_path = dest.with_name(dest.name + ".http.json")
    missing = dest.with_name(dest.name + ".404")
    if written_within(missing, NOT_FOUND_TTL_S, time.time()):
        return None
    headers = {}
    if dest.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("etag"):
            headers["If-None-Match"] = meta["etag"]
        if meta.get("last_modified"):
            headers["If-Modified-Since"] = meta["last_modified"]
    try:
        response = session.get(url, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise SourceUnavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code == 304:
        return dest
    if response.status_code == 404:
        missing.parent.mkdir(parents=True, exist_ok=True)
        missing.touch()
        return None
    if response.status_code >= 400:
        raise SourceUnavailable(f"{url}: HTTP {response.status_code} after retries")
    write_atomically(dest, response.content)
    meta_path.write_text(
        json.dumps({"etag": response.headers.get("ETag"), "last_modified": response.headers.get("Last-Modified")})
    )
    return dest
