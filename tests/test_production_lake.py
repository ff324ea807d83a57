"""The warehouse's tables as Delta tables on S3 (a moto server started here): a window's
replacement is one commit across days, concurrent writers neither lose nor duplicate a key, and
every commit is a version a reader can go back to."""

import json
import threading
from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest

from production_services import S3_CREDENTIALS, bucket, s3_client, s3_endpoint  # noqa: F401 - fixtures
from routeaq_assets.storage import DeltaWarehouse

DAY = datetime(2025, 8, 1, tzinfo=timezone.utc)
KEY = ["site_id", "time", "pollutant"]


@pytest.fixture
def lake(s3_endpoint, bucket, monkeypatch):
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    from dagster_aws.s3 import S3Resource

    resource = DeltaWarehouse(location=f"s3://{bucket}/routeaq/tables", s3=S3Resource(endpoint_url=s3_endpoint, region_name="us-east-1"))
    with dg.build_resources({"warehouse": resource}) as built:
        yield built.warehouse


def observations(start: datetime, hours: int, sites=("CLL2", "MY1"), value: float = 1.0) -> pl.DataFrame:
    times = [start + timedelta(hours=h) for h in range(hours)]
    return pl.DataFrame(
        {"site_id": [s for s in sites for _ in times], "time": [t for _ in sites for t in times], "pollutant": "pm25", "value": value},
        schema_overrides={"time": pl.Datetime("us", "UTC")},
    )


def stored(lake) -> pl.DataFrame:
    return lake.query("SELECT * FROM observations ORDER BY time, site_id")


def log_entries(s3_endpoint: str, bucket: str, table: str = "observations") -> list[dict]:
    """The table's Delta log: one JSON object per commit, each a list of actions."""
    client = s3_client(s3_endpoint)
    keys = sorted(
        o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"routeaq/tables/{table}/_delta_log/")["Contents"] if o["Key"].endswith(".json")
    )
    return [[json.loads(line) for line in client.get_object(Bucket=bucket, Key=k)["Body"].read().decode().splitlines()] for k in keys]


def test_a_window_across_days_is_replaced_in_one_commit(lake, bucket, s3_endpoint):
    start = DAY - timedelta(hours=6)
    assert lake.replace_window("observations", observations(start, 12), start, start + timedelta(hours=12)) == 0
    assert lake.table_version("observations") == 0 and lake.table_version("weather") is None
    data = sorted(o["Key"].split("/")[3] for o in s3_client(s3_endpoint).list_objects_v2(Bucket=bucket, Prefix="routeaq/tables/observations/utc_date=")["Contents"])
    assert data == ["utc_date=2025-07-31", "utc_date=2025-08-01"]  # partitioned by UTC day

    again = observations(start, 12, value=2.0)
    assert lake.replace_window("observations", again, start, start + timedelta(hours=12)) == 24
    assert stored(lake).equals(again.sort("time", "site_id"))  # no partition column in what a reader sees
    assert lake.table_version("observations") == 1
    entries = log_entries(s3_endpoint, bucket)
    assert len(entries) == 2  # the replacement of both days is the one log entry of version 1
    actions = [next(iter(a)) for a in entries[1]]
    assert actions.count("remove") == 2 and actions.count("add") == 2
    commit = next(a["commitInfo"] for a in entries[1] if "commitInfo" in a)
    assert commit["operation"] == "WRITE" and "time >=" in commit["operationParameters"]["predicate"]
    assert lake.has_table("observations") and not lake.has_table("weather")


def test_replacing_some_sites_keeps_the_others(lake):
    lake.replace_window("observations", observations(DAY, 4), DAY, DAY + timedelta(hours=4))
    lake.replace_window("observations", observations(DAY, 4, sites=("MY1",), value=5.0), DAY, DAY + timedelta(hours=4), site_ids=["MY1"])
    by_site = dict(lake.query("SELECT site_id, sum(value) AS v FROM observations GROUP BY site_id").iter_rows())
    assert by_site == {"CLL2": 4.0, "MY1": 20.0}
    with pytest.raises(ValueError, match="CLL2"):
        lake.replace_window("observations", observations(DAY, 1), DAY, DAY + timedelta(hours=1), site_ids=["MY1"])


def test_a_table_gains_a_column_and_an_empty_window_removes_its_rows(lake):
    lake.replace_window("observations", observations(DAY, 4), DAY, DAY + timedelta(hours=4))
    later = DAY + timedelta(hours=4)
    lake.replace_window("observations", observations(later, 2).with_columns(status=pl.lit("R")), later, later + timedelta(hours=2))
    rows = stored(lake)
    assert rows.columns == ["site_id", "time", "pollutant", "value", "status"]
    assert rows["status"].null_count() == 8 and rows["status"].drop_nulls().to_list() == ["R"] * 4

    assert lake.replace_window("observations", [], DAY, DAY + timedelta(hours=2)) == 4
    assert stored(lake)["time"].min() == DAY + timedelta(hours=2)


def test_a_failure_while_producing_the_frames_commits_nothing(lake):
    lake.replace_window("observations", observations(DAY, 4), DAY, DAY + timedelta(hours=4))
    version = lake.table_version("observations")

    def frames():
        yield observations(DAY, 2, value=9.0)
        raise RuntimeError("the source went away")

    with pytest.raises(RuntimeError, match="went away"):
        lake.replace_window("observations", frames(), DAY, DAY + timedelta(hours=4))
    assert lake.table_version("observations") == version and stored(lake)["value"].unique().to_list() == [1.0]


def run_together(writes) -> list[BaseException]:
    """Start every write at the same moment in its own thread; return what they raised."""
    barrier, errors = threading.Barrier(len(writes)), []

    def go(write):
        barrier.wait()
        try:
            write()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(w,)) for w in writes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def replace(lake, start: datetime, hours: int, value: float = 1.0):
    return lambda: lake.replace_window("observations", observations(start, hours, value=value), start, start + timedelta(hours=hours))


def assert_each_key_once(rows: pl.DataFrame, expected: int) -> None:
    assert rows.height == expected and rows.select(KEY).n_unique() == expected


def test_eight_writers_of_different_hours_of_one_day_all_land(lake):
    """Eight runs, eight hourly partitions of one day (one Delta partition): each commit that loses
    to another is re-read and re-applied."""
    assert run_together([replace(lake, DAY + timedelta(hours=h), 1) for h in range(8)]) == []
    rows = stored(lake)
    assert_each_key_once(rows, 16)
    assert rows["time"].min() == DAY and rows["time"].max() == DAY + timedelta(hours=7)
    assert lake.table_version("observations") == 7  # eight commits, none lost


def test_eight_writers_of_different_days_all_land(lake):
    assert run_together([replace(lake, DAY + timedelta(days=d), 24) for d in range(8)]) == []
    assert_each_key_once(stored(lake), 8 * 48)


def test_eight_writers_of_the_same_window_leave_one_complete_version(lake):
    lake.replace_window("observations", observations(DAY, 48, value=0.0), DAY, DAY + timedelta(days=2))
    window = (DAY + timedelta(hours=18), DAY + timedelta(hours=30))  # across midnight
    assert run_together([replace(lake, window[0], 12, value=float(v)) for v in range(1, 9)]) == []
    rows = stored(lake)
    assert_each_key_once(rows, 96)
    inside = rows.filter(pl.col("time").is_between(*window, closed="left"))["value"].unique().to_list()
    assert len(inside) == 1 and inside[0] in range(1, 9)  # one writer's version, whole
    assert rows.filter(~pl.col("time").is_between(*window, closed="left"))["value"].unique().to_list() == [0.0]


def test_a_reader_goes_back_to_a_version(lake):
    lake.replace_window("observations", observations(DAY, 4), DAY, DAY + timedelta(hours=4))
    lake.replace_table("sites", pl.DataFrame({"site_id": ["CLL2", "MY1"]}))
    first = {"observations": lake.table_version("observations")}
    lake.replace_window("observations", observations(DAY, 4, value=3.0), DAY, DAY + timedelta(hours=4))
    then = lake.as_of(first)
    assert then.query("SELECT sum(value) AS v FROM observations")["v"][0] == 8.0
    assert then.query("SELECT count(*) AS n FROM sites")["n"][0] == 2  # a table not named: as it is now
    assert stored(lake)["value"].unique().to_list() == [3.0]


def test_the_lake_answers_the_shared_warehouse_reads_as_the_embedded_warehouse_does(lake, tmp_path):
    """Features, training, evaluation, monitoring and serving read the panel and the feature rows
    through the warehouse resource; the production lake must answer them as the DuckDB file does."""
    from test_panel import LATE_HOUR, START, _observations, _sites, _weather

    from routeaq_assets.warehouse import Warehouse

    embedded = Warehouse(path=str(tmp_path / "warehouse.duckdb"))
    end = LATE_HOUR + timedelta(hours=1)
    for store in (embedded, lake):
        store.replace_window("observations", _observations(LATE_HOUR), START, end)
        store.replace_window("weather", _weather(START, end, "reanalysis", 10.0, START), START, end)
        store.replace_table("sites", _sites())
    panel = embedded.stored_panel(START, end)
    assert panel.height == 2 * 61 and panel["no2"].drop_nulls().len() == 2 * 60
    assert lake.stored_panel(START, end).equals(panel)
    first = START + timedelta(hours=36)
    six_hours = embedded.stored_features("no2", first, end, horizon=6)
    assert six_hours.height == 2 * 25 and six_hours["time"].min() == first
    assert lake.stored_features("no2", first, end, horizon=6).equals(six_hours)
    assert lake.tables() == embedded.tables() == ["observations", "sites", "weather"]
    assert lake.has_table("sites") and embedded.has_table("sites") and not lake.has_table("scores") and not embedded.has_table("scores")


def test_maintenance_compacts_a_day_of_hourly_files_and_removes_the_old_ones(lake, bucket, s3_endpoint):
    for h in range(8):
        replace(lake, DAY + timedelta(hours=h), 1)()
    before = stored(lake)
    (report,) = lake.maintain(timedelta(0))
    assert (report.table, report.files_compacted, report.files_added, report.files_removed) == ("observations", 8, 1, 8)
    assert report.version == 10 == lake.table_version("observations")  # compaction, and vacuum's start and end, are commits too
    assert stored(lake).equals(before)
    data = [o["Key"] for o in s3_client(s3_endpoint).list_objects_v2(Bucket=bucket, Prefix="routeaq/tables/observations/utc_date=")["Contents"]]
    assert len(data) == 1


def test_a_reader_opens_a_table_from_a_checkpoint_every_ten_commits(lake, bucket, s3_endpoint):
    for h in range(12):
        replace(lake, DAY + timedelta(hours=h), 1)()
    keys = [o["Key"].rsplit("/", 1)[1] for o in s3_client(s3_endpoint).list_objects_v2(Bucket=bucket, Prefix="routeaq/tables/observations/_delta_log/")["Contents"]]
    assert "00000000000000000009.checkpoint.parquet" in keys and "_last_checkpoint" in keys  # the state after ten commits
    assert_each_key_once(stored(lake), 24)
