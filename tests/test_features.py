"""core.features: lags and windows see only hours before the row they describe."""

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from routeaq_assets.core.features import FEATURE_COLUMNS, build_features, hourly_panel
from routeaq_assets.core.schema import FORECAST_POLLUTANTS, OBSERVATIONS, TIME, WEATHER, WEATHER_VARIABLES

START = datetime(2025, 3, 1, tzinfo=timezone.utc)
HOURS = 24 * 10


def _panel(values: dict[str, np.ndarray] | None = None, hours: int = HOURS) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    times = [START + timedelta(hours=h) for h in range(hours)]
    rows = []
    for site in ("AAA", "BBB"):
        for p in FORECAST_POLLUTANTS:
            series = values[p] if values and p in values else rng.gamma(3, 4, hours)
            rows += [(site, t, p, float(v)) for t, v in zip(times, series)]
    obs = pl.DataFrame(rows, schema={"site_id": pl.Utf8, "time": TIME, "pollutant": pl.Utf8, "value": pl.Float64}, orient="row")
    weather = pl.DataFrame(
        {"site_id": ["AAA"] * hours + ["BBB"] * hours, "time": times * 2, **{v: rng.normal(5, 2, 2 * hours) for v in WEATHER_VARIABLES}}
    ).with_columns(pl.col("time").cast(TIME))
    sites = pl.DataFrame({"site_id": ["AAA", "BBB"], "latitude": [51.5, 53.4], "longitude": [-0.1, -2.2], "location_type_code": [2, 5]})
    return hourly_panel(obs, weather, sites, START, START + timedelta(hours=hours))


def test_features_have_every_column_and_one_row_per_site_hour():
    features = build_features(_panel(), "pm25")
    assert list(features.columns[4:]) == list(FEATURE_COLUMNS)
    assert features.height == 2 * HOURS
    assert features.select("site_id", "time").is_unique().all()


@pytest.mark.parametrize("pollutant", FORECAST_POLLUTANTS)
def test_changing_the_target_hour_never_changes_its_features(pollutant):
    """Shift the value at hour t: every feature of row t must stay the same (no leakage)."""
    panel = _panel()
    target_time = START + timedelta(hours=200)
    changed = panel.with_columns(
        pl.when((pl.col("time") == target_time) & (pl.col("site_id") == "AAA")).then(pl.col(p) + 500.0).otherwise(pl.col(p)).alias(p)
        for p in FORECAST_POLLUTANTS
    )
    row = lambda frame: build_features(frame, pollutant).filter((pl.col("time") == target_time) & (pl.col("site_id") == "AAA"))  # noqa: E731
    before, after = row(panel), row(changed)
    assert after["target"][0] == pytest.approx(before["target"][0] + 500.0)
    assert before.select(FEATURE_COLUMNS).equals(after.select(FEATURE_COLUMNS))
    next_hour = build_features(changed, pollutant).filter((pl.col("time") == target_time + timedelta(hours=1)) & (pl.col("site_id") == "AAA"))
    assert next_hour["target_lag_1"][0] == pytest.approx(before["target"][0] + 500.0)


def test_lags_come_from_the_same_site_and_missing_hours_stay_missing():
    values = {p: np.arange(HOURS, dtype=float) for p in FORECAST_POLLUTANTS}
    values["pm25"][100] = np.nan
    panel = _panel(values).with_columns(pl.col("pm25").fill_nan(None))
    features = build_features(panel, "pm25").filter(pl.col("site_id") == "BBB")
    at = lambda h: features.filter(pl.col("time") == START + timedelta(hours=h)).row(0, named=True)  # noqa: E731
    assert at(0)["target_lag_1"] is None  # nothing before the first hour, not another site's value
    assert at(50)["target_lag_24"] == 26.0
    assert at(200)["target_lag_168"] == 32.0
    assert at(101)["target_lag_1"] is None
    assert at(101)["target_mean_3"] == pytest.approx((98 + 99) / 2)


def test_unknown_pollutant_is_refused():
    with pytest.raises(ValueError, match="unknown pollutant 'so2'"):
        build_features(_panel(hours=30), "so2")


def test_contract_schemas_name_the_design_columns():
    assert list(OBSERVATIONS) == ["site_id", "time", "pollutant", "value", "unit", "status", "network", "source", "ingested_at"]
    assert {"temperature_2m", "boundary_layer_height", "kind"} <= set(WEATHER)


@pytest.mark.parametrize("horizon", [3, 24, 25, 48])
def test_a_forecast_h_hours_ahead_sees_nothing_after_its_origin(horizon):
    """Change the hours after the origin t-h: no feature of row t moves. The newest value seen is
    hour t-h; the same-hour lags stay on the clock hour of t, on the newest day seen (yesterday
    up to 24 h ahead, the day before from 25 h)."""
    values = {p: np.arange(HOURS, dtype=float) for p in FORECAST_POLLUTANTS}
    panel = _panel(values)
    t = START + timedelta(hours=200)
    after_origin = (pl.col("time") > t - timedelta(hours=horizon)) & (pl.col("time") <= t)
    changed = panel.with_columns(pl.when(after_origin).then(pl.col(p) + 500.0).otherwise(pl.col(p)).alias(p) for p in FORECAST_POLLUTANTS)
    row = lambda frame: build_features(frame, "no2", horizon).filter((pl.col("time") == t) & (pl.col("site_id") == "AAA"))  # noqa: E731
    before, after = row(panel), row(changed)
    assert before.select(FEATURE_COLUMNS).equals(after.select(FEATURE_COLUMNS))
    assert before["target_lag_1"][0] == 200 - horizon
    assert before["target_lag_2"][0] == 200 - horizon - 1
    assert (before["target_lag_24"][0], before["target_lag_168"][0]) == (176.0 if horizon <= 24 else 152.0, 32.0)
    assert before["target_change_yesterday"][0] == pytest.approx(horizon)  # the same h hours, on the newest day seen
    assert before["hours_ahead"][0] == horizon


def test_one_hour_ahead_is_the_default_and_longer_than_two_days_is_refused():
    panel = _panel(hours=30)
    assert build_features(panel, "pm25").equals(build_features(panel, "pm25", 1))
    with pytest.raises(ValueError, match="horizon 49 h is outside 1 to 48 h"):
        build_features(panel, "pm25", 49)
