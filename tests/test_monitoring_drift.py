"""Drift on the demo network's simulator: quiet on stationary data, quick on an injected shift."""

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from conftest import TEST_SITES
from routeaq_assets.core import drift
from routeaq_assets.core.features import build_features
from routeaq_assets.core.sites import load_packaged_registry, site_attributes
from routeaq_assets.sources.demo_network import DemoSite, Shift, simulate_site_year

UTC = timezone.utc
TRAIN_END = datetime(2025, 7, 25, 12, tzinfo=UTC)  # the demo's champion: 53 training days before its held-out week
TRAIN_START = TRAIN_END - timedelta(days=53)
SHIFT = Shift(datetime(2025, 8, 11, tzinfo=UTC), "no2", "scale", 2.0)  # NO2 emissions double across the network from a Monday
RENAME = {"date": "time", "NO2": "no2", "O3": "o3", "PM2.5": "pm25", "PM10": "pm10", "NOXasNO2": "nox", "temp": "temperature_2m", "ws": "wind_speed_10m",
          "wd": "wind_direction_10m", "rh": "relative_humidity_2m", "precip": "precipitation", "blh": "boundary_layer_height"}


def panel(shift: Shift | None) -> pl.DataFrame:
    """The simulated hourly panel of the test sites in 2025 (what the network's files hold)."""
    frames = []
    for r in site_attributes(load_packaged_registry(tuple(TEST_SITES))).iter_rows(named=True):
        simulated = simulate_site_year(DemoSite(r["site_id"], r["site_name"], r["location_type"], r["latitude"], r["longitude"]), 2025)
        if shift is not None:
            simulated = shift.apply(r["site_id"], simulated)
        frames.append(
            pl.from_pandas(simulated.drop(columns=["site", "code"])).rename(RENAME).with_columns(
                pl.col("time").dt.cast_time_unit("us"), site_id=pl.lit(r["site_id"]), **{a: pl.lit(r[a]) for a in ("latitude", "longitude", "location_type_code")}
            )
        )
    return pl.concat(frames).filter(pl.col("time").is_between(TRAIN_START - timedelta(days=8), SHIFT.start + timedelta(days=2)))


def alarms(features: pl.DataFrame, hours: list[datetime]) -> list[datetime]:
    training = features.filter(pl.col("time").is_between(TRAIN_START, TRAIN_END, closed="left"))
    thresholds = drift.calibrated_thresholds(training, drift.DRIFT_FEATURES)
    reference = training.sample(min(drift.REFERENCE_ROWS, training.height), seed=7)
    fired = []
    for hour in hours:
        current = features.filter((pl.col("time") > hour - timedelta(hours=drift.CURRENT_WINDOW_HOURS)) & (pl.col("time") <= hour))
        if drift.feature_drift("x", reference, current, thresholds=thresholds).drifted:
            fired.append(hour)
    return fired


def test_the_window_is_a_day_and_calendar_and_site_identity_are_left_out():
    assert drift.CURRENT_WINDOW_HOURS == 24
    assert not set(drift.DRIFT_FEATURES) & {"hour", "weekday", "month", "is_holiday", "latitude", "longitude", "location_type_code"}


@pytest.mark.parametrize("pollutant", ["pm25", "no2", "o3"])
def test_a_stationary_fortnight_fires_on_at_most_one_day(pollutant):
    fortnight = [TRAIN_END + timedelta(hours=k) for k in range(14 * 24)]
    assert fortnight[-1] < SHIFT.start
    fired = alarms(build_features(panel(None), pollutant), fortnight)
    assert len({hour.date() for hour in fired}) <= 1, fired


def test_doubled_no2_is_flagged_within_a_day_of_its_start():
    day = [SHIFT.start + timedelta(hours=k) for k in range(24)]
    fired = alarms(build_features(panel(SHIFT), "no2"), day)
    assert fired and fired[0] < SHIFT.start + timedelta(hours=24)
    # The same hours without the shift: no alarm, so it is the shift that fired.
    assert alarms(build_features(panel(None), "no2"), day) == []
