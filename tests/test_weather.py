"""Weather the model will really have: missing forecasts, forecasts as issued, and the stand-in."""

import json
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from routeaq_assets.core.features import WEATHER_FEATURES, build_features, hourly_panel
from routeaq_assets.core.metrics import scorable
from routeaq_assets.core.models import train_forecaster
from routeaq_assets.core.sites import load_packaged_registry, site_attributes
from routeaq_assets.sources.demo_network import DemoNetwork, DemoSite
from routeaq_assets.sources.openair import openair_to_observations, read_rdata_table
from routeaq_assets.sources.openmeteo import openmeteo_to_weather

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
