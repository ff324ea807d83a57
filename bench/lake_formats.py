"""Delta Lake (delta-rs, the ``deltalake`` package) against Apache Iceberg (``pyiceberg`` with its
SQL catalog on PostgreSQL) on the same writes to a moto S3 server: what the production lake does.

1. ``--days`` windows of one UTC day of hourly observations (``--sites`` sites x 4 pollutants),
   each written as a replacement of its window (the first creates the table);
2. a replacement of a window that spans 3 days (noon to noon, so it touches 4 day partitions);
3. eight writers at once, each replacing another day (commit conflicts re-read and re-applied);
4. reads in DuckDB: the whole table (count, sum) and one week (the panel read of a backtest).

Both tables are partitioned by day (Delta: a ``utc_date`` column; Iceberg: ``day(time)``), and both
replacements are one commit (Delta: a predicate overwrite; Iceberg: ``overwrite`` with a filter,
one catalog commit of a delete and an append snapshot). Printed per format: seconds for each step,
the versions the table gained (Delta commits, Iceberg snapshots), objects and bytes in S3 after each, and a check that every key is there once.

Run: ``python bench/lake_formats.py [--sites 10] [--days 60]``. PostgreSQL on 127.0.0.1:5432 (user
postgres, trust) holds the Iceberg catalog in a database made and dropped here. pyiceberg is not a
dependency of RouteAQ: install ``pyiceberg[sql-postgres]==0.12.0`` beside the locked packages to
measure it (bench/RESULTS.md says how); without it, Delta alone is measured.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import duckdb
import polars as pl
import psycopg2
import pyarrow as pa
import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

START = datetime(2025, 6, 1, tzinfo=timezone.utc)
POLLUTANTS = ("pm25", "pm10", "no2", "o3")
CREDENTIALS = {"key": "bench", "secret": "bench-secret", "region": "us-east-1"}


def observations(sites: int, start: datetime, end: datetime, version: int = 0) -> pl.DataFrame:
    hours = int((end - start) / timedelta(hours=1))
    times = [start + timedelta(hours=h) for h in range(hours)]
    keys = [(f"S{s:03d}", t, p) for s in range(sites) for t in times for p in POLLUTANTS]
    return pl.DataFrame(
        {
            "site_id": [k[0] for k in keys], "time": [k[1] for k in keys], "pollutant": [k[2] for k in keys],
            "value": [float((i * 7 + version) % 97) for i in range(len(keys))], "unit": "ug/m3", "status": "R",
            "network": "aurn", "source": "bench", "ingested_at": datetime.now(timezone.utc),
        },
        schema_overrides={"time": pl.Datetime("us", "UTC"), "ingested_at": pl.Datetime("us", "UTC")},
    )


def start_moto() -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(f"{endpoint}/moto-api/", timeout=1)
            return server, endpoint
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError("moto_server did not start")


def s3_client(endpoint: str):  # noqa: ANN201
    return boto3.client("s3", endpoint_url=endpoint, region_name=CREDENTIALS["region"], aws_access_key_id=CREDENTIALS["key"], aws_secret_access_key=CREDENTIALS["secret"])


def stored_objects(endpoint: str, bucket: str, prefix: str) -> tuple[int, int]:
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    objects = [o for page in pages for o in page.get("Contents", [])]
    return len(objects), sum(o["Size"] for o in objects)


class DeltaFormat:
    name = "Delta Lake (deltalake 1.6.6)"

    def __init__(self, endpoint: str, bucket: str, checkpoint_interval: int) -> None:
        self.name = f"{self.name}, a checkpoint every {checkpoint_interval} commits"
        self.uri = f"s3://{bucket}/delta-{checkpoint_interval}/observations"
        self.prefix = f"delta-{checkpoint_interval}/"
        self.configuration = {"delta.checkpointInterval": str(checkpoint_interval)}
        self.options = {
            "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": CREDENTIALS["region"], "AWS_ACCESS_KEY_ID": CREDENTIALS["key"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["secret"], "AWS_ALLOW_HTTP": "true", "conditional_put": "etag",
        }

    def replace(self, frame: pl.DataFrame, start: datetime, end: datetime) -> None:
        from deltalake import write_deltalake

        last = (end - timedelta(microseconds=1)).date()
        predicate = f"utc_date >= '{start.date()}' AND utc_date <= '{last}' AND time >= '{start.isoformat()}' AND time < '{end.isoformat()}'"
        rows = frame.with_columns(utc_date=pl.col("time").dt.date()).to_arrow()
        write_deltalake(self.uri, rows, mode="overwrite", predicate=predicate, partition_by=["utc_date"], schema_mode="merge", storage_options=self.options,
            configuration=self.configuration,
        )

    def conflict(self) -> type[Exception]:
        from deltalake.exceptions import CommitFailedError

        return CommitFailedError

    def commits(self) -> int:
        from deltalake import DeltaTable

        return DeltaTable(self.uri, storage_options=self.options).version() + 1

    def register(self, con: duckdb.DuckDBPyConnection, start: datetime | None = None, end: datetime | None = None) -> None:
        from deltalake import DeltaTable

        con.register("delta_observations", DeltaTable(self.uri, storage_options=self.options).to_pyarrow_dataset())
        con.execute("CREATE OR REPLACE VIEW observations AS SELECT * EXCLUDE (utc_date) FROM delta_observations")


class IcebergFormat:
    name = "Apache Iceberg (pyiceberg 0.12.0, SQL catalog on PostgreSQL)"

    def __init__(self, endpoint: str, bucket: str, database: str) -> None:
        from pyiceberg.catalog.sql import SqlCatalog

        self.prefix = "iceberg/"
        self.catalog = SqlCatalog(
            "bench", uri=f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}", warehouse=f"s3://{bucket}/iceberg",
            **{"s3.endpoint": endpoint, "s3.access-key-id": CREDENTIALS["key"], "s3.secret-access-key": CREDENTIALS["secret"], "s3.region": CREDENTIALS["region"]},
        )
        self.catalog.create_namespace("routeaq")
        self.identifier = "routeaq.observations"

    def _table(self, schema: pa.Schema):  # noqa: ANN202 - a pyiceberg Table
        from pyiceberg.exceptions import NoSuchTableError
        from pyiceberg.transforms import DayTransform

        try:
            return self.catalog.load_table(self.identifier)
        except NoSuchTableError:
            table = self.catalog.create_table_if_not_exists(self.identifier, schema=schema)
            try:
                with table.update_spec() as spec:
                    spec.add_field("time", DayTransform(), "time_day")
            except Exception:  # noqa: BLE001 - another writer partitioned it first
                pass
            return self.catalog.load_table(self.identifier)

    def replace(self, frame: pl.DataFrame, start: datetime, end: datetime) -> None:
        from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

        rows = frame.to_arrow()
        table = self._table(rows.schema)
        table.overwrite(rows, overwrite_filter=And(GreaterThanOrEqual("time", start.isoformat()), LessThan("time", end.isoformat())))

    def conflict(self) -> type[Exception]:
        from pyiceberg.exceptions import CommitFailedException

        return CommitFailedException

    def commits(self) -> int:
        return len(self.catalog.load_table(self.identifier).metadata.snapshots)

    def register(self, con: duckdb.DuckDBPyConnection, start: datetime | None = None, end: datetime | None = None) -> None:
        from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThan

        where = And(GreaterThanOrEqual("time", start.isoformat()), LessThan("time", end.isoformat())) if start else AlwaysTrue()
        con.register("observations", self.catalog.load_table(self.identifier).scan(row_filter=where).to_arrow())


def retried(lake, frame: pl.DataFrame, start: datetime, end: datetime) -> None:
    for attempt in Retrying(retry=retry_if_exception_type(lake.conflict()), stop=stop_after_attempt(20), wait=wait_random_exponential(multiplier=0.05, max=2), reraise=True):
        with attempt:
            lake.replace(frame, start, end)


def measure(lake, endpoint: str, bucket: str, sites: int, days: int) -> dict:
    figures: dict = {}
    per_window = []
    for d in range(days):
        start = START + timedelta(days=d)
        frame = observations(sites, start, start + timedelta(days=1))
        began = time.perf_counter()
        lake.replace(frame, start, start + timedelta(days=1))
        per_window.append(time.perf_counter() - began)
    figures["write"] = {"seconds": sum(per_window), "median_window_s": statistics.median(per_window), "commits": lake.commits(), "objects": stored_objects(endpoint, bucket, lake.prefix)}

    start = START + timedelta(days=days // 2, hours=12)
    end = start + timedelta(days=3)
    commits = lake.commits()
    began = time.perf_counter()
    lake.replace(observations(sites, start, end, version=1), start, end)
    figures["replace_3_days"] = {"seconds": time.perf_counter() - began, "commits": lake.commits() - commits, "objects": stored_objects(endpoint, bucket, lake.prefix)}

    first = START + timedelta(days=days)
    windows = [(first + timedelta(days=d), first + timedelta(days=d + 1)) for d in range(8)]
    frames = [observations(sites, s, e, version=2) for s, e in windows]
    barrier, errors = threading.Barrier(8), []

    def write(k: int) -> None:
        barrier.wait()
        try:
            retried(lake, frames[k], *windows[k])
        except Exception as exc:  # noqa: BLE001 - counted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    figures["eight_writers"] = {"seconds": time.perf_counter() - began, "failed": len(errors), "errors": sorted({type(e).__name__ for e in errors})}

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    began = time.perf_counter()
    lake.register(con)
    rows, keys, total = con.execute("SELECT count(*), count(DISTINCT (site_id, time, pollutant)), sum(value) FROM observations").fetchone()
    figures["read_all"] = {"seconds": time.perf_counter() - began, "rows": rows, "keys": keys}
    week = (START + timedelta(days=days // 2), START + timedelta(days=days // 2 + 7))
    began = time.perf_counter()
    lake.register(con, *week)
    (week_rows,) = con.execute("SELECT count(*) FROM observations WHERE time >= ? AND time < ?", list(week)).fetchone()
    figures["read_week"] = {"seconds": time.perf_counter() - began, "rows": week_rows}
    con.close()
    expected = sites * len(POLLUTANTS) * 24 * (days + 8)
    figures["every_key_once"] = rows == keys == expected
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--delta-checkpoint-intervals", type=lambda text: [int(n) for n in text.split(",")], default=[100, 10],
                        help="Delta tables to measure, one per checkpoint interval (delta-rs's default is 100 commits)")
    parser.add_argument("--delta-only", action="store_true")
    args = parser.parse_args()
    server, endpoint = start_moto()
    admin = psycopg2.connect(dbname="postgres", host="127.0.0.1", port=5432, user="postgres")
    admin.autocommit = True
    database = f"routeaq_bench_{uuid.uuid4().hex[:8]}"
    admin.cursor().execute(f"CREATE DATABASE {database}")
    try:
        bucket = f"routeaq-bench-{uuid.uuid4().hex[:8]}"
        s3_client(endpoint).create_bucket(Bucket=bucket)
        lakes = [DeltaFormat(endpoint, bucket, interval) for interval in args.delta_checkpoint_intervals]
        try:
            if not args.delta_only:
                lakes.append(IcebergFormat(endpoint, bucket, database))
        except ImportError:
            print("pyiceberg is not installed: Delta alone is measured (see the module's docstring)")
        print(f"{args.sites} sites x {len(POLLUTANTS)} pollutants x {args.days} days, hourly: {args.sites * len(POLLUTANTS) * 24} rows a day")
        print(f"machine: {platform.machine()}, {platform.python_version()}, moto S3 server on loopback")
        for lake in lakes:
            figures = measure(lake, endpoint, bucket, args.sites, args.days)
            print(f"\n{lake.name}")
            w, r, c = figures["write"], figures["replace_3_days"], figures["eight_writers"]
            print(f"  {args.days} daily windows:   {w['seconds']:7.2f} s ({w['median_window_s'] * 1000:.0f} ms median), {w['commits']} versions, {w['objects'][0]} objects, {w['objects'][1] / 1e6:.2f} MB")
            print(f"  replace 3 days:     {r['seconds']:7.2f} s, {r['commits']} version(s) added, then {r['objects'][0]} objects, {r['objects'][1] / 1e6:.2f} MB")
            print(f"  8 writers at once:  {c['seconds']:7.2f} s, {c['failed']} failed {c['errors'] or ''}")
            print(f"  read all (DuckDB):  {figures['read_all']['seconds']:7.2f} s, {figures['read_all']['rows']} rows")
            print(f"  read one week:      {figures['read_week']['seconds']:7.2f} s, {figures['read_week']['rows']} rows")
            print(f"  every key once:     {figures['every_key_once']}")
    finally:
        admin.cursor().execute(f"DROP DATABASE {database} WITH (FORCE)")
        admin.close()
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
