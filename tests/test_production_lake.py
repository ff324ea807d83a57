"""The lake on S3 (a moto server started here): day-partitioned Parquet replaced per day with a
conditional PUT, so concurrent writers neither lose nor mix rows."""

import threading
from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest

from production_services import S3_CREDENTIALS, bucket, s3_client, s3_endpoint  # noqa: F401 - fixtures
from routeaq_assets.storage import LakeWarehouse

DAY = datetime(2025, 8, 1, tzinfo=timezone.utc)


@pytest.fixture
def lake(s3_endpoint, bucket, tmp_path, monkeypatch):
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    from dagster_aws.s3 import S3Resource

    resource = LakeWarehouse(s3=S3Resource(endpoint_url=s3_endpoint, region_name="us-east-1"), bucket=bucket, cache_dir=str(tmp_path / "cache"))
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


def test_a_window_across_days_is_stored_per_day_and_replaced_in_place(lake, bucket, s3_endpoint):
    start = DAY - timedelta(hours=6)
    assert lake.replace_window("observations", observations(start, 12), start, start + timedelta(hours=12)) == 0
    keys = sorted(o["Key"] for o in s3_client(s3_endpoint).list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["routeaq/tables/observations/day=2025-07-31/data.parquet", "routeaq/tables/observations/day=2025-08-01/data.parquet"]
    again = observations(start, 12, value=2.0)
    assert lake.replace_window("observations", again, start, start + timedelta(hours=12)) == 24
    assert stored(lake).equals(again.sort("time", "site_id"))
    assert lake.query("SELECT count(*) AS n FROM observations WHERE time >= ?", [DAY])["n"][0] == 12
    assert lake.has_table("observations") and not lake.has_table("weather")


def test_replacing_some_sites_keeps_the_others(lake):
    lake.replace_window("observations", observations(DAY, 4), DAY, DAY + timedelta(hours=4))
    lake.replace_window("observations", observations(DAY, 4, sites=("MY1",), value=5.0), DAY, DAY + timedelta(hours=4), site_ids=["MY1"])
    by_site = dict(lake.query("SELECT site_id, sum(value) AS v FROM observations GROUP BY site_id").iter_rows())
    assert by_site == {"CLL2": 4.0, "MY1": 20.0}
    with pytest.raises(ValueError, match="CLL2"):
        lake.replace_window("observations", observations(DAY, 1), DAY, DAY + timedelta(hours=1), site_ids=["MY1"])


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


def test_concurrent_writers_of_different_hours_of_one_day_all_land(lake):
    """Eight runs, eight hourly partitions, one day object: none is lost to another's rewrite."""
    writes = [
        (lambda h=h: lake.replace_window("observations", observations(DAY + timedelta(hours=h), 1), DAY + timedelta(hours=h), DAY + timedelta(hours=h + 1)))
        for h in range(8)
    ]
    assert run_together(writes) == []
    rows = stored(lake)
    assert rows.height == 16 and rows.select("site_id", "time").n_unique() == 16
    assert rows["time"].min() == DAY and rows["time"].max() == DAY + timedelta(hours=7)


def test_concurrent_writers_of_different_days_both_land(lake):
    other = DAY + timedelta(days=1)
    writes = [
        lambda: lake.replace_window("observations", observations(DAY, 24), DAY, DAY + timedelta(days=1)),
        lambda: lake.replace_window("observations", observations(other, 24), other, other + timedelta(days=1)),
    ]
    assert run_together(writes) == []
    assert stored(lake).height == 96


def test_concurrent_writers_of_the_same_hours_leave_one_complete_version(lake):
    lake.replace_window("observations", observations(DAY, 24, value=0.0), DAY, DAY + timedelta(days=1))
    window = (DAY + timedelta(hours=6), DAY + timedelta(hours=12))
    writes = [(lambda v=v: lake.replace_window("observations", observations(window[0], 6, value=v), *window)) for v in (1.0, 2.0, 3.0, 4.0)]
    assert run_together(writes) == []
    rows = stored(lake)
    assert rows.height == 48 and rows.select("site_id", "time").n_unique() == 48
    inside = rows.filter(pl.col("time").is_between(*window, closed="left"))["value"].unique().to_list()
    assert len(inside) == 1 and inside[0] in (1.0, 2.0, 3.0, 4.0)  # one writer's version, whole
    assert rows.filter(~pl.col("time").is_between(*window, closed="left"))["value"].unique().to_list() == [0.0]


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
