"""The UK-AIR SOS client against a local server answering in the API's JSON shapes."""

import os
import threading
import time
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from conftest import FIXTURES
from routeaq_assets.core.schema import SourceDataError
from routeaq_assets.core.sites import packaged_metadata_csv
from routeaq_assets.sources.http import SourceUnavailable
from routeaq_assets.sources.openair import openair_to_observations, read_rdata_table
from routeaq_assets.sources.sos import CircuitBreaker, CircuitOpen, SosClient, series_to_sites, sos_values_to_observations

UTC = timezone.utc
START, END = datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 1, 8, tzinfo=UTC)
METADATA = pl.read_csv(packaged_metadata_csv(), infer_schema_length=0)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def series(series_id: str, label: str, coordinates: list, last: datetime) -> dict:
    """One entry of ``timeseries?expanded=true`` as the API shapes it."""
    return {
        "id": series_id,
        "label": f"{label}, series {series_id}",
        "uom": "ug.m-3",
        "station": {"type": "Feature", "properties": {"id": int(series_id), "label": label}, "geometry": {"type": "Point", "coordinates": coordinates}},
        "parameters": {"phenomenon": {"id": "8", "label": "Nitrogen dioxide"}},
        "firstValue": {"timestamp": _ms(datetime(2010, 1, 1, tzinfo=UTC)), "value": 20.0},
        "lastValue": {"timestamp": _ms(last), "value": 30.0},
    }


def client(server: HTTPServer, path: str, tmp_path, **options) -> SosClient:
    options = {"retries": 1, "backoff_s": 0.01, "timeout_s": 2.0, "breaker": CircuitBreaker(failures=2, cooldown_s=0.5), **options}
    return SosClient(server.url_for(path), cache_folder=tmp_path / "sos", **options)


def test_sos_values_land_on_the_same_utc_hour_as_the_published_openair_file(httpserver, tmp_path):
    """An SOS answer built from the real ABD 2017 values, stamped as the service stamps them (the
    end of the hourly mean: openair's hour beginning + 1 h), read back onto the hours openair names."""
    archive = openair_to_observations(read_rdata_table(FIXTURES / "ABD_2017.RData"), site_id="ABD", network="aurn", source="ABD_2017.RData")
    no2 = archive.filter((pl.col("pollutant") == "no2") & pl.col("time").is_between(START, END, closed="left")).sort("time")
    absent, null = START + timedelta(hours=30), START + timedelta(hours=31)
    values = [
        {"timestamp": _ms(row["time"] + timedelta(hours=1)), "value": None if row["time"] == null else (-99 if row["value"] is None else row["value"])}
        for row in no2.iter_rows(named=True)
        if row["time"] != absent
    ]
    assert {"timestamp": 1483236000000, "value": pytest.approx(5.31739)} in values  # 02:00Z ends the hour openair calls 01:00
    last = END
    httpserver.expect_request("/a/api/v1/timeseries", query_string={"expanded": "true", "phenomenon": "8"}).respond_with_json(
        [series("1001", "Aberdeen-Nitrogen dioxide (air)", [57.15736, -2.094278, "NaN"], last),
         series("999", "Aberdeen-Nitrogen dioxide (air)", [57.15736, -2.094278, "NaN"], datetime(2009, 1, 1, tzinfo=UTC))]
    )
    httpserver.expect_request("/a/api/v1/timeseries/1001/getData", query_string={"timespan": "2017-01-01T01:00:00Z/2017-01-08T00:00:00Z"}).respond_with_json(
        {"values": values}
    )
    got = client(httpserver, "/a/api/v1/", tmp_path).observations("ABD", METADATA, ("no2",), START, END)

    assert got["time"].to_list() == no2["time"].to_list()  # every hour present, on openair's hours
    assert got.filter(pl.col("time") == datetime(2017, 1, 1, 1, tzinfo=UTC))["value"].to_list() == [pytest.approx(5.31739)]
    untouched = ~pl.col("time").is_in([absent, null])
    assert got.filter(untouched)["value"].to_list() == no2.filter(untouched)["value"].to_list()
    assert got.filter(~untouched)["value"].to_list() == [None, None]  # an absent hour and a null value are missing
    assert set(got["status"]) == {"P"} and set(got["source"]) == {httpserver.url_for("/a/api/v1/timeseries/1001")}


def test_missing_markers_are_null_and_bad_timestamps_are_named():
    hour = datetime(2025, 6, 1, 10, tzinfo=UTC)
    values = [{"timestamp": _ms(hour + timedelta(hours=1)), "value": 12.5}, {"timestamp": _ms(hour + timedelta(hours=2)), "value": -99},
              {"timestamp": _ms(hour + timedelta(hours=3)), "value": None}]
    frame = sos_values_to_observations(values, site_id="MY1", pollutant="no2", start=hour, end=hour + timedelta(hours=4), source="s")
    assert frame["value"].to_list() == [12.5, None, None, None]  # -99, null, absent
    with pytest.raises(SourceDataError, match=r"s: timestamp 1748772000001 is not on the hour"):
        sos_values_to_observations([{"timestamp": _ms(hour) + 1, "value": 1.0}], site_id="MY1", pollutant="no2", start=hour, end=hour, source="s")
    with pytest.raises(SourceDataError, match=r"two values for the hour ending 2025-06-01 11:00 UTC"):
        sos_values_to_observations(values[:1] * 2, site_id="MY1", pollutant="no2", start=hour, end=hour, source="s")


def test_series_map_to_sites_by_name_then_by_coordinates_and_the_live_series_wins():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    listed = [
        series("1", "London Marylebone Road-Nitrogen dioxide (air)", [51.52253, -0.154611, "NaN"], now),
        series("2", "LONDON  marylebone road-Nitrogen dioxide (air)", [0, 0, "NaN"], now - timedelta(days=900)),  # an old instrument
        series("3", "Aston Hill (new inlet)-Nitrogen dioxide (air)", [-3.0345, 52.5050, "NaN"], now),  # renamed; coordinates swapped, ~100 m off
        series("4", "Nowhere Special-Nitrogen dioxide (air)", [50.0, -5.0, "NaN"], now),
    ]
    mapped = series_to_sites(listed, METADATA, "no2")
    assert mapped.select("site_id", "series_id", "matched_by").rows() == [("AH", "3", "coordinates"), ("MY1", "1", "name")]


def test_the_series_list_is_cached_for_a_day(httpserver, tmp_path):
    httpserver.expect_request("/b/api/v1/timeseries").respond_with_json([series("1", "Aberdeen-Nitrogen dioxide (air)", [57.1, -2.1, "NaN"], END)])
    sos = client(httpserver, "/b/api/v1/", tmp_path)
    assert sos.series_list("no2")[0]["id"] == "1"
    asked = len(httpserver.log)
    assert sos.series_list("no2")[0]["id"] == "1"
    assert len(httpserver.log) == asked  # from the cached copy
    cached = tmp_path / "sos" / "series-8.json"
    day_ago = time.time() - 24 * 3600 - 1
    os.utime(cached, (day_ago, day_ago))
    sos.series_list("no2")
    assert len(httpserver.log) == asked + 1  # a day old: asked again


def test_a_502ing_service_opens_the_circuit_and_is_not_hammered(httpserver, tmp_path):
    httpserver.expect_request("/c/api/v1/timeseries/7/getData").respond_with_data("Bad Gateway", status=502)
    sos = client(httpserver, "/c/api/v1/", tmp_path)  # 1 retry; opens after 2 failed requests for 0.5 s
    for _ in range(2):
        with pytest.raises(SourceUnavailable, match=r"timeseries/7/getData: HTTP 502 after 2 attempts"):
            sos.values("7", START, END)
    assert len(httpserver.log) == 4
    for _ in range(10):
        with pytest.raises(CircuitOpen, match="circuit is open after 2 failed requests"):
            sos.values("7", START, END)
    assert len(httpserver.log) == 4  # refused here, not sent
    time.sleep(0.6)
    with pytest.raises(SourceUnavailable, match="HTTP 502"):  # after the cool-down one request tries, fails, reopens
        sos.values("7", START, END)
    with pytest.raises(CircuitOpen):
        sos.values("7", START, END)
    assert len(httpserver.log) == 6
    # The next run, a new process an hour later, reads the open circuit from the cache folder.
    state = tmp_path / "circuit.json"
    first = client(httpserver, "/c2/api/v1/", tmp_path, breaker=CircuitBreaker(failures=2, cooldown_s=30, state_path=state))
    httpserver.expect_request("/c2/api/v1/timeseries/7/getData").respond_with_data("Bad Gateway", status=502)
    for _ in range(2):
        with pytest.raises(SourceUnavailable):
            first.values("7", START, END)
    asked = len(httpserver.log)
    later = client(httpserver, "/c2/api/v1/", tmp_path, breaker=CircuitBreaker(failures=2, cooldown_s=30, state_path=state))
    with pytest.raises(CircuitOpen):
        later.values("7", START, END)
    assert len(httpserver.log) == asked

    httpserver.handlers.clear()
    httpserver.expect_request("/c/api/v1/timeseries/7/getData").respond_with_json({"values": []})
    time.sleep(0.6)
    assert sos.values("7", START, END) == []  # recovered: the circuit closes
    assert sos.values("7", START, END) == []


def test_a_slow_answer_times_out_and_is_retried(httpserver, tmp_path):
    calls = []

    def slow(request):
        calls.append(1)
        time.sleep(0.3)
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/d/api/v1/timeseries/5/getData").respond_with_handler(slow)
    with pytest.raises(SourceUnavailable, match=r"getData: (ReadTimeout|ConnectionError).* after 2 attempts"):
        client(httpserver, "/d/api/v1/", tmp_path, timeout_s=0.1).values("5", START, END)
    time.sleep(0.4)
    assert len(calls) == 2


def test_a_few_requests_at_a_time(tmp_path):
    server = HTTPServer(threaded=True)
    server.start()
    try:
        active, peak, lock = [0], [0], threading.Lock()

        def answer(request):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.15)
            with lock:
                active[0] -= 1
            return Response('{"values": []}', content_type="application/json")

        server.expect_request("/e/api/v1/timeseries/9/getData").respond_with_handler(answer)
        sos = client(server, "/e/api/v1/", tmp_path, max_concurrency=2)
        threads = [threading.Thread(target=sos.values, args=("9", START, END)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(server.log) == 6
        assert peak[0] == 2  # in parallel, but never more than two at once
    finally:
        server.clear()
        server.stop()


# -- live hours in the warehouse: SOS first, the archive's ratified values later ---------------

def test_a_live_hour_from_sos_is_replaced_by_the_archives_ratified_value_and_counted(home, httpserver):
    import dagster as dg
    import duckdb

    from conftest import make_definitions, partition_key
    from routeaq_assets.observation_sources import UkairObservations
    from routeaq_assets.core.windows import year_span
    from routeaq_assets.sources.ukair_csv import format_ukair_csv

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start, end = now - timedelta(hours=6), now - timedelta(hours=2)
    hours = [start + timedelta(hours=h) for h in range(4)]
    provisional = [41.2, -99, 38.0, 35.5]  # the second hour is missing in the live feed
    ratified = [41.2, 40.1, 36.5, 35.5]  # the archive fills it and corrects the third
    httpserver.expect_request("/live/api/v1/timeseries", query_string={"expanded": "true", "phenomenon": "8"}).respond_with_json(
        [series("501", "London Marylebone Road-Nitrogen dioxide (air)", [51.52253, -0.154611, "NaN"], now)]
    )
    httpserver.expect_request("/live/api/v1/timeseries").respond_with_json([])  # no other pollutant is live in this test
    httpserver.expect_request("/live/api/v1/timeseries/501/getData").respond_with_json(
        {"values": [{"timestamp": _ms(h + timedelta(hours=1)), "value": v} for h, v in zip(hours, provisional)]}
    )
    archive = pl.DataFrame({"site_id": "MY1", "time": hours, "pollutant": "no2", "value": ratified})
    for year in year_span(start, end):
        httpserver.expect_request(f"/site_data/MY1_{year}.csv").respond_with_data(format_ukair_csv("London Marylebone Road", archive, status="R"))

    def ingest(live_hours: int):
        source = UkairObservations(folder=str(home / "sources"), base_url=httpserver.url_for("/site_data/"), live="sos",
                                   live_hours=live_hours, live_url=httpserver.url_for("/live/api/v1/"))
        defs = make_definitions(home, observations=source)
        if live_hours == 48:
            assert dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources,
                                  run_config={"ops": {"site_registry": {"config": {"sites": ["MY1"]}}}}).success
        tags = {"dagster/asset_partition_range_start": partition_key(start), "dagster/asset_partition_range_end": partition_key(end - timedelta(hours=1))}
        result = dg.materialize([defs.get_assets_def("raw_aurn")], resources=defs.resources, tags=tags)
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            con.execute("SET TimeZone = 'UTC'")
            stored = con.execute("SELECT time, value, status FROM observations WHERE site_id = 'MY1' AND pollutant = 'no2' ORDER BY time").fetchall()
            (keys_twice,) = con.execute("SELECT count(*) FROM (SELECT site_id, time, pollutant FROM observations GROUP BY ALL HAVING count(*) > 1)").fetchone()
        assert keys_twice == 0
        return result.asset_materializations_for_node("raw_aurn")[0].metadata["rows_changed"].value, stored

    changed, stored = ingest(live_hours=48)  # the hourly ingestion: these hours are within the live window
    assert changed == 0
    assert stored == [(h, v, "P") for h, v in zip(hours, [41.2, None, 38.0, 35.5])]
    changed, stored = ingest(live_hours=1)  # later the hours are older than the live window: the archive's
    assert stored == [(h, v, "R") for h, v in zip(hours, ratified)]
    assert changed == 4  # every hour restated: status P -> R, one value filled, one corrected


def test_the_demo_network_serves_its_live_hours_through_the_sos_shapes(tmp_path):
    from routeaq_assets.observation_sources import DemoObservations

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=12)
    live = DemoObservations(folder=str(tmp_path), live="sos", live_hours=6)
    archive = DemoObservations(folder=str(tmp_path))
    got = pl.concat([live.hours("CLL2", y, start, now, ("no2", "pm25")) for y in sorted({start.year, now.year})])
    expected = pl.concat([archive.hours("CLL2", y, start, now, ("no2", "pm25")) for y in sorted({start.year, now.year})])
    key = ["time", "pollutant"]
    assert got.select(*key, "value").sort(key).equals(expected.select(*key, "value").sort(key))
    recent = got.filter(pl.col("time") >= now - timedelta(hours=6))
    assert recent.height == 12 and set(recent["status"]) == {"P"} and recent["source"].str.starts_with("demo-sos://").all()
    assert got.filter(pl.col("time") < now - timedelta(hours=6))["status"].null_count() == 12  # older hours: the archive files


def test_the_daily_ratify_run_re_ingests_the_day_that_left_the_live_window(monkeypatch):
    import dagster as dg

    from routeaq_assets.defs.jobs import ratify_schedule

    monkeypatch.setenv("ROUTEAQ_LIVE", "sos")
    monkeypatch.setenv("ROUTEAQ_LIVE_HOURS", "48")
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 19, 6, 30, tzinfo=UTC))
    request = ratify_schedule(context)
    assert request.tags["dagster/asset_partition_range_start"] == "2026-03-16-06:00"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-03-17-05:00"
    assert request.job_name in (None, "ingest_job")


def test_the_hourly_run_reads_the_last_few_live_hours_again(monkeypatch):
    import dagster as dg

    from routeaq_assets.defs.jobs import hourly_ingest_schedule

    context = lambda: dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 19, 6, 20, tzinfo=UTC))  # noqa: E731
    assert hourly_ingest_schedule(context()).partition_key == "2026-03-19-05:00"  # archives only: the hour that ended
    monkeypatch.setenv("ROUTEAQ_LIVE", "sos")
    request = hourly_ingest_schedule(context())
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == ("2026-03-19-00:00", "2026-03-19-05:00")
