"""The warehouse: the contract every asset that reads or writes tables is given, and the embedded
DuckDB file that implements it (the production lake on S3 is ``storage.LakeWarehouse``)."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterable, Iterator

import dagster as dg
import duckdb
import polars as pl

from routeaq_assets.adapters.locks import file_lock
from routeaq_assets.core.warehouse_reads import MaintenanceReport, WarehouseReads
from routeaq_assets.core.windows import check_rows_for_window


class WarehouseResource(WarehouseReads, dg.ConfigurableResource):
    """What every asset that reads or writes the warehouse is given: the embedded DuckDB file
    (``Warehouse``, the default) or, in production, Delta Lake tables on S3
    (``storage.DeltaWarehouse``). Both answer the shared reads of ``WarehouseReads``."""

    def query(self, sql: str, params: list | None = None, wait_s: float | None = None) -> pl.DataFrame:
        """Run DuckDB SQL over the warehouse's tables. ``wait_s``: how long a read may wait for
        a writer to finish (``LockTimeout`` after that), where writers block readers."""
        raise NotImplementedError

    def has_table(self, table: str, wait_s: float | None = None) -> bool:
        raise NotImplementedError

    def tables(self, wait_s: float | None = None) -> list[str]:
        """The names of the stored tables, in one listing."""
        raise NotImplementedError

    def replace_window(
        self, table: str, frames: pl.DataFrame | Iterable[pl.DataFrame], start: datetime, end: datetime, site_ids: list[str] | None = None
    ) -> int:
        raise NotImplementedError

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        raise NotImplementedError

    def _frames_to_replace(
        self, table: str, frames: pl.DataFrame | Iterable[pl.DataFrame], site_ids: list[str] | None
    ) -> tuple[pl.DataFrame | None, Iterator[pl.DataFrame]] | None:
        """``replace_window``'s frames as the first and the rest (read one at a time), or None
        when there is nothing to replace: no site named, or no frame and no table yet."""
        parts = iter([frames] if isinstance(frames, pl.DataFrame) else frames)
        first = next(parts, None)
        if site_ids is not None and not site_ids:
            if first is not None and first.height:
                raise ValueError(f"{table}: {first.height} rows given, but no site to replace")
            return None
        if first is None and not self.has_table(table):
            return None
        return first, parts

    def table_version(self, table: str) -> int | None:
        """The table's version, or None where the warehouse keeps no versions (the DuckDB file)."""
        return None

    def as_of(self, versions: dict[str, int]) -> WarehouseReads:
        """The shared reads over the tables at ``versions`` (from ``table_version``); with none
        named, the warehouse itself."""
        if versions:
            raise ValueError(f"{type(self).__name__} keeps no table versions: it cannot read {versions} (only the production lake can)")
        return self

    def maintain(self, retention: timedelta) -> list[MaintenanceReport]:
        """Compact small files and remove old versions no reader within ``retention`` needs."""
        raise NotImplementedError


class Warehouse(WarehouseResource):
    """The embedded DuckDB warehouse. DuckDB lets one process write the file or many read it,
    never both: every connection takes a lock on ``<path>.lock`` first (shared to read,
    exclusive to write) and waits up to ``lock_timeout_s`` for it, so runs, ``online_features``
    and any reader that goes through this class queue instead of failing. Writing runs also
    share the ``warehouse`` pool, so they queue in Dagster rather than on the lock."""

    path: str
    lock_timeout_s: float = 900.0  # a long backfill's write transaction

    @contextmanager
    def connect(self, read_only: bool = False, wait_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        database = Path(self.path)
        read_only = read_only and database.exists()  # the first opener creates the file
        lock = database.with_name(database.name + ".lock")
        timeout_s = self.lock_timeout_s if wait_s is None else wait_s
        with file_lock(lock, exclusive=not read_only, timeout_s=timeout_s, what=f"warehouse {database}"):
            database.parent.mkdir(parents=True, exist_ok=True)
            con = duckdb.connect(str(database), read_only=read_only)
            try:
                con.execute("SET TimeZone = 'UTC'")
                yield con
            finally:
                con.close()

    def replace_window(
        self, table: str, frames: pl.DataFrame | Iterable[pl.DataFrame], start: datetime, end: datetime, site_ids: list[str] | None = None
    ) -> int:
        """Atomically replace the rows of [start, end) in ``table`` with ``frames``: one frame, or
        frames produced one at a time (so a year of the network is never in memory at once).
        Every site's rows are replaced, or with ``site_ids`` only those sites' rows (the rest of
        the window stays: a re-ingest replaces only what it read).

        Re-running with the same frames leaves the same rows; a failure, in writing or in
        producing a frame, leaves the old rows. Returns the number of rows that were replaced."""
        given = self._frames_to_replace(table, frames, site_ids)
        if given is None:
            return 0
        first, parts = given
        scope, params = "time >= ? AND time < ?", [start, end]
        if site_ids is not None:
            scope, params = scope + " AND list_contains(?, site_id)", params + [list(site_ids)]
        with self.connect() as con:
            if first is not None:
                con.register("incoming", first.head(0).to_arrow())
                con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM incoming")
                # A contract that gained a column: the stored table gains it too (older rows null).
                stored = {row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()}
                for column, kind, *_ in con.execute("DESCRIBE incoming").fetchall():
                    if column not in stored:
                        con.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" {kind}')
            con.execute("BEGIN TRANSACTION")
            try:
                (replaced,) = con.execute(f"SELECT count(*) FROM {table} WHERE {scope}", params).fetchone()
                con.execute(f"DELETE FROM {table} WHERE {scope}", params)
                for frame in itertools.chain([first] if first is not None else [], parts):
                    check_rows_for_window(table, frame, start, end, site_ids)
                    con.register("incoming", frame.to_arrow())
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        return int(replaced)

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        with self.connect() as con:
            con.register("incoming", frame.to_arrow())
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM incoming")

    def query(self, sql: str, params: list | None = None, wait_s: float | None = None) -> pl.DataFrame:
        with self.connect(read_only=True, wait_s=wait_s) as con:
            return pl.from_arrow(con.execute(sql, params or []).to_arrow_table())

    def maintain(self, retention: timedelta) -> list[MaintenanceReport]:
        """The DuckDB file keeps no old versions and no small files: a CHECKPOINT writes its WAL
        into the file, and there is nothing to compact."""
        if Path(self.path).exists():
            with self.connect() as con:
                con.execute("CHECKPOINT")
        return []

    def has_table(self, table: str, wait_s: float | None = None) -> bool:
        return table in self.tables(wait_s)

    def tables(self, wait_s: float | None = None) -> list[str]:
        if not Path(self.path).exists():
            return []
        with self.connect(read_only=True, wait_s=wait_s) as con:
            return sorted(name for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall())
