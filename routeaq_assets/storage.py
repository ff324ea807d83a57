"""The production lake: warehouse tables and report files on S3, through dagster-aws.

Table format: Parquet, one object per table and UTC day
(``{prefix}/tables/{table}/day=2025-08-01/data.parquet``); tables without time (``sites``) are one
object. Why this format for concurrent writers:

- An S3 PUT of a whole object is atomic: a reader sees the old day or the new day, never half.
- A run replaces a window by rewriting the days it touches, each with a conditional PUT
  (``If-Match`` the ETag it read, or ``If-None-Match: *`` for a new day). A run whose day was
  rewritten by another run between its read and its write gets 412, reads the day again and
  re-applies its own rows. So two runs on different days never meet, two runs on different
  hours of the same day both land, and two runs on the same hours end with one complete version
  (the last to commit), never a mixture and never a lock error.
- No catalog service to run beside it; DuckDB and Polars read Parquet natively. (DuckLake would
  need the ``ducklake`` and ``httpfs`` extensions, whose PyPI wheels are published for DuckDB
  1.5.5, not the pinned 1.5.6, and extensions cannot be downloaded at run time.)

Reads: DuckDB is the compute, over a local cache of the objects fetched with the same boto3
client (keyed by ETag, so only changed days are downloaded); DuckDB's httpfs is not used.
"""

from __future__ import annotations

from collections.abc import Iterable

import io
import re
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from routeaq_assets.core.files import write_atomically
from routeaq_assets.lake import Lake
from routeaq_assets.warehouse import WarehouseResource
from routeaq_assets.core.windows import check_rows_for_window

COMMIT_ATTEMPTS = 20
# A cached version of a day older than this is removed when a newer one is fetched; a query that
# listed it a moment ago can still read it.
STALE_CACHE_SECONDS = 600


def _resource_client(resource):  # noqa: ANN001, ANN202 - an S3 resource of this module; a boto3 S3 client
    """The resource's one boto3 client, made on first use: a new client costs a new boto3 session
    (about as long as the request itself); clients are thread-safe."""
    with resource._client_lock:
        if resource._client is None:
            resource._client = resource.s3.get_client()
        return resource._client


def _days(start: datetime, end: datetime) -> list[datetime]:
    """The UTC days that [start, end) touches, as midnights."""
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    while day < end:
        days.append(day)
        day += timedelta(days=1)
    return days


def _conflict(exc: ClientError) -> bool:
    """Another writer committed first (412), or is committing the same key now (409)."""
    return exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404")


class LakeWarehouse(WarehouseResource):
    """The warehouse interface (``replace_window``, ``replace_table``, ``query``, ``has_table``,
    and the shared reads of ``WarehouseReads``) on Parquet objects in S3. Any number of runs and pods may read and write at once."""

    s3: S3Resource
    bucket: str
    prefix: str = "routeaq"
    cache_dir: str
    _client: object = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def client(self):  # noqa: ANN201 - a boto3 S3 client
        return _resource_client(self)

    # -- keys ----------------------------------------------------------------------------------
    def _table_prefix(self, table: str) -> str:
        return f"{self.prefix}/tables/{table}/"

    def _day_key(self, table: str, day: datetime) -> str:
        return f"{self._table_prefix(table)}day={day:%Y-%m-%d}/data.parquet"

    def _whole_key(self, table: str) -> str:
        return f"{self._table_prefix(table)}table.parquet"

    # -- writes --------------------------------------------------------------------------------
    def replace_window(
        self, table: str, frames: pl.DataFrame | Iterable[pl.DataFrame], start: datetime, end: datetime, site_ids: list[str] | None = None
    ) -> int:
        """Replace the rows of [start, end) in ``table`` with ``frames`` (one frame, or frames
        produced one at a time, as ``Warehouse.replace_window`` takes them; only the rows of
        ``site_ids`` when given). Each day is one object, replaced atomically, so the frames are
        gathered before the first day is written; a failure leaves every day it had not
        committed as it was. Returns the number of rows that were replaced."""
        parts = [frames] if isinstance(frames, pl.DataFrame) else [f for f in frames if f.width]
        if not parts:
            return 0
        frame = pl.concat(parts, how="vertical_relaxed")
        check_rows_for_window(table, frame, start, end, site_ids)
        replaced = 0
        for day in _days(start, end):
            low, high = max(start, day), min(end, day + timedelta(days=1))
            incoming = frame.filter((pl.col("time") >= low) & (pl.col("time") < high))
            replaced += self._replace_day(table, day, incoming, low, high, site_ids)
        return replaced

    def _replace_day(self, table: str, day: datetime, incoming: pl.DataFrame, low: datetime, high: datetime, site_ids: list[str] | None) -> int:
        client = self.client()
        key = self._day_key(table, day)
        for attempt in range(COMMIT_ATTEMPTS):
            stored, etag = self._read_object(client, key)
            if stored is None and incoming.is_empty():
                return 0
            hit = (pl.col("time") >= low) & (pl.col("time") < high)
            if site_ids is not None:
                hit = hit & pl.col("site_id").is_in(site_ids)
            if stored is not None:
                kept, replaced = stored.filter(~hit), stored.filter(hit).height
                if replaced == 0 and incoming.is_empty():
                    return 0
                day_frame = pl.concat([kept, incoming], how="diagonal_relaxed")  # by column name, as INSERT BY NAME
            else:
                day_frame, replaced = incoming, 0
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                client.put_object(Bucket=self.bucket, Key=key, Body=self._parquet(day_frame.sort([c for c in ("time", "site_id") if c in day_frame.columns])), **condition)
                return replaced
            except ClientError as exc:
                if not _conflict(exc):
                    raise
                time.sleep(min(0.05 * 2**attempt, 1.0))  # another run committed this day first: re-read and re-apply
        raise RuntimeError(f"{table} {day:%Y-%m-%d}: {COMMIT_ATTEMPTS} commits lost to concurrent writers of s3://{self.bucket}/{key}")

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        """Replace a table that has no time partitioning (one object, last writer wins)."""
        self.client().put_object(Bucket=self.bucket, Key=self._whole_key(table), Body=self._parquet(frame))

    @staticmethod
    def _parquet(frame: pl.DataFrame) -> bytes:
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        return buffer.getvalue()

    def _read_object(self, client, key: str) -> tuple[pl.DataFrame | None, str | None]:  # noqa: ANN001 - a boto3 S3 client
        try:
            answer = client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None, None
            raise
        return pl.read_parquet(io.BytesIO(answer["Body"].read())), answer["ETag"]

    # -- reads ---------------------------------------------------------------------------------
    def _objects(self, table: str) -> list[dict]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [o for page in paginator.paginate(Bucket=self.bucket, Prefix=self._table_prefix(table)) for o in page.get("Contents", [])]

    def has_table(self, table: str, wait_s: float | None = None) -> bool:
        answer = self.client().list_objects_v2(Bucket=self.bucket, Prefix=self._table_prefix(table), MaxKeys=1)
        return answer.get("KeyCount", 0) > 0

    def _tables(self) -> list[str]:
        answer = self.client().list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/tables/", Delimiter="/")
        return [p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in answer.get("CommonPrefixes", [])]

    def _cached(self, table: str) -> list[str]:
        """Local copies of the table's objects, fetched where the ETag changed."""
        client = self.client()
        paths = []
        for obj in self._objects(table):
            folder = Path(self.cache_dir) / self.bucket / obj["Key"]
            path = folder / f"{obj['ETag'].strip(chr(34))}.parquet"
            if not path.exists():
                write_atomically(path, lambda partial, key=obj["Key"]: self._download(client, key, partial))
                for old in folder.glob("*.parquet"):
                    if old != path and time.time() - old.stat().st_mtime > STALE_CACHE_SECONDS:
                        old.unlink(missing_ok=True)
            paths.append(str(path))
        return paths

    def _download(self, client, key: str, dest: Path) -> None:
        with open(dest, "wb") as out:
            client.download_fileobj(self.bucket, key, out)

    def query(self, sql: str, params: list | None = None, wait_s: float | None = None) -> pl.DataFrame:
        """Run DuckDB SQL over the lake's tables (each table a view on its cached objects).
        Writers never block readers here, so ``wait_s`` has nothing to bound."""
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            for table in self._tables():
                if re.search(rf"\b{re.escape(table)}\b", sql):
                    files = self._cached(table)
                    if files:
                        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({files!r}, union_by_name = true, hive_partitioning = false)")
            return pl.from_arrow(con.execute(sql, params or []).to_arrow_table())
        finally:
            con.close()


class S3Lake(Lake):
    """The lake's files as S3 objects under ``s3://{bucket}/{prefix}/``: one PUT each, so a reader
    sees the old object or the new one."""

    s3: S3Resource
    bucket: str
    prefix: str = "routeaq"
    _client: object = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def client(self):  # noqa: ANN201 - a boto3 S3 client
        return _resource_client(self)

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if key else self.prefix

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def write_bytes(self, key: str, data: bytes) -> str:
        self.client().put_object(Bucket=self.bucket, Key=self._object_key(key), Body=data)
        return self.uri(key)

    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self.client().get_object(Bucket=self.bucket, Key=self._object_key(key))["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    def list_keys(self, prefix: str, suffix: str = "") -> list[str]:
        folder = f"{self._object_key(prefix.rstrip('/'))}/"
        paginator = self.client().get_paginator("list_objects_v2")
        names = [
            o["Key"][len(folder):]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=folder, Delimiter="/")
            for o in page.get("Contents", [])
        ]
        return sorted(f"{prefix.rstrip('/')}/{name}" for name in names if name and name.endswith(suffix))

    def delete(self, key: str) -> None:
        self.client().delete_object(Bucket=self.bucket, Key=self._object_key(key))  # S3 answers 204 for a missing key too
