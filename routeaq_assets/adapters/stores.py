"""Where the service reads site history: the online store (recent hours, one small table) and
the offline history (every stored hour, one Parquet file per year). Both are written by Dagster
assets and read by the service, which never opens the warehouse. In production the yearly files
are written to the shared folder (``adapters.shared``, ``{prefix}/history/`` in the lake's bucket)
and every service pod downloads the changed ones into its own folder (``HistoryStore.sync``)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from routeaq_assets.adapters.redact import redact_uri
from routeaq_assets.adapters.shared import SharedFolder
from routeaq_assets.core.files import write_atomically
from routeaq_assets.core.windows import year_span


class FileOnlineStore:
    """The recent-history panel as one Parquet file, replaced atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def publish(self, panel: pl.DataFrame) -> str:
        write_atomically(self.path, panel.write_parquet)
        return str(self.path)

    def version(self) -> str | None:
        return str(self.path.stat().st_mtime_ns) if self.path.exists() else None

    def read(self) -> pl.DataFrame:
        return pl.read_parquet(self.path)


class RedisOnlineStore:
    """The recent-history panel as Parquet bytes under one Redis key, with a version key, written
    in one transaction so a reader never sees a panel and a version that do not match."""

    def __init__(self, url: str, key: str = "routeaq:online:panel"):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.key = key
        self.url = redact_uri(url)  # what messages and metadata show: never the password

    def publish(self, panel: pl.DataFrame) -> str:
        buffer = io.BytesIO()
        panel.write_parquet(buffer)
        version = datetime.now().strftime("%Y%m%dT%H%M%S%f")
        self.client.pipeline(transaction=True).set(self.key, buffer.getvalue()).set(f"{self.key}:version", version).execute()
        return f"{self.url} {self.key}"

    def version(self) -> str | None:
        value = self.client.get(f"{self.key}:version")
        return value.decode() if value else None

    def read(self) -> pl.DataFrame:
        data = self.client.get(self.key)
        if data is None:
            raise FileNotFoundError(f"nothing published under {self.key} at {self.url}")
        return pl.read_parquet(io.BytesIO(data))


def online_store(target: str) -> FileOnlineStore | RedisOnlineStore:
    """``redis://...`` is Redis; anything else is a file path. A fragment names the key, so
    deployments can share one Redis: ``redis://host:6379/0#routeaq-staging:online``."""
    if not target.startswith(("redis://", "rediss://")):
        return FileOnlineStore(Path(target))
    url, _, key = target.partition("#")
    return RedisOnlineStore(url, key) if key else RedisOnlineStore(url)


def _beside_panel(target: str, name: str) -> FileOnlineStore | RedisOnlineStore:
    """A table published beside the online panel of ``target``: ``{name}.parquet`` next to the
    panel file, or the panel's Redis key with ``:{name}`` appended."""
    store = online_store(target)
    if isinstance(store, FileOnlineStore):
        return FileOnlineStore(store.path.with_name(f"{name}.parquet"))
    url = target.partition("#")[0]
    return RedisOnlineStore(url, f"{store.key}:{name}")


def interval_factor_store(target: str) -> FileOnlineStore | RedisOnlineStore:
    """Where the interval factors (``core.intervals``) are published beside the online panel."""
    return _beside_panel(target, "interval_factors")


def daily_error_store(target: str) -> FileOnlineStore | RedisOnlineStore:
    """Where the verified daily errors (``core.daily_verification.daily_errors``) that give a
    wholly forecast day's odds are published beside the online panel."""
    return _beside_panel(target, "daily_errors")


class HistoryUnreadable(Exception):
    """A yearly history file that cannot be read. The message names the file by its name in the
    history folder (not its full path) and the reader's complaint."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"history file {name} is unreadable: {reason}")
        self.name, self.reason = name, reason


def _reason(exc: Exception, folder: Path) -> str:
    """The reader's complaint, first line only, without the folder's path."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.replace(str(folder.resolve()), "<history>").replace(str(folder), "<history>")


class HistoryStore:
    """Every stored hour of the panel, one Parquet file per UTC year.

    Each file is read on its own, so that one corrupt or unreadable year fails only the hours
    that need it (``HistoryUnreadable``); ``problems`` lists the files found unreadable, until
    the file is replaced.

    With ``shared`` (production), the writer's files go to the shared folder and ``folder`` is
    the reader's local copy, brought up to date by ``sync``; reads are always local files."""

    def __init__(self, folder: Path, shared: SharedFolder | None = None):
        self.folder = Path(folder)
        self.shared = shared
        self._etags: dict[str, str] = {}  # file name -> the ETag of the shared object copied to it
        # file name -> (its mtime when the read failed, the reason)
        self._failed: dict[str, tuple[int, str]] = {}
        self._failed_lock = threading.Lock()

    def path(self, year: int) -> Path:
        return self.folder / f"panel-{year}.parquet"

    def write_year(self, year: int, panel: pl.DataFrame) -> None:
        if self.shared is None:
            write_atomically(self.path(year), panel.sort("site_id", "time").write_parquet)
            return
        buffer = io.BytesIO()
        panel.sort("site_id", "time").write_parquet(buffer)
        self.shared.put(self.path(year).name, buffer.getvalue())

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("panel-*.parquet"))

    def written_at(self, year: int) -> float | None:
        if self.shared is not None:
            return self.shared.modified(self.path(year).name)
        return self.path(year).stat().st_mtime if self.path(year).exists() else None

    def sync(self) -> bool:
        """Copy the yearly files that changed in the shared folder since the last sync (by ETag,
        each replaced atomically); True if any did. Embedded there is nothing to copy."""
        if self.shared is None:
            return False
        changed = False
        for name, etag in self.shared.objects("panel-").items():
            if name.endswith(".parquet") and (self._etags.get(name) != etag or not (self.folder / name).exists()):
                self.shared.download(name, self.folder / name)
                self._etags[name] = etag
                changed = True
        return changed

    def _read(self, path: Path, query: Callable[[pl.LazyFrame], pl.LazyFrame]) -> pl.DataFrame:
        """``query`` over one file; a failure is recorded and raised as ``HistoryUnreadable``."""
        try:
            mtime = path.stat().st_mtime_ns
            frame = query(pl.scan_parquet(path)).collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            reason = _reason(exc, self.folder)
            with self._failed_lock:
                self._failed[path.name] = (path.stat().st_mtime_ns if path.exists() else 0, reason)
            raise HistoryUnreadable(path.name, reason) from None
        with self._failed_lock:
            self._failed.pop(path.name, None)
        return frame

    def problems(self) -> dict[str, str]:
        """Unreadable files (by name) and why, leaving out those replaced since they failed."""
        with self._failed_lock:
            failed = dict(self._failed)
        current = {}
        for name, (mtime, reason) in failed.items():
            path = self.folder / name
            if path.exists() and path.stat().st_mtime_ns == mtime:
                current[name] = reason
        return current

    def start(self) -> datetime | None:
        """The oldest stored hour. An unreadable year counts from its 1 January, so that its hours
        are answered as unavailable (naming the file) rather than as never stored."""
        starts = []
        for path in self.files():
            try:
                starts.append(self._read(path, lambda frame: frame.select(pl.col("time").min())).item())
            except HistoryUnreadable:
                year = int(path.stem.removeprefix("panel-"))
                starts.append(datetime(year, 1, 1, tzinfo=timezone.utc))
        starts = [s for s in starts if s is not None]
        return min(starts) if starts else None

    def window(self, site_ids: list[str], start: datetime, end: datetime) -> pl.DataFrame:
        """Panel rows of ``site_ids`` in [start, end), read with predicate push-down, one file per
        year; raises ``HistoryUnreadable`` naming the first unreadable year the window needs."""
        files = [self.path(y) for y in year_span(start, end) if self.path(y).exists()]
        frames = [
            self._read(path, lambda frame: frame.filter(pl.col("site_id").is_in(site_ids) & (pl.col("time") >= start) & (pl.col("time") < end)))
            for path in files
        ]
        frames = [f for f in frames if not f.is_empty()]
        return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
