"""UK-AIR near-real-time observations: the Sensor Observation Service, a 52°North Timeseries REST
API (v1) at ``SOS_URL``.

What the client relies on (from the API's public documentation and client code, not a live call):
- ``GET timeseries?expanded=true&phenomenon={id}``: a JSON list of series; each has ``id``,
  ``station.properties.label`` = ``{Site name}-{Pollutant} (air|aerosol)``,
  ``station.geometry.coordinates`` = ``[lat, lon, "NaN"]`` (sometimes swapped or placeholders)
  and ``lastValue.timestamp``. No AURN site code: series are matched to sites by name against the
  AURN metadata, else by coordinates within ``MATCH_DISTANCE_M``. Of several series of one site and
  pollutant, the one with the newest ``lastValue`` is the live one.
- ``GET timeseries/{id}/getData?timespan={start}/{end}``: ``{"values": [{"timestamp": ms, "value":
  x}, ...]}``, milliseconds since the epoch, UTC. The timestamp is the END of the hourly mean (the
  provider: "the average over the preceding hour"), so the hour beginning is ``timestamp - 1 h``,
  the hour openair's ``date`` names (checked against a published openair file in tests).
- Missing values: ``-99``, ``null``, or the hour absent. All three are null here.
- The service goes down for hours (502) without notice and publishes no rate limit: timeouts,
  retries with backoff, a circuit breaker per address, a few requests at a time, and the series
  list cached for a day.
Values are provisional (status ``P``); the archive files replace them later with ratified ones.
"""

from __future__ import annotations

import json
import math
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import polars as pl
import requests

from routeaq_assets.core.schema import OBSERVATIONS, TIME, SourceDataError, conform
from routeaq_assets.core.files import write_atomically, written_within
from routeaq_assets.adapters.retries import RetryPolicy
from routeaq_assets.sources.http import USER_AGENT, SourceUnavailable

SOS_URL = "https://uk-air.defra.gov.uk/sos-ukair/api/v1/"
PHENOMENA = {"no2": "8", "pm25": "6001", "pm10": "5", "o3": "7", "nox": "9"}  # EIONET pollutant codes
MISSING_MARKER = -99.0
PROVISIONAL = "P"
UNIT = "ugm-3"
SERIES_LIST_TTL_S = 24 * 3600
MATCH_DISTANCE_M = 500.0
RETRY_STATUSES = (429, 500, 502, 503, 504)

# (url, params, timeout) -> (HTTP status, parsed JSON body or None)
Transport = Callable[[str, dict, float], tuple[int, Any]]


class CircuitOpen(SourceUnavailable):
    """The service failed repeatedly; no request is sent until the cool-down has passed."""


class CircuitBreaker:
    """Opens after ``failures`` failed requests in a row (each after its retries) and refuses
    requests for ``cooldown_s``; then lets one request through, which closes it or reopens it.
    With ``state_path`` the state is kept in a file, so the next run (a new process an hour
    later) still knows the service is down. The opening time is wall-clock (``clock``), the only
    clock another process shares: when it lies ahead of now (the clock was set back), the cooldown
    counts again from now, so a clock set back an hour never keeps the circuit open an hour more."""

    def __init__(self, failures: int = 3, cooldown_s: float = 900.0, state_path: Path | None = None, probe_s: float = 60.0,
                 clock: Callable[[], float] = time.time):
        self.failures, self.cooldown_s, self.state_path, self.probe_s, self.clock = failures, cooldown_s, state_path, probe_s, clock
        self._failed, self._opened_at = 0, None
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self.state_path is not None and self.state_path.exists():
            try:
                state = json.loads(self.state_path.read_text())
                self._failed, self._opened_at = int(state["failed"]), state["opened_at"]
            except (ValueError, KeyError, TypeError):
                self._failed, self._opened_at = 0, None  # a damaged state file: start closed

    def _save(self) -> None:
        if self.state_path is not None:
            write_atomically(self.state_path, json.dumps({"failed": self._failed, "opened_at": self._opened_at}).encode())

    def check(self, what: str) -> None:
        with self._lock:
            self._load()
            if self._opened_at is None:
                return
            now = self.clock()
            if self._opened_at > now:  # opened "in the future": the clock was set back since
                self._opened_at = now
                self._save()
            wait = self.cooldown_s - (now - self._opened_at)
            if wait > 0:
                raise CircuitOpen(f"{what}: not asked, the SOS circuit is open after {self._failed} failed requests (retry in {wait:.0f} s)")
            # Half open: this request decides; the others wait up to probe_s for its answer.
            self._opened_at = now - self.cooldown_s + self.probe_s
            self._save()

    def record(self, ok: bool) -> None:
        with self._lock:
            self._load()
            if ok:
                self._failed, self._opened_at = 0, None
            else:
                self._failed += 1
                if self._failed >= self.failures:
                    self._opened_at = self.clock()
            self._save()


_BREAKERS: dict[str, CircuitBreaker] = {}
_SLOTS: dict[str, threading.BoundedSemaphore] = {}
_LIST_LOCKS: dict[str, threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


def _shared(table: dict, key: str, make: Callable[[], Any]) -> Any:
    """One breaker, request limit and list lock per service address, shared by every client."""
    with _REGISTRY_LOCK:
        if key not in table:
            table[key] = make()
        return table[key]


def http_transport(session: requests.Session) -> Transport:
    def get(url: str, params: dict, timeout: float) -> tuple[int, Any]:
        response = session.get(url, params=params, timeout=timeout, headers={"Accept": "application/json"})
        if response.status_code >= 400:
            return response.status_code, None
        try:
            return response.status_code, response.json()
        except ValueError as exc:
            raise SourceDataError(f"{response.url}: not JSON ({response.text[:80]!r})") from exc

    return get


class SosClient:
    """Reads series lists and hourly values from one SOS address (``base_url``)."""

    def __init__(self, base_url: str = SOS_URL, *, cache_folder: Path, transport: Transport | None = None, timeout_s: float = 20.0,
                 retries: int = 2, backoff_s: float = 1.0, max_concurrency: int = 3, breaker: CircuitBreaker | None = None):
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.cache_folder = Path(cache_folder)
        self.timeout_s = timeout_s
        self.retry_policy = RetryPolicy(retries, backoff_s, errors=(requests.Timeout, requests.ConnectionError),
                                        retry_answer=lambda answer: answer[0] in RETRY_STATUSES)
        if transport is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            transport = http_transport(session)
        self.transport = transport
        self.breaker = breaker or _shared(_BREAKERS, self.base_url, lambda: CircuitBreaker(state_path=self.cache_folder / "circuit.json"))
        self._slots = _shared(_SLOTS, self.base_url, lambda: threading.BoundedSemaphore(max_concurrency))

    def get(self, path: str, params: dict) -> Any:
        """One JSON answer, retried with exponential backoff on timeouts, refused connections,
        429 and 5xx (``routeaq_assets.adapters.retries``); a 4xx is an error naming the request. Failures
        count towards the breaker."""
        url = self.base_url + path
        self.breaker.check(url)

        def ask() -> tuple[int, Any]:
            with self._slots:
                return self.transport(url, params, self.timeout_s)

        try:
            (status, body), attempts = self.retry_policy.call(ask)
        except (requests.Timeout, requests.ConnectionError) as exc:
            self.breaker.record(False)
            raise SourceUnavailable(f"{url}: {type(exc).__name__}: {exc} after {self.retry_policy.retries + 1} attempts") from exc
        if status in RETRY_STATUSES:
            self.breaker.record(False)
            raise SourceUnavailable(f"{url}: HTTP {status} after {attempts} attempts")
        self.breaker.record(True)  # the service answered
        if status >= 400:
            raise SourceDataError(f"{url} {params}: HTTP {status}")
        return body

    def series_list(self, pollutant: str) -> list[dict]:
        """The expanded series of one pollutant, from a copy at most a day old (a stale copy
        serves while the service is down)."""
        phenomenon = PHENOMENA[pollutant]
        cache = self.cache_folder / f"series-{phenomenon}.json"
        with _shared(_LIST_LOCKS, self.base_url, threading.Lock):
            if written_within(cache, SERIES_LIST_TTL_S, time.time()):
                return json.loads(cache.read_text())
            try:
                series = self.get("timeseries", {"expanded": "true", "phenomenon": phenomenon})
            except SourceUnavailable:
                if cache.exists():
                    return json.loads(cache.read_text())
                raise
            if not isinstance(series, list):
                raise SourceDataError(f"{self.base_url}timeseries?phenomenon={phenomenon}: expected a list of series, got {type(series).__name__}")
            write_atomically(cache, json.dumps(series).encode())
            return series

    def site_series(self, metadata: pl.DataFrame, pollutants: tuple[str, ...]) -> pl.DataFrame:
        """The live series of every AURN site and pollutant (``series_to_sites``)."""
        return pl.concat([series_to_sites(self.series_list(p), metadata, p) for p in pollutants], how="vertical")

    def values(self, series_id: str, start: datetime, end: datetime) -> list[dict]:
        """The raw values whose hour begins in [start, end): timestamps (hour ends) in (start, end]."""
        timespan = f"{_iso(start + timedelta(hours=1))}/{_iso(end)}"
        body = self.get(f"timeseries/{series_id}/getData", {"timespan": timespan})
        if not isinstance(body, dict) or not isinstance(body.get("values"), list):
            raise SourceDataError(f"{self.base_url}timeseries/{series_id}/getData: no 'values' list in the answer")
        return body["values"]

    def observations(self, site_id: str, metadata: pl.DataFrame, pollutants: tuple[str, ...], start: datetime, end: datetime,
                     network: str = "aurn") -> pl.DataFrame | None:
        """Hourly observations of one site for [start, end), every hour present (missing: null),
        or None when the service has no series for the site."""
        series = self.site_series(metadata, pollutants).filter(pl.col("site_id") == site_id)
        frames = [
            sos_values_to_observations(self.values(row["series_id"], start, end), site_id=site_id, pollutant=row["pollutant"],
                                       start=start, end=end, network=network, source=f"{self.base_url}timeseries/{row['series_id']}")
            for row in series.iter_rows(named=True)
        ]
        return pl.concat(frames) if frames else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def hour_beginning(timestamp_ms: int | float) -> datetime:
    """The hour a value covers: its timestamp ends the hourly mean, so the hour begins 1 h earlier."""
    return datetime.fromtimestamp(timestamp_ms / 1000, timezone.utc) - timedelta(hours=1)


def sos_values_to_observations(values: list[dict], *, site_id: str, pollutant: str, start: datetime, end: datetime, source: str,
                               network: str = "aurn", ingested_at: datetime | None = None) -> pl.DataFrame:
    """One row per hour of [start, end) for one site and pollutant: the value, or null for -99,
    null or an absent hour. A timestamp off the hour or given twice is an error naming it."""
    hours: dict[datetime, float | None] = {}
    for item in values:
        if not isinstance(item, dict) or "timestamp" not in item:
            raise SourceDataError(f"{source}: value without a timestamp: {item!r}")
        ms = item["timestamp"]
        if not isinstance(ms, (int, float)) or ms % 3_600_000:
            raise SourceDataError(f"{source}: timestamp {ms!r} is not on the hour (expected milliseconds since the epoch)")
        hour = hour_beginning(ms)
        if hour in hours:
            raise SourceDataError(f"{source}: two values for the hour ending {hour + timedelta(hours=1):%Y-%m-%d %H:%M} UTC")
        value = item.get("value")
        if isinstance(value, (int, float)) and not (math.isnan(value) or value == MISSING_MARKER):
            hours[hour] = float(value)
        else:
            hours[hour] = None
    grid = pl.datetime_range(start, end, "1h", closed="left", time_unit="us", time_zone="UTC", eager=True).alias("time")
    known = pl.DataFrame({"time": list(hours), "value": list(hours.values())}, schema={"time": TIME, "value": pl.Float64})
    frame = pl.DataFrame(grid).join(known, on="time", how="left").with_columns(
        pl.lit(site_id).alias("site_id"),
        pl.lit(pollutant).alias("pollutant"),
        pl.lit(UNIT).alias("unit"),
        pl.lit(PROVISIONAL).alias("status"),
        pl.lit(network).alias("network"),
        pl.lit(source).alias("source"),
        pl.lit(ingested_at or datetime.now(timezone.utc)).cast(TIME).alias("ingested_at"),
    )
    return conform(frame, OBSERVATIONS, source).sort("time")


def _name_key(name: str) -> str:
    return " ".join(str(name).lower().replace("-", " ").split())


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(a))


def series_to_sites(series: list[dict], metadata: pl.DataFrame, pollutant: str) -> pl.DataFrame:
    """``series_id, site_id, pollutant, last_value_at, matched_by`` for the live series of each
    site: the station label's site name against ``metadata.site_name``, else the nearest site
    within ``MATCH_DISTANCE_M`` of the coordinates (read both ways round). Unmatched series are
    left out; of several series of one site the one with the newest ``lastValue`` is kept."""
    sites = metadata.select("site_id", "site_name", pl.col("latitude").cast(pl.Float64), pl.col("longitude").cast(pl.Float64)).unique("site_id")
    keys = sites.with_columns(pl.col("site_name").map_elements(_name_key, return_dtype=pl.Utf8).alias("key"))
    by_name = dict(keys.filter(pl.col("key").is_unique()).select("key", "site_id").iter_rows())  # a shared name: coordinates decide
    rows = []
    for item in series:
        station = item.get("station") or {}
        label = str((station.get("properties") or {}).get("label") or item.get("label") or "")
        site_id, matched_by = by_name.get(_name_key(label.rsplit("-", 1)[0])), "name"
        if site_id is None:
            site_id, matched_by = _nearest_site(sites, (station.get("geometry") or {}).get("coordinates")), "coordinates"
        if site_id is None:
            continue
        last = (item.get("lastValue") or {}).get("timestamp")
        rows.append({"series_id": str(item["id"]), "site_id": site_id, "pollutant": pollutant,
                     "last_value_at": hour_beginning(last) if isinstance(last, (int, float)) else None, "matched_by": matched_by})
    schema = {"series_id": pl.Utf8, "site_id": pl.Utf8, "pollutant": pl.Utf8, "last_value_at": TIME, "matched_by": pl.Utf8}
    frame = pl.DataFrame(rows, schema=schema)
    return frame.sort("last_value_at", descending=True, nulls_last=True).unique(["site_id", "pollutant"], keep="first").sort("site_id")


def _nearest_site(sites: pl.DataFrame, coordinates: Any) -> str | None:
    try:
        a, b = float(coordinates[0]), float(coordinates[1])
    except (TypeError, ValueError, IndexError):
        return None
    best, best_distance = None, MATCH_DISTANCE_M
    for row in sites.drop_nulls(["latitude", "longitude"]).iter_rows(named=True):
        for lat, lon in ((a, b), (b, a)):
            if -90 <= lat <= 90 and (d := _distance_m(lat, lon, row["latitude"], row["longitude"])) <= best_distance:
                best, best_distance = row["site_id"], d
    return best
