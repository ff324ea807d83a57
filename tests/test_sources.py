"""Source parsers and the HTTP client, against real published files and a local HTTP server."""

import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import polars as pl
import pytest
from werkzeug import Response

from conftest import FIXTURES
from routeaq_assets.core.environment import SOURCES, ConfigurationError, load_settings
from routeaq_assets.core.schema import SourceDataError
from routeaq_assets.environments import OBSERVATION_SOURCES, WEATHER_SOURCES, source_resources
from routeaq_assets.observation_sources import ObservationSource, OpenairObservations, UkairObservations
from routeaq_assets.weather_sources import OpenMeteoWeather, WeatherSource
from routeaq_assets.sources.demo_network import DemoNetwork, DemoSite, simulate_site_year
from routeaq_assets.sources.http import SourceUnavailable, fetch_to_cache, make_session
from routeaq_assets.sources.openair import openair_to_observations, read_rdata_table
from routeaq_assets.sources.openmeteo import openmeteo_to_weather
from routeaq_assets.sources.rdata_writer import write_rdata
from routeaq_assets.sources.ukair_csv import format_ukair_csv, parse_ukair_csv

UTC = timezone.utc
CLL2 = DemoSite("CLL2", "London Bloomsbury", "Urban Background", 51.52229, -0.125889)


@pytest.mark.parametrize(
    "source, observations, weather",
    [
        ("demo", "DemoObservations", "DemoWeather"),
        ("openair", "OpenairObservations", "OpenMeteoWeather"),
        ("ukair", "UkairObservations", "OpenMeteoWeather"),
        ("local", "LocalObservations", "LocalWeather"),
    ],
)
def test_the_source_setting_picks_one_class_per_source(home, monkeypatch, tmp_path, source, observations, weather):
    monkeypatch.setenv("ROUTEAQ_SOURCE", source)
    monkeypatch.setenv("ROUTEAQ_SOURCE_FOLDER", str(tmp_path))
    monkeypatch.setenv("ROUTEAQ_DEMO_SHIFT", "no2:scale:2@2025-07-01")
    resources = source_resources(load_settings())
    assert (type(resources["observations"]).__name__, type(resources["weather"]).__name__) == (observations, weather)
    assert isinstance(resources["observations"], ObservationSource) and isinstance(resources["weather"], WeatherSource)
    # Only the demo network takes an injected shift.
    assert (getattr(resources["observations"], "demo_shift", None) is not None) == (source == "demo")
    assert set(OBSERVATION_SOURCES) == set(WEATHER_SOURCES) == set(SOURCES)


def test_an_unknown_source_is_refused_by_name(home, monkeypatch):
    monkeypatch.setenv("ROUTEAQ_SOURCE", "openaq")
    with pytest.raises(ConfigurationError, match="ROUTEAQ_SOURCE.*openaq"):
        load_settings()
    with pytest.raises(ConfigurationError, match="'openaq' has no observation source: use one of \\['demo', 'local', 'openair', 'ukair'\\]"):
        source_resources(SimpleNamespace(source="openaq"))  # settings made past the check


def _value(frame: pl.DataFrame, time: datetime, pollutant: str):
    return frame.filter((pl.col("time") == time) & (pl.col("pollutant") == pollutant))["value"].to_list()


def test_real_openair_file_is_hour_beginning_utc_with_lower_case_codes():
    obs = openair_to_observations(read_rdata_table(FIXTURES / "ABD_2017.RData"), site_id="ABD", network="aurn", source="ABD_2017.RData")
    assert set(obs["pollutant"]) == {"no2", "o3", "pm10", "pm25", "nox"}
    assert obs["time"].min() == datetime(2017, 1, 1, tzinfo=UTC)
    assert obs["time"].max() == datetime(2017, 12, 31, 23, tzinfo=UTC)
    # The first published row (00:00 GMT, hour beginning) as it appears in the file.
    assert _value(obs, datetime(2017, 1, 1, tzinfo=UTC), "no2") == [pytest.approx(6.05816)]
    assert _value(obs, datetime(2017, 1, 1, tzinfo=UTC), "pm25") == [pytest.approx(9.9)]
    # NaN in the file is null, never 0.
    assert obs.filter(pl.col("pollutant") == "pm25")["value"].null_count() == 359
    assert obs["value"].is_nan().sum() == 0


def test_a_site_without_pm_has_no_pm_rows():
    obs = openair_to_observations(read_rdata_table(FIXTURES / "AH_2017.RData"), site_id="AH", network="aurn", source="AH_2017.RData")
    assert set(obs["pollutant"]) == {"no2", "o3", "nox"}


def test_rdata_writer_round_trips_through_the_reader(tmp_path):
    frame = simulate_site_year(CLL2, 2024).head(100)
    write_rdata(tmp_path / "CLL2_2024.RData", "CLL2_2024", frame[["date", "NO2", "PM2.5", "site", "code"]])
    table = read_rdata_table(tmp_path / "CLL2_2024.RData")
    assert table.columns == ["date", "NO2", "PM2.5", "site", "code"]
    obs = openair_to_observations(table, site_id="CLL2", network="aurn", source="t")
    assert obs["time"].min() == datetime(2024, 1, 1, tzinfo=UTC)
    expected = frame["PM2.5"].iloc[5]
    got = _value(obs, datetime(2024, 1, 1, 5, tzinfo=UTC), "pm25")[0]
    assert (got is None and expected != expected) or got == pytest.approx(expected)


def test_demo_network_is_deterministic_and_has_structure(tmp_path):
    a, b = simulate_site_year(CLL2, 2025), simulate_site_year(CLL2, 2025)
    assert a.equals(b)
    assert not a["PM2.5"].equals(simulate_site_year(CLL2, 2024)["PM2.5"])
    assert 0.01 < a["PM2.5"].isna().mean() < 0.08  # instrument outages
    by_hour = a.groupby(a["date"].dt.hour)["NO2"].mean()
    assert by_hour[8] > 1.3 * by_hour[3]  # morning rush hour
    assert a["PM2.5"].autocorr(1) > 0.8


def test_demo_network_current_year_stops_at_the_current_hour(tmp_path):
    network = DemoNetwork(tmp_path, [CLL2])
    now = datetime.now(UTC)
    network.ensure_site_year("CLL2", now.year)
    obs = openair_to_observations(read_rdata_table(network.openair_path("CLL2", now.year)), site_id="CLL2", network="aurn", source="t")
    assert obs["time"].max() < now
    assert obs["time"].max() >= now - timedelta(hours=2)


def test_ukair_csv_hour_ending_24_00_is_the_last_hour_of_the_day():
    text = (
        "Data supplied by UK-AIR on 1/5/2026\nAll Data GMT hour ending\nStatus: R =Ratified P=Provisional,P*=As supplied\n"
        ",,Cardiff Centre,,,,,,,,\n"
        'Date,time,"PM<sub>10</sub> particulate matter (Hourly measured)",status,unit,"Nitrogen dioxide",status,unit,'
        '"PM<sub>2.5</sub> particulate matter (Hourly measured)",status,unit\n \n'
        "01-01-2025,01:00,11.594,R,ugm-3,15.0,R,ugm-3,No data,R,ugm-3 (Ref.eq)\n"
        "01-01-2025,24:00,,P,ugm-3,21.5,P,ugm-3,7.1,P,ugm-3 (Ref.eq)\n"
        "02-01-2025,01:00,9.0,P*,ugm-3,20.0,P*,ugm-3,6.0,P*,ugm-3 (Ref.eq)\n"
    )
    obs = parse_ukair_csv(text, site_id="CARD")
    assert _value(obs, datetime(2025, 1, 1, 0, tzinfo=UTC), "pm10") == [pytest.approx(11.594)]
    assert _value(obs, datetime(2025, 1, 1, 0, tzinfo=UTC), "pm25") == [None]
    assert _value(obs, datetime(2025, 1, 1, 23, tzinfo=UTC), "no2") == [21.5]
    assert _value(obs, datetime(2025, 1, 1, 23, tzinfo=UTC), "pm10") == [None]
    assert _value(obs, datetime(2025, 1, 2, 0, tzinfo=UTC), "pm25") == [6.0]
    row = obs.filter((pl.col("time") == datetime(2025, 1, 1, 23, tzinfo=UTC)) & (pl.col("pollutant") == "pm25")).row(0, named=True)
    assert (row["status"], row["unit"]) == ("P", "ugm-3 (Ref.eq)")


def test_ukair_csv_round_trip_and_truncation_is_an_error():
    obs = openair_to_observations(read_rdata_table(FIXTURES / "ABD_2017.RData"), site_id="ABD", network="aurn", source="t")
    day = obs.filter(pl.col("time") < datetime(2017, 1, 3, tzinfo=UTC))
    text = format_ukair_csv("Aberdeen", day)
    back = parse_ukair_csv(text, site_id="ABD")
    key = ["time", "pollutant"]
    assert back.select(*key, "value").sort(key).equals(day.select(*key, "value").sort(key))
    with pytest.raises(SourceDataError, match=r"line 9 has \d+ fields where the header has 17 \(a cut or ragged row\)"):
        parse_ukair_csv(text[: text.index("01-01-2017,03:00") + 30], site_id="ABD")


def test_openmeteo_json_is_read_with_nulls_and_refuses_local_time():
    payload = {"utc_offset_seconds": 0, "hourly_units": {"time": "iso8601", "temperature_2m": "°C", "wind_speed_10m": "m/s"},
               "hourly": {"time": ["2025-06-01T00:00", "2025-06-01T01:00"], "temperature_2m": [12.5, None], "wind_speed_10m": [3.0, 4.0]}}
    weather = openmeteo_to_weather(payload, site_id="CLL2", kind="forecast", source="t")
    assert weather["time"].to_list() == [datetime(2025, 6, 1, 0, tzinfo=UTC), datetime(2025, 6, 1, 1, tzinfo=UTC)]
    assert weather["temperature_2m"].to_list() == [12.5, None]
    assert weather["boundary_layer_height"].null_count() == 2
    assert set(weather["kind"]) == {"forecast"}
    with pytest.raises(SourceDataError, match="utc_offset_seconds=3600"):
        openmeteo_to_weather({**payload, "utc_offset_seconds": 3600}, site_id="CLL2", kind="forecast", source="t")


# -- the HTTP client against a local server -------------------------------------------------

def test_download_retries_5xx_then_caches_and_revalidates(httpserver, tmp_path):
    body = (FIXTURES / "AH_2017.RData").read_bytes()
    httpserver.expect_ordered_request("/R_data/AH_2017.RData").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/R_data/AH_2017.RData").respond_with_data(body, headers={"ETag": '"v1"'})
    httpserver.expect_ordered_request("/R_data/AH_2017.RData", headers={"If-None-Match": '"v1"'}).respond_with_data("", status=304)
    session = make_session(backoff=0.01)
    dest = tmp_path / "AH_2017.RData"
    assert fetch_to_cache(session, httpserver.url_for("/R_data/AH_2017.RData"), dest) == dest
    assert dest.read_bytes() == body
    assert fetch_to_cache(session, httpserver.url_for("/R_data/AH_2017.RData"), dest) == dest  # 304: cached copy kept
    assert dest.read_bytes() == body
    httpserver.check_assertions()


def test_404_is_no_data_and_persistent_5xx_names_the_url(httpserver, tmp_path):
    httpserver.expect_request("/R_data/ZZZ_2017.RData").respond_with_data("not found", status=404)
    httpserver.expect_request("/R_data/BAD_2017.RData").respond_with_data("down", status=500)
    session = make_session(retries=2, backoff=0.01)
    assert fetch_to_cache(session, httpserver.url_for("/R_data/ZZZ_2017.RData"), tmp_path / "z") is None
    asked = len(httpserver.log)
    assert fetch_to_cache(session, httpserver.url_for("/R_data/ZZZ_2017.RData"), tmp_path / "z") is None
    assert len(httpserver.log) == asked  # the 404 is remembered, not asked again
    with pytest.raises(SourceUnavailable, match="BAD_2017.RData: HTTP 500"):
        fetch_to_cache(session, httpserver.url_for("/R_data/BAD_2017.RData"), tmp_path / "b")


def test_timeout_is_retried_then_reported(httpserver, tmp_path):
    calls = []

    def slow(request):
        calls.append(1)
        time.sleep(0.3)
        return Response("late")

    httpserver.expect_request("/slow.RData").respond_with_handler(slow)
    with pytest.raises(SourceUnavailable, match="slow.RData: (ReadTimeout|ConnectionError)"):
        fetch_to_cache(make_session(retries=1, backoff=0.01), httpserver.url_for("/slow.RData"), tmp_path / "s", timeout=0.2)
    time.sleep(0.4)  # the single-threaded test server takes the retry once the first answer is late
    assert len(calls) == 2
    assert not (tmp_path / "s").exists()


def test_openair_source_reads_real_files_over_http_and_a_corrupt_file_is_named(httpserver, tmp_path):
    httpserver.expect_request("/R_data/ABD_2017.RData").respond_with_data((FIXTURES / "ABD_2017.RData").read_bytes())
    httpserver.expect_request("/R_data/AH_2017.RData").respond_with_data((FIXTURES / "AH_2017.RData").read_bytes()[:5000])
    source = OpenairObservations(folder=str(tmp_path), base_url=httpserver.url_for("/R_data/"))
    obs = source.site_year("ABD", 2017)
    assert _value(obs, datetime(2017, 1, 1, tzinfo=UTC), "pm25") == [pytest.approx(9.9)]
    with pytest.raises(SourceDataError, match="AH_2017.RData: not a readable RData file"):
        source.site_year("AH", 2017)


def test_ukair_source_over_http(httpserver, tmp_path):
    obs = openair_to_observations(read_rdata_table(FIXTURES / "ABD_2017.RData"), site_id="ABD", network="aurn", source="t")
    text = format_ukair_csv("Aberdeen", obs.filter(pl.col("time") < datetime(2017, 1, 2, tzinfo=UTC)))
    httpserver.expect_request("/site_data/ABD_2017.csv").respond_with_data(text, content_type="text/csv")
    httpserver.expect_request("/site_data/XXX_2017.csv").respond_with_data("Not Found", status=404)
    source = UkairObservations(folder=str(tmp_path), base_url=httpserver.url_for("/site_data/"))
    got = source.site_year("ABD", 2017)
    assert _value(got, datetime(2017, 1, 1, 0, tzinfo=UTC), "no2") == [pytest.approx(6.05816)]
    assert source.site_year("XXX", 2017) is None


def test_open_meteo_weather_source_asks_for_gmt_and_metres_per_second(httpserver, tmp_path):
    payload = {"utc_offset_seconds": 0, "hourly_units": {"time": "iso8601", "temperature_2m": "°C"},
               "hourly": {"time": [f"2025-06-01T{h:02d}:00" for h in range(24)], "temperature_2m": list(range(24))}}
    httpserver.expect_request(
        "/v1/archive", query_string={"latitude": "51.52229", "longitude": "-0.125889", "start_date": "2025-06-01", "end_date": "2025-06-01",
                                      "hourly": "temperature_2m,relative_humidity_2m,wind_speed_10m,wind_direction_10m,precipitation,boundary_layer_height",
                                      "timezone": "GMT", "wind_speed_unit": "ms"}
    ).respond_with_json(payload)
    source = OpenMeteoWeather(basis="reanalysis", folder=str(tmp_path), archive_url=httpserver.url_for("/v1/archive"))
    site = {"site_id": "CLL2", "latitude": 51.52229, "longitude": -0.125889}
    weather = source.window(site, datetime(2025, 6, 1, 6, tzinfo=UTC), datetime(2025, 6, 1, 9, tzinfo=UTC))
    assert weather["temperature_2m"].to_list() == [6.0, 7.0, 8.0]
    assert set(weather["kind"]) == {"reanalysis"}
