"""The forecast function in process: train/serve parity, the offline path, model lifecycle,
the Redis online store."""

import json
import shutil
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import duckdb
import polars as pl
import pytest

from conftest import copy_home, make_definitions
from routeaq_assets.adapters.registry import ForecastRegistry
from routeaq_assets.core.environment import load_settings
from routeaq_assets.core.features import build_features
from routeaq_serving.forecasts import OFFLINE, ONLINE, ForecastItem, Forecasts, OutOfRange, UnknownSite

UTC = timezone.utc


@pytest.fixture
def forecasts(trained_home, monkeypatch) -> Forecasts:
    monkeypatch.setenv("ROUTEAQ_HOME", str(trained_home))
    service = Forecasts(load_settings())
    assert service.refresh(), service._reason
    return service


@pytest.fixture
def own_store_forecasts(trained_home, tmp_path, monkeypatch) -> Forecasts:
    """The service over the trained home with an online store of the test's own (a copy of the
    panel): what a test publishes beside it (interval factors, daily errors) no other test sees."""
    store = tmp_path / "online" / "features.parquet"
    store.parent.mkdir()
    shutil.copy(trained_home / "online" / "features.parquet", store)
    monkeypatch.setenv("ROUTEAQ_HOME", str(trained_home))
    monkeypatch.setenv("ROUTEAQ_ONLINE_STORE", str(store))
    service = Forecasts(load_settings())
    assert service.refresh(), service._reason
    return service


def silver_prediction(home, site_id: str, hour: datetime, pollutant: str, forecasts: Forecasts) -> float:
    """What the served model predicts from the training features of that row."""
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        row = pl.from_arrow(
            con.execute("SELECT * FROM silver_features WHERE site_id = ? AND time = ? AND pollutant = ?", [site_id, hour, pollutant]).to_arrow_table()
        )
    pred, _, _ = forecasts._state.models[pollutant].forecaster.predict(row)
    return round(float(pred[0]), 3)


@pytest.mark.parametrize("hour, source", [(datetime(2025, 7, 31, 18, tzinfo=UTC), ONLINE), (datetime(2025, 7, 16, 7, tzinfo=UTC), OFFLINE)])
def test_served_forecast_equals_the_model_on_training_features(trained_home, forecasts, hour, source):
    for pollutant in ("pm25", "no2", "o3"):
        (answer,) = forecasts.forecast([ForecastItem("MY1", hour, pollutant)])
        assert answer["source"] == source
        assert answer["pred"] == silver_prediction(trained_home, "MY1", hour, pollutant, forecasts)


def test_a_batch_mixes_online_and_offline_hours_in_order(forecasts):
    hours = [datetime(2025, 7, 31, 10, tzinfo=UTC), datetime(2025, 7, 12, 10, tzinfo=UTC), datetime(2025, 8, 1, 12, tzinfo=UTC)]
    answers = forecasts.forecast([ForecastItem("CLL2", h, "pm25") for h in hours])
    assert [a["timestamp"] for a in answers] == [h.strftime("%Y-%m-%dT%H:%M:%SZ") for h in hours]
    assert [a["source"] for a in answers] == [ONLINE, OFFLINE, ONLINE]


def test_errors_name_the_problem(forecasts):
    with pytest.raises(UnknownSite, match="unknown site_id 'ZZZ'"):
        forecasts.forecast([ForecastItem("ZZZ", datetime(2025, 7, 31, tzinfo=UTC), "pm25")])
    with pytest.raises(OutOfRange, match="earliest hour available is 2025-07-08T13:00"):
        forecasts.forecast([ForecastItem("CLL2", datetime(2025, 7, 1, tzinfo=UTC), "pm25")])
    with pytest.raises(OutOfRange, match="latest hour available is 2025-08-03T11:00"):
        forecasts.forecast([ForecastItem("CLL2", datetime(2025, 8, 3, 12, tzinfo=UTC), "pm25")])


def test_every_hour_to_48_ahead_is_answered_by_the_champion_with_that_leads_features(forecasts):
    state = forecasts._state
    assert state.origin == datetime(2025, 8, 1, 11, tzinfo=UTC)  # the newest observation
    hours = [state.origin + timedelta(hours=h) for h in range(1, 49)]
    answers = forecasts.forecast([ForecastItem("MY1", hour, p) for hour in hours for p in ("pm25", "no2", "o3")])
    assert [a["hours_ahead"] for a in answers if a["pollutant"] == "no2"] == list(range(1, 49))
    assert all(a["data_until"] == "2025-08-01T11:00:00Z" for a in answers)
    registry = ForecastRegistry(load_settings().mlflow_tracking_uri)
    assert {a["model_version"] for a in answers if a["pollutant"] == "no2"} == {registry.champion_version("routeaq-no2")}
    # the champion on the features of a forecast six hours after the newest observation (weather: the forecast)
    six = state.origin + timedelta(hours=6)
    ahead = next(a for a in answers if a["pollutant"] == "no2" and a["hours_ahead"] == 6)
    model = registry.load("routeaq-no2")
    panel = forecasts.store.read().filter(pl.col("time") <= six)
    row = build_features(panel, "no2", 6).filter((pl.col("site_id") == "MY1") & (pl.col("time") == six))
    assert ahead["pred"] == round(float(model.forecaster.predict(row)[0][0]), 3)
    assert forecasts.status()["hours_ahead"] == {p: list(range(1, 49)) for p in ("pm25", "pm10", "no2", "o3")}
    with pytest.raises(OutOfRange, match="latest hour available is 2025-08-03T11:00.*forecast 1 to 48 hours after it"):
        forecasts.forecast([ForecastItem("MY1", state.origin + timedelta(hours=49), "no2")])


def test_today_and_tomorrow_are_defras_daily_index_over_the_observed_and_forecast_hours(forecasts):
    """Today (the UK day of the first hour forecast) is its observed hours and the forecasts for
    the rest; tomorrow is forecast hours only, every one a /predict answer; each pollutant
    averaged as Defra averages it, the site's index its highest pollutant's."""
    from routeaq_assets.core.daily_daqi import index_of, uk_day, uk_day_bounds
    from routeaq_serving.daily import daily_outlook

    state = forecasts.current()
    (today, tomorrow), answers = daily_outlook(forecasts, state, "MY1")
    assert today.day == uk_day(state.origin + timedelta(hours=1)) and tomorrow.day == today.day + timedelta(days=1)
    start, end = uk_day_bounds(tomorrow.day)
    for day in (today, tomorrow):
        assert {p.pollutant for p in day.pollutants} == {"pm25", "pm10", "no2", "o3"}
        assert day.index == max(p.index for p in day.pollutants) and day.set_by in {p.pollutant for p in day.pollutants if p.index == day.index}
        assert 0.0 <= day.p_high <= day.p_moderate <= 1.0 and day.p_at_least[1] == 1.0
    assert all(p.observed_hours == 0 and p.forecast_hours == (end - start) / timedelta(hours=1) for p in tomorrow.pollutants)
    assert all(p.observed_hours > 0 and p.forecast_hours == 11 and p.observed_hours + p.forecast_hours >= 18 for p in today.pollutants)  # 00:00-12:00 BST seen
    hours = [start + timedelta(hours=k) for k in range(int((end - start) / timedelta(hours=1)))]
    pm25 = [a["pred"] for a in forecasts.forecast([ForecastItem("MY1", h, "pm25") for h in hours])]
    no2 = [a["pred"] for a in forecasts.forecast([ForecastItem("MY1", h, "no2") for h in hours])]
    by = {p.pollutant: p for p in tomorrow.pollutants}
    assert by["pm25"].value == pytest.approx(sum(pm25) / len(pm25)) and by["no2"].value == pytest.approx(max(no2))
    assert by["pm25"].index == index_of("pm25", [by["pm25"].value])[0]
    assert {(a["pollutant"], a["timestamp"]) for a in answers} >= {("pm25", f"{h:%Y-%m-%dT%H:%M:%SZ}") for h in hours}


def test_a_new_champion_is_picked_up_without_a_restart(trained_home, tmp_path, monkeypatch):
    home = copy_home(trained_home, tmp_path)  # it registers and promotes a model
    monkeypatch.setenv("ROUTEAQ_HOME", str(home))
    forecasts = Forecasts(load_settings())
    assert forecasts.refresh(), forecasts._reason
    registry = ForecastRegistry(load_settings().mlflow_tracking_uri)
    old = registry.champion_version("routeaq-o3")
    hour = datetime(2025, 7, 31, 18, tzinfo=UTC)
    before = forecasts.forecast([ForecastItem("CLL2", hour, "o3")])[0]
    assert not forecasts.refresh()  # nothing changed
    defs = make_definitions(home)
    config = {"ops": {"o3_candidate": {"config": {"num_boost_round": 50, "coverage_tolerance": 0.2}}}}
    assert dg.materialize([defs.get_assets_def("o3_candidate")], resources=defs.resources, run_config=config).success
    new = str(max(int(v.version) for v in registry.client.search_model_versions("name='routeaq-o3'")))
    assert new != old
    registry.promote("routeaq-o3", new, "test: explicit promotion")
    assert forecasts.refresh()
    after = forecasts.forecast([ForecastItem("CLL2", hour, "o3")])[0]
    assert (before["model_version"], after["model_version"]) == (old, new)
    assert after["pred"] != before["pred"]


def test_the_last_good_model_keeps_serving_when_mlflow_is_unreachable(forecasts, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    hour = datetime(2025, 7, 31, 18, tzinfo=UTC)
    before = forecasts.forecast([ForecastItem("CLL2", hour, "pm25")])[0]
    forecasts.settings = forecasts.settings.model_copy(update={"mlflow_tracking_uri": "http://127.0.0.1:9"})
    assert not forecasts.refresh()
    status = forecasts.status()
    assert status["status"] == "degraded" and "serving the last good state: registry http://127.0.0.1:9 cannot be read" in status["warning"]
    assert forecasts.forecast([ForecastItem("CLL2", hour, "pm25")])[0] == before


def test_online_history_through_the_real_redis(trained_home, tmp_path, monkeypatch):
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/15")
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis is expected on 127.0.0.1:6379 (see the README)")
    client.flushdb()
    home = copy_home(trained_home, tmp_path)  # online_features writes its history files there
    monkeypatch.setenv("ROUTEAQ_HOME", str(home))
    monkeypatch.setenv("ROUTEAQ_ONLINE_STORE", "redis://127.0.0.1:6379/15")
    defs = make_definitions(home)
    assert dg.materialize([defs.get_assets_def("online_features")], resources=defs.resources).success
    assert client.get("routeaq:online:panel:version") is not None
    service = Forecasts(load_settings())
    assert service.refresh(), service._reason
    answer = service.forecast([ForecastItem("MAN3", datetime(2025, 8, 1, 12, tzinfo=UTC), "no2")])[0]
    assert answer["source"] == ONLINE and answer["pred"] >= 0 and answer["interval_factor"] == 1.0
    # The monitoring loop's interval factors travel through the same Redis, beside the panel.
    from routeaq_assets.core.intervals import FACTORS

    factors = pl.DataFrame({"pollutant": ["no2"], "hours_ahead": [1], "site_id": ["MAN3"], "factor": [2.0], "forecasts": [300], "as_of": [datetime(2025, 8, 1, tzinfo=UTC)], "level": [0.8], "level_low": [None], "level_high": [None]}, schema=FACTORS)
    assert "routeaq:online:panel:interval_factors" in defs.resources["online_store"].publish_interval_factors(factors)
    assert service.refresh(), service._reason
    stretched = service.forecast([ForecastItem("MAN3", datetime(2025, 8, 1, 12, tzinfo=UTC), "no2")])[0]
    assert (stretched["pred"], stretched["interval_factor"]) == (answer["pred"], 2.0)
    assert stretched["upper"] - stretched["pred"] == pytest.approx(2 * (answer["upper"] - answer["pred"]), abs=2e-3)
    answer = stretched
    client.flushdb()
    assert not service.refresh()  # the store emptied: the last good history keeps serving
    assert service.forecast([ForecastItem("MAN3", datetime(2025, 8, 1, 12, tzinfo=UTC), "no2")])[0] == answer


def test_prediction_log_round_trips_the_contract(tmp_path):
    """What the service appends is what monitoring reads: every contract column, typed, and a
    torn last line (a crash mid-write) is skipped, not guessed."""
    from routeaq_assets.core.predictions import prediction_record, read_prediction_log
    from routeaq_assets.core.schema import PREDICTIONS
    from routeaq_serving.prediction_log import PredictionLog

    answer = {
        "site_id": "MY1", "timestamp": "2025-08-01T10:00:00Z", "pollutant": "no2", "pred": 31.5, "lower": 25.0, "upper": 39.0,
        "interval": 0.8, "interval_factor": 1.3, "hours_ahead": 6, "origin": "2025-08-01T04:00:00Z", "model_name": "routeaq-no2",
        "model_version": "3",
    }
    log = PredictionLog(tmp_path)
    log.append([answer, {**answer, "site_id": "CLL2"}])
    older = {k: v for k, v in prediction_record({**answer, "site_id": "LEED"}, datetime.now(timezone.utc)).items() if k != "interval_factor"}
    with open(next(tmp_path.glob("*.jsonl")), "a") as f:
        f.write(json.dumps(older) + "\n")  # written before intervals were recalibrated
        f.write('{"site_id": "MY1", "time": "2025-08-01T1')
    frame = read_prediction_log(tmp_path)
    assert frame.schema == PREDICTIONS
    assert frame.height == 3 and sorted(frame["site_id"]) == ["CLL2", "LEED", "MY1"]
    assert dict(zip(frame["site_id"], frame["interval_factor"])) == {"MY1": 1.3, "CLL2": 1.3, "LEED": 1.0}
    row = frame.row(0, named=True)
    assert row["hours_ahead"] == 6 and row["model_name"] == "routeaq-no2"
    assert row["time"] - row["origin"] == timedelta(hours=6)
    assert read_prediction_log(tmp_path, start=datetime(2025, 8, 1, 11, tzinfo=timezone.utc)).is_empty()


def test_published_daily_errors_give_tomorrows_odds_and_today_keeps_the_hourly_draws(own_store_forecasts):
    """The verified daily errors that ``daqi_verification`` publishes reach the service at its next
    refresh: tomorrow (wholly forecast) takes its odds from them, today (partly observed) from the
    hourly intervals; the point index is the same either way."""
    import numpy as np

    from routeaq_assets.adapters.stores import daily_error_store
    from routeaq_assets.core.daily_daqi import DAILY_ERRORS, HOURLY_DRAWS, odds_from_errors
    from routeaq_serving.daily import daily_outlook

    forecasts = own_store_forecasts
    before = daily_outlook(forecasts, forecasts.current(), "MY1")[0]
    assert [d.odds_from for d in before] == [HOURLY_DRAWS, HOURLY_DRAWS]
    rng = np.random.default_rng(5)
    errors = pl.DataFrame({"site_id": "X", "day": [date(2025, 5, 1) + timedelta(days=k) for k in range(40)],
                           **{f"error_{p}": rng.normal(0.3, 0.4, 40) for p in ("pm25", "pm10", "no2", "o3")}})
    daily_error_store(forecasts.settings.online_store_target).publish(errors)
    assert forecasts.refresh()
    today, tomorrow = daily_outlook(forecasts, forecasts.current(), "MY1")[0]
    assert (today.odds_from, today.p_at_least) == (HOURLY_DRAWS, before[0].p_at_least)
    assert (tomorrow.odds_from, tomorrow.odds_site_days, tomorrow.index) == (DAILY_ERRORS, 40, before[1].index)
    expected, _ = odds_from_errors({p.pollutant: p.value for p in tomorrow.pollutants}, errors)
    assert tomorrow.p_at_least == expected and tomorrow.p_at_least != before[1].p_at_least


def test_published_interval_factors_stretch_the_served_interval_and_are_logged(own_store_forecasts):
    """Factors from the monitoring loop (``interval_calibration``) reach the service at its next
    refresh: a site's own factor, else its pollutant's pooled one, else 1, times the adjustment of
    the forecast's level; the forecast itself is unchanged and the answer says what the interval
    was multiplied by."""
    from routeaq_assets.adapters.stores import interval_factor_store
    from routeaq_assets.core.intervals import FACTORS

    forecasts = own_store_forecasts
    hour = datetime(2025, 7, 31, 18, tzinfo=UTC)
    items = [ForecastItem("MY1", hour, "no2"), ForecastItem("CLL2", hour, "no2"), ForecastItem("MY1", hour, "pm25")]
    before = forecasts.forecast(items)
    assert [a["interval_factor"] for a in before] == [1.0, 1.0, 1.0]
    # MY1's own factor, the pooled one, and a level adjustment for NO2 forecasts of 0 to 1000 (every one here).
    factors = pl.DataFrame(
        {"pollutant": ["no2", "no2", "no2"], "hours_ahead": [1, 1, 1], "site_id": ["MY1", "", ""], "factor": [2.0, 1.5, 1.2], "forecasts": [500, 900, 900],
         "as_of": [hour] * 3, "level": [0.8] * 3, "level_low": [None, None, 0.0], "level_high": [None, None, 1000.0]},
        schema=FACTORS,
    )
    interval_factor_store(forecasts.settings.online_store_target).publish(factors)
    assert forecasts.refresh()
    after = forecasts.forecast(items)
    for was, now, factor in zip(before, after, (2.0 * 1.2, 1.5 * 1.2, 1.0)):
        assert now["pred"] == was["pred"] and now["interval_factor"] == pytest.approx(factor, abs=1e-4)
        assert now["upper"] - now["pred"] == pytest.approx(factor * (was["upper"] - was["pred"]), abs=2e-3)
        assert now["lower"] == pytest.approx(max(0.0, now["pred"] - factor * (was["pred"] - was["lower"])), abs=2e-3) or was["lower"] == 0.0
