"""The production lake on S3, through dagster-aws: the warehouse's tables in Delta Lake, and the
report files as plain objects.

Tables (``DeltaWarehouse``): one Delta table per warehouse table under ``{location}/{table}``,
written with delta-rs (the ``deltalake`` package) and read by DuckDB, so Spark, Trino, Athena and
Polars read the same tables (docs/production.md).

- Replacing a window is one Delta commit, across however many days it spans: a predicate
  overwrite removes the files of the window's rows and adds the new ones in the same log entry, so
  a reader sees the old window or the new one, never half of it.
- Tables with a ``time`` column are partitioned by its UTC date (``utc_date``), so a replacement
  rewrites only the days it touches and compaction never merges a year into one file. Reads leave
  the partition column out: rows keep their contract columns.
- Commits on S3 are conditional PUTs of the next log entry (``If-None-Match``), so two writers never
  both take one version. A writer that loses (delta-rs raises ``CommitFailedError``) reads the table
  again and re-applies its rows, through the one retry policy (``adapters.retries.RetryPolicy``): runs on different days both land,
  runs on the same hours end with one whole version, never a mixture.
- Every commit is a table version. ``table_version`` names it, and ``as_of`` reads the tables as
  they were at given versions (what a training run read, for a backtest to re-run on).
- There is no transaction across tables: each table's replacement is atomic, and tables commit in
  the order the assets run.
"""

from __future__ import annotations

import itertools
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Optional, TypeVar

import duckdb
import polars as pl
import pyarrow as pa
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from pydantic import PrivateAttr

from routeaq_assets.core.warehouse_reads import MaintenanceReport, TablesAsOf
from routeaq_assets.lake import Lake
from routeaq_assets.adapters.retries import RetryPolicy
from routeaq_assets.warehouse import WarehouseResource
from routeaq_assets.core.windows import check_rows_for_window

T = TypeVar("T")
PARTITION_COLUMN = "utc_date"  # the UTC date of ``time``: the partition of every table that has a time
# Set when a table is made. A reader loads the newest checkpoint and at most 9 log entries after it.
# Hourly runs commit 24 times a day; with delta-rs's default of 100, every open replayed up to 100
# entries. bench/lake_formats.py: window writes about 2x and one-week reads about 2.6x faster.
TABLE_PROPERTIES = {"delta.checkpointInterval": "10"}


def _resource_client(resource):  # noqa: ANN001, ANN202 - an S3 resource of this module; a boto3 S3 client
    """The resource's one boto3 client, made on first use: a new client costs a new boto3 session
    (about as long as the request itself); clients are thread-safe."""
    with resource._client_lock:
        if resource._client is None:
            resource._client = resource.s3.get_client()
        return resource._client


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404")


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _quoted(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def window_predicate(start: datetime, end: datetime, site_ids: list[str] | None = None) -> str:
    """The Delta predicate of the rows of [start, end) (of ``site_ids`` when given): the partition
    dates first, so delta-rs reads and rewrites only the days the window touches."""
    start, end = _utc(start), _utc(end)
    last_day: date = (end - timedelta(microseconds=1)).date()
    predicate = (
        f"{PARTITION_COLUMN} >= '{start.date()}' AND {PARTITION_COLUMN} <= '{last_day}' "
        f"AND time >= '{start.isoformat()}' AND time < '{end.isoformat()}'"
    )
    if site_ids is not None:
        predicate += f" AND site_id IN ({', '.join(_quoted(s) for s in site_ids)})"
    return predicate


class DeltaWarehouse(WarehouseResource):
    """The warehouse interface (``replace_window``, ``replace_table``, ``query``, ``has_table``,
    the shared reads of ``WarehouseReads``, ``table_version`` and ``as_of``) on Delta tables under
    ``location``: ``s3://bucket/prefix/tables`` with ``s3`` for the endpoint, region and
    credentials, or a local folder. Any number of runs and pods may read and write at once."""

    location: str
    s3: Optional[S3Resource] = None
    commit_attempts: int = 20  # a writer that lost this many commits in a row gives up, naming the table
    _client: object = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    # -- where ---------------------------------------------------------------------------------
    def _on_s3(self) -> bool:
        return self.location.startswith("s3://")

    def table_uri(self, table: str) -> str:
        return f"{self.location.rstrip('/')}/{table}"

    def storage_options(self) -> dict[str, str]:
        """delta-rs's S3 settings, matching the S3 resource (without keys, delta-rs takes them from
        the environment or the instance's role, as boto3 does). Commits use conditional PUTs."""
        if not self._on_s3():
            return {}
        if self.s3 is None:
            raise ValueError(f"DeltaWarehouse at {self.location}: an s3:// location needs the s3 resource (endpoint, region, credentials)")
        options = {"conditional_put": "etag"}
        for key, value in (
            ("AWS_REGION", self.s3.region_name),
            ("AWS_ENDPOINT_URL", self.s3.endpoint_url),
            ("AWS_ACCESS_KEY_ID", self.s3.aws_access_key_id),
            ("AWS_SECRET_ACCESS_KEY", self.s3.aws_secret_access_key),
            ("AWS_SESSION_TOKEN", self.s3.aws_session_token),
        ):
            if value:
                options[key] = value
        if (self.s3.endpoint_url or "").startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"  # an S3-compatible server on a private network (moto, MinIO)
        return options

    def _open(self, table: str, version: int | None = None) -> DeltaTable | None:
        try:
            return DeltaTable(self.table_uri(table), version=version, storage_options=self.storage_options())
        except TableNotFoundError:
            if version is not None:
                raise
            return None
        except DeltaError as exc:
            if version is None:
                raise
            raise ValueError(f"{table} has no version {version} at {self.table_uri(table)}: {exc}") from exc

    def tables(self, wait_s: float | None = None) -> list[str]:
        """The names of the tables stored under ``location``, in one listing (a reader never
        waits: ``wait_s`` is the embedded warehouse's)."""
        if not self._on_s3():
            root = Path(self.location)
            return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir()) if root.is_dir() else []
        bucket, _, prefix = self.location.removeprefix("s3://").partition("/")
        folder = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        paginator = _resource_client(self).get_paginator("list_objects_v2")
        return sorted(
            p["Prefix"][len(folder):].rstrip("/")
            for page in paginator.paginate(Bucket=bucket, Prefix=folder, Delimiter="/")
            for p in page.get("CommonPrefixes", [])
        )

    # -- versions ------------------------------------------------------------------------------
    def has_table(self, table: str, wait_s: float | None = None) -> bool:
        return DeltaTable.is_deltatable(self.table_uri(table), storage_options=self.storage_options())

    def table_version(self, table: str) -> int | None:
        """The table's current Delta version (one per commit), or None if there is no such table."""
        stored = self._open(table)
        return None if stored is None else stored.version()

    def as_of(self, versions: dict[str, int]) -> TablesAsOf | DeltaWarehouse:
        """The shared reads over the tables as they were at ``versions`` (table -> Delta version);
        tables not named are read as they are now."""
        return TablesAsOf(self.query, versions) if versions else self

    # -- writes --------------------------------------------------------------------------------
    def _committed(self, table: str, commit: Callable[[], T]) -> T:
        """``commit()``, read and applied again each time it loses to another writer's commit (the
        one retry policy of the lake), up to ``commit_attempts`` times."""
        policy = RetryPolicy(retries=self.commit_attempts - 1, backoff_s=0.05, errors=(CommitFailedError,), max_wait_s=2.0, jitter=True)
        try:
            return policy.call(commit)[0]
        except CommitFailedError as exc:
            raise RuntimeError(f"{table}: {self.commit_attempts} commits in a row lost to concurrent writers of {self.table_uri(table)}: {exc}") from exc

    def replace_window(
        self, table: str, frames: pl.DataFrame | Iterable[pl.DataFrame], start: datetime, end: datetime, site_ids: list[str] | None = None
    ) -> int:
        """Replace the rows of [start, end) in ``table`` (only those of ``site_ids`` when given)
        with ``frames`` (one frame, or frames produced one at a time, as ``Warehouse.replace_window``
        takes them), in one commit. The frames are spooled to a local Arrow file as they come (a
        year of the network is never in memory at once) and streamed into the commit, so a retry
        re-applies them. A frame with a column the table lacks adds it (older rows null).
        Returns the number of rows that were replaced."""
        given = self._frames_to_replace(table, frames, site_ids)
        if given is None:
            return 0
        first, parts = given
        with tempfile.TemporaryDirectory(prefix=f"routeaq-{table}-") as folder:
            spool = Path(folder) / "rows.arrow"
            schema = self._spool(table, first, parts, spool, start, end, site_ids)
            return self._committed(table, lambda: self._commit_window(table, spool, schema, start, end, site_ids))

    def _spool(
        self, table: str, first: pl.DataFrame | None, parts: Iterator[pl.DataFrame], spool: Path, start: datetime, end: datetime, site_ids: list[str] | None
    ) -> pa.Schema | None:
        """Write the frames, checked against the window and given the partition column, to an Arrow
        file; returns their schema (the first frame's), or None when there were no frames."""
        if first is None:
            return None
        schema = None
        with pa.OSFile(str(spool), "wb") as sink:
            writer = None
            for frame in itertools.chain([first], parts):
                check_rows_for_window(table, frame, start, end, site_ids)
                arrow = frame.with_columns(pl.col("time").dt.convert_time_zone("UTC").dt.date().alias(PARTITION_COLUMN)).to_arrow()
                if writer is None:
                    schema = arrow.schema
                    writer = pa.ipc.new_file(sink, schema)
                if extra := sorted(set(arrow.schema.names) - set(schema.names)):
                    raise ValueError(f"{table}: a frame has columns {extra} that the window's first frame lacks")
                writer.write_table(arrow.select(schema.names).cast(schema))
            writer.close()
        return schema

    def _commit_window(self, table: str, spool: Path, schema: pa.Schema | None, start: datetime, end: datetime, site_ids: list[str] | None) -> int:
        stored = self._open(table)
        replaced = 0 if stored is None else self._count(stored, start, end, site_ids)
        if schema is None:  # no frame at all: the window's rows are removed
            rows: pa.Table | pa.RecordBatchReader = pa.schema(stored.schema().to_arrow()).empty_table()
        else:
            source = pa.ipc.open_file(pa.memory_map(str(spool)))
            rows = pa.RecordBatchReader.from_batches(schema, (source.get_batch(i) for i in range(source.num_record_batches)))
        write_deltalake(
            stored if stored is not None else self.table_uri(table),
            rows,
            mode="overwrite",
            predicate=window_predicate(start, end, site_ids),
            partition_by=[PARTITION_COLUMN],
            schema_mode="merge",
            storage_options=self.storage_options(),
            configuration=TABLE_PROPERTIES if stored is None else None,
        )
        return replaced

    @staticmethod
    def _count(stored: DeltaTable, start: datetime, end: datetime, site_ids: list[str] | None) -> int:
        con = duckdb.connect()
        try:
            con.register("stored", stored.to_pyarrow_dataset())
            scope, params = "time >= ? AND time < ?", [start, end]
            if site_ids is not None:
                scope, params = scope + " AND list_contains(?, site_id)", params + [list(site_ids)]
            return int(con.execute(f"SELECT count(*) FROM stored WHERE {scope}", params).fetchone()[0])
        finally:
            con.close()

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        """Replace a table that has no time partitioning, in one commit (the last writer wins)."""
        rows = frame.to_arrow()
        self._committed(
            table,
            lambda: write_deltalake(
                self.table_uri(table), rows, mode="overwrite", schema_mode="overwrite", storage_options=self.storage_options(), configuration=TABLE_PROPERTIES
            ),
        )

    # -- reads ---------------------------------------------------------------------------------
    def query(self, sql: str, params: list | None = None, wait_s: float | None = None, versions: dict[str, int] | None = None) -> pl.DataFrame:
        """Run DuckDB SQL over the tables it names (each a view on its Delta table's current files,
        or on those of ``versions[table]``), without their partition column."""
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            for table in self.tables():
                if not re.search(rf"\b{re.escape(table)}\b", sql):
                    continue
                stored = self._open(table, (versions or {}).get(table))
                if stored is None:
                    continue
                con.register(f"delta_{table}", stored.to_pyarrow_dataset())
                partitioned = PARTITION_COLUMN in stored.metadata().partition_columns
                columns = f"* EXCLUDE ({PARTITION_COLUMN})" if partitioned else "*"
                con.execute(f"CREATE VIEW {table} AS SELECT {columns} FROM delta_{table}")
            try:
                return pl.from_arrow(con.execute(sql, params or []).to_arrow_table())
            except duckdb.Error as exc:
                if versions and "not found" in str(exc):
                    raise ValueError(
                        f"the files of {versions} are gone: lake_maintenance removes the files of versions older than its retention_days"
                    ) from exc
                raise
        finally:
            con.close()

    # -- upkeep --------------------------------------------------------------------------------
    def maintain(self, retention: timedelta) -> list[MaintenanceReport]:
        """Compact each table's small files (per partition) and remove the files no version newer
        than ``retention`` still reads: time travel reaches back that far, no further."""
        reports = []
        for table in self.tables():
            compacted = self._committed(table, lambda: self._open(table).optimize.compact())
            hours = int(retention.total_seconds() // 3600)
            removed = self._committed(table, lambda: self._open(table).vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False))
            reports.append(
                MaintenanceReport(
                    table=table, version=self._open(table).version(), files_compacted=int(compacted["numFilesRemoved"]),
                    files_added=int(compacted["numFilesAdded"]), files_removed=len(removed),
                )
            )
        return reports


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
