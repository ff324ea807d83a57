"""Weather the model will really have (missing forecasts, forecasts as issued, the stand-in), and a
backtest and gate that measure what is promoted."""

import json
import re
from datetime import datetime, timedelta, timezone

import dagster as dg
import numpy as np
import polars as pl
import pytest

from conftest import copy_home, make_definitions, register_candidate
from routeaq_assets.core.backtest import conditional_coverage, format_coverage
from routeaq_assets.core.features import WEATHER_FEATURES, build_features, hourly_panel, weather_summary
from routeaq_assets.core.metrics import scorable
from routeaq_assets.core.models import champion_overlap, day_ahead_decision, train_forecaster
from routeaq_assets.defs.training import TrainingConfig
from routeaq_assets.core.schema import TIME, WEATHER_VARIABLES, SourceDataError
from routeaq_assets.core.sites import load_packaged_registry, site_attributes
from routeaq_assets.weather_sources import OpenMeteoWeather
from routeaq_assets.sources.demo_network import DemoNetwork, DemoSite
from routeaq_assets.sources.http import SourceUnavailable
from routeaq_assets.sources.openair import openair_to_observations, read_rdata_table
from routeaq_assets.sources.openmeteo import UNITS, forecast_where_archived, openmeteo_to_weather

UTC = timezone.utc
SITES = ("CLL2", "MY1")


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    attrs = site_attributes(load_packaged_registry(SITES))
    network = DemoNetwork(
        tmp_path_factory.mktemp("demo"),
        [DemoSite(r["site_id"], r["site_name"], r["location_type"], r["latitude"], r["longitude"]) for r in attrs.iter_rows(named=True)],
    )
    for site in SITES:
        network.ensure_site_year(site, 2024)
    return network, attrs


def _observations(network: DemoNetwork) -> pl.DataFrame:
    return pl.concat(
        openair_to_observations(read_rdata_table(network.openair_path(s, 2024)), site_id=s, network="aurn", source="t") for s in SITES
    )


def _reanalysis(network: DemoNetwork) -> pl.DataFrame:
    return pl.concat(
        openmeteo_to_weather(json.loads(network.weather_path(s, 2024).read_text()), site_id=s, kind="reanalysis", source="t") for s in SITES
    )


def test_a_forecast_without_weather_stays_near_the_full_forecast_and_is_not_the_zero_weather_answer(demo):
    """LightGBM reads NaN in a feature that never missed in training as 0: 0 degC, no wind, a 0 m
    boundary layer. Trained with some weather masked, the forecast without weather stays within
    6 % (RMSE) of the full-information forecast and is better than the forecast given zeros."""
    network, attrs = demo
    panel = hourly_panel(_observations(network), _reanalysis(network), attrs, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 15, tzinfo=UTC))
    features = build_features(panel, "no2")
    cut = datetime(2024, 3, 1, tzinfo=UTC)
    model = train_forecaster(features.filter(pl.col("time") < cut), num_boost_round=100)
    held = scorable(features.filter(pl.col("time") >= cut))
    observed, persistence = held["target"].to_numpy(), held["target_lag_1"].to_numpy()
    full = model.predict(held)[0]
    missing = model.predict(held.with_columns(pl.lit(None, pl.Float64).alias(c) for c in WEATHER_FEATURES))[0]
    zeros = model.predict(held.with_columns(pl.lit(0.0).alias(c) for c in WEATHER_FEATURES))[0]
    assert _rmse(missing, observed) <= 1.06 * _rmse(full, observed)
    assert _rmse(missing, full) <= 0.25 * _rmse(persistence, observed)
    assert _rmse(missing, observed) < _rmse(zeros, observed)
    assert not np.allclose(missing, zeros)


def test_demo_forecast_error_grows_with_lead_time_and_the_archive_serves_the_day_before_run(demo):
    network, _ = demo
    truth = _reanalysis(network)
    runs = json.loads(network.previous_runs_path("CLL2", 2024).read_text())
    assert {"temperature_2m", "temperature_2m_previous_day1"} <= set(runs["hourly"]) and runs["hourly_units"]["wind_speed_10m_previous_day1"] == "m/s"
    errors = {}
    for day in (0, 1):
        forecast = openmeteo_to_weather(runs, site_id="CLL2", kind="forecast", source="t", days_before=day)
        joined = forecast.join(truth.filter(pl.col("site_id") == "CLL2"), on=["site_id", "time"], suffix="_true")
        errors[day] = {v: _rmse(joined[v], joined[f"{v}_true"]) for v in ("temperature_2m", "wind_speed_10m")}
    assert set(runs["hourly"]["boundary_layer_height_previous_day1"]) == {None}  # as the real Previous Runs API answers
    for variable, day_ahead in errors[1].items():
        assert day_ahead > 1.5 * errors[0][variable] > 0
    assert 0.8 < errors[1]["temperature_2m"] < 2.5  # a day-ahead temperature forecast: about 1.5 degC off

    origin = datetime(2024, 6, 10, 8, tzinfo=UTC)
    ahead = openmeteo_to_weather(network.forecast_ahead("CLL2", origin, origin + timedelta(hours=25)), site_id="CLL2", kind="forecast", source="t")
    assert ahead["time"].min() == origin + timedelta(hours=1) and ahead.height == 24
    actual = truth.filter((pl.col("site_id") == "CLL2") & pl.col("time").is_in(ahead["time"].implode()))
    assert not np.allclose(ahead["temperature_2m"], actual["temperature_2m"])


def _hours(n: int) -> list[str]:
    return [f"2024-01-01T{h:02d}:00" for h in range(n)]


def test_open_meteo_past_weather_is_the_forecast_issued_the_day_before_with_reanalysis_where_none_was_kept(httpserver, tmp_path):
    """Real answer shapes: the archive, and the Previous Runs API (``*_previous_day1``, null
    before the archive of runs starts)."""
    common = {"latitude": "51.52229", "longitude": "-0.125889", "start_date": "2024-01-01", "end_date": "2024-01-01", "timezone": "GMT", "wind_speed_unit": "ms"}
    variables = ("temperature_2m", "relative_humidity_2m", "wind_speed_10m", "wind_direction_10m", "precipitation", "boundary_layer_height")
    archive = {"latitude": 51.52, "longitude": -0.12, "utc_offset_seconds": 0, "timezone": "GMT", "hourly_units": {"time": "iso8601", **UNITS},
               "hourly": {"time": _hours(6), **{v: [10.0 + h for h in range(6)] for v in variables}}}
    previous = {"latitude": 51.52, "longitude": -0.12, "utc_offset_seconds": 0, "timezone": "GMT",
                "hourly_units": {"time": "iso8601", **{f"{v}_previous_day1": u for v, u in UNITS.items()}},
                "hourly": {"time": _hours(6), **{f"{v}_previous_day1": [None, None, 20.0, 21.0, 22.0, 23.0] for v in variables}}}
    httpserver.expect_request("/v1/archive", query_string={**common, "hourly": ",".join(variables)}).respond_with_json(archive)
    httpserver.expect_request("/previous/v1/forecast", query_string={**common, "hourly": ",".join(f"{v}_previous_day1" for v in variables)}).respond_with_json(previous)
    source = OpenMeteoWeather(folder=str(tmp_path), archive_url=httpserver.url_for("/v1/archive"), previous_runs_url=httpserver.url_for("/previous/v1/forecast"))
    weather = source.window({"site_id": "CLL2", "latitude": 51.52229, "longitude": -0.125889}, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 6, tzinfo=UTC))
    # Precipitation stamped 02:00 fell from 01:00: the archive holds a forecast of 01:00, whose other
    # variables the reanalysis stands in for.
    assert weather["kind"].to_list() == ["reanalysis", "forecast", "forecast", "forecast", "forecast", "forecast"]
    assert weather["temperature_2m"].to_list() == [10.0, 11.0, 20.0, 21.0, 22.0, 23.0]
    assert weather["precipitation"].to_list() == [11.0, 20.0, 21.0, 22.0, 23.0, None]  # 05:00 is summed at 06:00
    assert weather.select("site_id", "time").is_unique().all()

    httpserver.expect_request("/broken/v1/forecast").respond_with_json({"error": True, "reason": "Cannot initialize WeatherVariable from invalid String value"}, status=400)
    broken = OpenMeteoWeather(folder=str(tmp_path), archive_url=httpserver.url_for("/v1/archive"), previous_runs_url=httpserver.url_for("/broken/v1/forecast"))
    with pytest.raises(SourceUnavailable, match="HTTP 400.*invalid String"):
        broken.window({"site_id": "CLL2", "latitude": 51.52229, "longitude": -0.125889}, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 6, tzinfo=UTC))


def _answer(hourly: dict, units: dict | None = None, days: int = 1) -> dict:
    """An Open-Meteo answer in its real shape: ``hourly_units`` declares each variable's unit."""
    times = [f"2024-06-{1 + h // 24:02d}T{h % 24:02d}:00" for h in range(24 * days)]
    return {"latitude": 51.52, "longitude": -0.12, "generationtime_ms": 0.2, "utc_offset_seconds": 0, "timezone": "GMT", "timezone_abbreviation": "GMT",
            "elevation": 24.0, "hourly_units": {"time": "iso8601", **(units or {v: UNITS[v.split("_previous_day")[0]] for v in hourly})},
            "hourly": {"time": times, **hourly}}


def test_precipitation_is_stored_on_the_hour_it_fell_not_the_hour_its_sum_is_stamped():
    """Open-Meteo documents precipitation as the sum over the preceding hour: the 1.5 mm stamped
    10:00 fell from 09:00 to 10:00, which the hour-beginning contract stamps 09:00. Temperature is
    the value at its stamp and stays on it."""
    rain = [0.0] * 24
    rain[10] = 1.5
    weather = openmeteo_to_weather(_answer({"temperature_2m": [float(h) for h in range(24)], "precipitation": rain}), site_id="CLL2", kind="reanalysis", source="t")
    by_hour = {t.hour: (temp, p) for t, temp, p in weather.select("time", "temperature_2m", "precipitation").iter_rows()}
    assert by_hour[9] == (9.0, 1.5) and by_hour[10] == (10.0, 0.0)
    assert by_hour[23][1] is None  # its sum is stamped 00:00 of the next day, not in this answer


def test_each_weather_variable_takes_the_archived_forecast_else_the_reanalysis_never_a_missing_value():
    """The Previous Runs API answers boundary_layer_height_previous_day1 all null (HTTP 200), and
    wind only from 2024: a forecast hour still carries every variable, as the service's forecast
    does, with the archived forecast first and the reanalysis for what the archive does not keep."""
    n = 24
    archived = openmeteo_to_weather(
        _answer({"temperature_2m_previous_day1": [20.0] * n, "wind_speed_10m_previous_day1": [None] * 12 + [5.0] * 12,
                 "boundary_layer_height_previous_day1": [None] * n}),
        site_id="CLL2", kind="forecast", source="t", days_before=1,
    )
    reanalysis = openmeteo_to_weather(
        _answer({v: [1.0] * n for v in WEATHER_VARIABLES}), site_id="CLL2", kind="reanalysis", source="t",
    )
    weather = forecast_where_archived(archived, reanalysis)
    assert weather.height == n and weather["kind"].unique().to_list() == ["forecast"]
    assert weather["temperature_2m"].unique().to_list() == [20.0]
    assert weather["boundary_layer_height"].to_list() == [1.0] * n
    assert weather["wind_speed_10m"].to_list() == [1.0] * 12 + [5.0] * 12
    assert weather.select(v for v in WEATHER_VARIABLES if v != "precipitation").null_count().sum_horizontal().item() == 0


@pytest.mark.parametrize(("variable", "unit"), [("wind_speed_10m", "km/h"), ("temperature_2m", "°F"), ("precipitation", "inch"), ("wind_speed_10m", None)])
def test_an_answer_declaring_another_unit_is_refused_and_names_the_variable(variable, unit):
    hourly = {v: [1.0] * 24 for v in WEATHER_VARIABLES}
    units = {v: UNITS[v] for v in WEATHER_VARIABLES}
    units.pop(variable) if unit is None else units.update({variable: unit})
    with pytest.raises(SourceDataError, match=rf"t: hourly_units\.{variable} is {re.escape(repr(unit))}, expected"):
        openmeteo_to_weather(_answer(hourly, units), site_id="CLL2", kind="reanalysis", source="t")
    previous = {f"{v}_previous_day1": values for v, values in hourly.items()}
    with pytest.raises(SourceDataError, match=f"hourly_units.{variable}_previous_day1"):
        openmeteo_to_weather(_answer(previous, {f"{v}_previous_day1": u for v, u in units.items()}), site_id="CLL2", kind="forecast", source="t", days_before=1)


def test_features_use_a_forecast_where_there_is_one_and_the_weather_at_the_origin_elsewhere():
    times = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(240)]
    temperature = [float(h) for h in range(240)]
    kinds = ["reanalysis"] * 200 + ["forecast"] * 40
    weather = pl.DataFrame({"site_id": "AAA", "time": times, **{v: temperature for v in WEATHER_VARIABLES}, "kind": kinds}).with_columns(pl.col("time").cast(TIME))
    observations = pl.DataFrame({"site_id": "AAA", "time": times, "pollutant": "no2", "value": 10.0}).with_columns(pl.col("time").cast(TIME))
    sites = pl.DataFrame({"site_id": ["AAA"], "latitude": [51.5], "longitude": [-0.1], "location_type_code": [2]})
    panel = hourly_panel(observations, weather, sites, times[0], times[-1] + timedelta(hours=1))
    at = lambda frame, h: frame.filter(pl.col("time") == times[h]).row(0, named=True)  # noqa: E731
    six = build_features(panel, "no2", 6)
    assert at(six, 150)["temperature_2m"] == 144.0  # reanalysis at t: the service would have had the weather at t - 6
    assert at(six, 210)["temperature_2m"] == 210.0  # a forecast for t: known at t - 6
    assert at(build_features(panel, "no2", 6, weather="reanalysis"), 150)["temperature_2m"] == 150.0
    assert "forecast as issued for 17% of site-hours" in weather_summary(panel["weather_kind"])
    with pytest.raises(ValueError, match="unknown weather basis 'perfect'"):
        build_features(panel, "no2", 1, weather="perfect")


def test_the_backtest_trains_as_the_candidate_does_and_scores_the_same_hours_alike(trained_home, monkeypatch):
    """One fold over the candidate's held-out week: the backtest's model is the promoted one
    (same window, rounds, interval and weather), so its scores are the candidate's."""
    monkeypatch.setenv("ROUTEAQ_HOME", str(trained_home))
    defs = make_definitions(trained_home)
    champion = defs.resources["model_store"].registry().load("routeaq-no2")
    config = {"ops": {"backtest": {"config": {"pollutants": ["no2"], "folds": 1, "test_days": 7}}}}
    result = dg.materialize([defs.get_assets_def("backtest")], resources=defs.resources, run_config=config)
    metadata = result.asset_materializations_for_node("backtest")[0].metadata
    held_out = champion.metadata["holdout_metrics"]["1"]
    assert metadata["no2_model_rmse"].value == pytest.approx(held_out["model_rmse"], rel=1e-6)
    assert metadata["no2_interval_coverage"].value == pytest.approx(held_out["interval_coverage"], rel=1e-6)
    assert (metadata["train_days"].value, metadata["num_boost_round"].value) == (TrainingConfig().train_days, TrainingConfig().num_boost_round)
    assert "forecast as issued for 100% of site-hours" in metadata["weather"].value


def test_the_gate_refuses_a_champion_that_trained_on_the_held_out_hours_and_says_so(trained_home, tmp_path, monkeypatch):
    home = copy_home(trained_home, tmp_path)  # a candidate is registered
    monkeypatch.setenv("ROUTEAQ_HOME", str(home))
    defs = make_definitions(home)
    registry = defs.resources["model_store"].registry()
    champion = registry.load("routeaq-no2")
    trained_until = datetime.fromisoformat(champion.metadata["train_end"])
    assert champion_overlap(champion.metadata, trained_until) is None
    refused = champion_overlap(champion.metadata, trained_until - timedelta(days=2))
    assert f"trained on hours up to {trained_until.isoformat()}" in refused
    assert "not recorded" in champion_overlap({}, trained_until)

    by_lead = {1: {"model_rmse": 1.0, "persistence_rmse": 8.0, "skill_vs_persistence": 0.875}}
    instance = dg.DagsterInstance.ephemeral()
    register_candidate(defs, instance, "no2", {
        "champion_version": champion.version, "champion_refused": refused, "by_lead": by_lead, "interval_coverage": 0.8,
        "config": {"coverage": 0.8, "coverage_tolerance": 0.05, "margin": 0.01},
    })
    gate = next(c for c in defs.asset_checks if "no2_candidate" in str(c.check_keys))
    evaluated = dg.materialize([defs.get_assets_def("no2_candidate"), gate], selection=dg.AssetSelection.checks(gate), resources=defs.resources, instance=instance, raise_on_error=False)
    (check,) = evaluated.get_asset_check_evaluations()
    assert not check.passed and "not compared with the champion" in check.description and "inside the held-out hours" in check.description
    decision = day_ahead_decision(by_lead, 0.8, champion_refused=refused)
    assert not decision.promote and "trained on hours up to" in decision.reason


def test_conditional_coverage_counts_each_sites_top_decile_of_observed_values():
    """Site A's interval misses exactly its ten highest hours: 90 % overall, 0 % on its top decile."""
    observed = np.arange(100, dtype=float)
    predictions = pl.DataFrame(
        {
            "pollutant": "no2",
            "site_id": ["A"] * 100 + ["B"] * 100,
            "target": np.concatenate([observed, observed + 1000]),
            "lower": np.concatenate([observed - 1, observed + 999]),
            "upper": np.concatenate([np.where(observed >= 90, observed - 0.5, observed + 1), observed + 1001]),
        }
    )
    table = conditional_coverage(predictions)
    rows = {r["site_id"]: r for r in table.iter_rows(named=True)}
    assert table["site_id"].to_list() == ["ALL", "A", "B"]
    assert (rows["A"]["coverage"], rows["A"]["top_hours"], rows["A"]["top_decile_coverage"]) == (0.9, 10, 0.0)
    assert (rows["B"]["coverage"], rows["B"]["top_decile_coverage"]) == (1.0, 1.0)
    assert (rows["ALL"]["coverage"], rows["ALL"]["top_hours"], rows["ALL"]["top_decile_coverage"]) == (0.95, 20, 0.5)
    assert "top-10% cover" in format_coverage(table)
