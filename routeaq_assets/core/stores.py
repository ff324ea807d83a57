"""Where the service reads site history: the online store (recent hours, one small table) and
the offline history (every stored hour, one Parquet file per year). Both are written by Dagster
assets and read by the service, which never opens the warehouse."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import polars as pl


class FileOnlineStore:
    """The recent-history panel as one Parquet file, replaced atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def publish(self, panel: pl.DataFrame) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        panel.write_parquet(partial)
        partial.replace(self.path)
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
        self.url = url

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
            raise FileNotFoundError(f"no online panel under {self.key} at {self.url}")
        return pl.read_parquet(io.BytesIO(data))


def online_store(target: str) -> FileOnlineStore | RedisOnlineStore:
    """``redis://...`` is Redis; anything else is a file path. A fragment names the key, so
    deployments can share one Redis: ``redis://host:6379/0#routeaq-staging:online``."""
    if not target.startswith(("redis://", "rediss://")):
        return FileOnlineStore(Path(target))
    url, _, key = target.partition("#")
    return RedisOnlineStore(url, key) if key else RedisOnlineStore(url)


class HistoryStore:
    """Every stored hour of the panel, one Parquet file per UTC year."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, year: int) -> Path:
        return self.folder / f"panel-{year}.parquet"

    def write_year(self, year: int, panel: pl.DataFrame) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.path(year).with_name(self.path(year).name + ".partial")
        panel.sort("site_id", "time").write_parquet(partial)
        partial.replace(self.path(year))

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("panel-*.parquet"))

    def written_at(self, year: int) -> float | None:
        return self.path(year).stat().st_mtime if self.path(year).exists() else None

    def start(self) -> datetime | None:
        files = self.files()
        return pl.scan_parquet(files).select(pl.col("time").min()).collect().item() if files else None

    def window(self, site_ids: list[str], start: datetime, end: datetime) -> pl.DataFrame:
        """Panel rows of ``site_ids`` in [start, end), read with predicate push-down."""
        files = [self.path(y) for y in range(start.year, end.year + 1) if self.path(y).exists()]
        if not files:
            return pl.DataFrame()
        return (
            pl.scan_parquet(files)
            .filter(pl.col("site_id").is_in(site_ids) & (pl.col("time") >= start) & (pl.col("time") < end))
            .collect()
        )
