"""core.models and core.metrics: training, intervals, scores and the promotion rule."""

from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from routeaq_assets.core.features import build_features, hourly_panel
from routeaq_assets.core.metrics import evaluate, scorable
from routeaq_assets.core.models import day_ahead_decision, train_forecaster
from routeaq_assets.core.sites import load_packaged_registry, site_attributes
from routeaq_assets.sources.demo_network import DemoNetwork, DemoSite
from routeaq_assets.sources.openair import openair_to_observations, read_rdata_table
from routeaq_assets.sources.openmeteo import openmeteo_to_weather


@pytest.fixture(scope="module")
def demo_features(tmp_path_factory) -> pl.DataFrame:
    import json

    attrs = site_attributes(load_packaged_registry(("CLL2", "MY1")))
    network = DemoNetwork(tmp_path_factory.mktemp("demo"), [DemoSite(r["site_id"], r["site_name"], r["location_type"], r["latitude"], r["longitude"]) for r in attrs.iter_rows(named=True)])
    obs, weather = [], []
    for site in ("CLL2", "MY1"):
        network.ensure_site_year(site, 2024)
        obs.append(openair_to_observations(read_rdata_table(network.openair_path(site, 2024)), site_id=site, network="aurn", source="t"))
        weather.append(openmeteo_to_weather(json.loads(network.weather_path(site, 2024).read_text()), site_id=site, kind="reanalysis", source="t"))
    panel = hourly_panel(pl.concat(obs), pl.concat(weather), attrs, datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 5, 1, tzinfo=timezone.utc))
    return build_features(panel, "pm25")


def test_forecaster_beats_persistence_on_later_hours_with_calibrated_interval(demo_features):
    cut = datetime(2024, 4, 1, tzinfo=timezone.utc)
    forecaster = train_forecaster(demo_features.filter(pl.col("time") < cut), num_boost_round=150)
    held = scorable(demo_features.filter(pl.col("time") >= cut))
    pred, lower, upper = forecaster.predict(held)
    scores = evaluate(held.with_columns(pred=pl.Series(pred), lower=pl.Series(lower), upper=pl.Series(upper)))
    assert scores["model_rmse"] < scores["persistence_rmse"]
    assert scores["model_rmse"] < scores["yesterday_rmse"]
    assert 0.7 <= scores["interval_coverage"] <= 0.9
    assert np.all(lower <= pred) and np.all(pred <= upper) and np.all(lower >= 0)


def test_the_interval_is_calibrated_per_lead_and_predicted_level(demo_features):
    """A Mondrian step: on the later hours, the model's own interval covers near its 80 % in each
    quintile of the predicted level, not only on average; a lead between the trained ones takes
    the next trained lead's quantiles."""
    cut = datetime(2024, 4, 1, tzinfo=timezone.utc)
    forecaster = train_forecaster(demo_features.filter(pl.col("time") < cut), num_boost_round=150)
    assert set(forecaster.level_edges) == {1} and len(forecaster.level_edges[1]) == 4
    assert {b for (lead, b) in forecaster.quantiles} == {-1, 0, 1, 2, 3, 4}
    widths = [forecaster.quantiles[(1, b)][1] - forecaster.quantiles[(1, b)][0] for b in range(5)]
    assert widths[-1] > 1.2 * widths[0]  # the highest predicted levels miss by more than the lowest
    held = scorable(demo_features.filter(pl.col("time") >= cut))
    pred, lower, upper = forecaster.predict(held)
    inside = (held["target"].to_numpy() >= lower) & (held["target"].to_numpy() <= upper)
    bins = np.searchsorted(np.array(forecaster.level_edges[1]), pred, side="right")
    for b in range(5):
        assert 0.65 <= inside[bins == b].mean() <= 0.95, (b, inside[bins == b].mean())


def test_training_is_deterministic(demo_features):
    train = demo_features.filter(pl.col("time") < datetime(2024, 2, 1, tzinfo=timezone.utc))
    a, b = train_forecaster(train, num_boost_round=30), train_forecaster(train, num_boost_round=30)
    assert np.array_equal(a.predict(train)[0], b.predict(train)[0], equal_nan=True)


def test_too_few_rows_is_a_clear_error(demo_features):
    with pytest.raises(ValueError, match="need at least 200"):
        train_forecaster(demo_features.head(50))


def _lead(model: float, persistence: float, champion: float | None = None) -> dict:
    return {"model_rmse": model, "persistence_rmse": persistence, "skill_vs_persistence": 1 - model / persistence,
            **({"champion_rmse": champion} if champion is not None else {})}


@pytest.mark.parametrize(
    "by_lead, coverage, promote, reason",
    [
        ({1: _lead(1.0, 2.0), 24: _lead(3.0, 5.0)}, 0.80, True, "no champion yet; beats persistence at 1, 24 h ahead"),
        ({1: _lead(1.0, 2.0), 24: _lead(5.5, 5.0)}, 0.80, False, "24 h ahead: RMSE 5.500 does not beat persistence 5.000"),
        ({1: _lead(1.0, 2.0), 24: _lead(3.0, 5.0)}, 0.60, False, "coverage 0.600 over 1, 24 h is outside"),
        ({1: _lead(1.0, 2.0, 1.005), 24: _lead(3.0, 5.0, 3.0)}, 0.80, False, "of the champion's over 1, 24 h ahead; needs below 99%"),
        ({1: _lead(0.9, 2.0, 1.0), 24: _lead(3.1, 5.0, 3.0)}, 0.80, True, "RMSE is 96.7% of the champion's"),  # worse at 24 h, better on average
        ({1: _lead(0.9, 2.0, 1.0), 24: _lead(2.7, 5.0)}, 0.80, True, "over 1 h ahead"),  # the champion serves only 1 h: compared there
    ],
)
def test_promotion_rule_for_every_lead(by_lead, coverage, promote, reason):
    decision = day_ahead_decision(by_lead, coverage)
    assert decision.promote is promote
    assert reason in decision.reason


def test_the_gate_alone_says_it_did_not_compare_the_champion_and_still_refuses_an_unfair_comparison():
    by_lead = {1: _lead(1.0, 2.0, 0.5)}
    alone = day_ahead_decision(by_lead, 0.8, compare_champion=False)
    assert alone.promote and "the champion is compared when promoting" in alone.reason and "no champion" not in alone.reason
    refused = day_ahead_decision(by_lead, 0.8, compare_champion=False, champion_refused="it trained on them")
    assert not refused.promote and "not compared with the champion: it trained on them" in refused.reason


def test_the_one_hour_lead_is_forecast_by_its_own_booster_and_the_others_by_the_shared_one(demo_features):
    """A model of several leads carries a booster trained on the one-hour rows alone (DIRECT_LEADS):
    one-hour rows take its change, the other leads the shared booster's."""
    from routeaq_assets.core.features import feature_matrix
    from routeaq_assets.core.models import DIRECT_LEADS, forecast_base

    six = demo_features.with_columns(pl.lit(6, pl.Int64).alias("hours_ahead"))  # the same hours, labelled 6 h ahead
    rows = pl.concat([demo_features, six]).filter(pl.col("time") < datetime(2024, 3, 1, tzinfo=timezone.utc))
    forecaster = train_forecaster(rows, num_boost_round=30)
    assert DIRECT_LEADS == (1,) and set(forecaster.direct) == {1}
    x, base = feature_matrix(rows, forecaster.feature_names), forecast_base(rows)
    one = rows["hours_ahead"].to_numpy() == 1
    expected = np.where(one, forecaster.direct[1].predict(x), forecaster.booster.predict(x))
    assert np.allclose(forecaster.point(x, base), np.clip(base + expected, 0, None), equal_nan=True)
    assert not np.allclose(forecaster.direct[1].predict(x[one]), forecaster.booster.predict(x[one]))
    assert train_forecaster(demo_features.filter(pl.col("time") < datetime(2024, 3, 1, tzinfo=timezone.utc)), num_boost_round=30).direct == {}  # one lead: direct already


def test_a_candidates_record_comes_back_from_its_mlflow_run(demo_features, tmp_path):
    """What the promotion decision reads is kept in the candidate's MLflow run and read back by
    model version (leads as ints again); a version that is not registered, or whose run keeps no
    record, is a LookupError naming it."""
    from routeaq_assets.adapters.registry import ForecastRegistry

    forecaster = train_forecaster(demo_features.filter(pl.col("time") < datetime(2024, 2, 1, tzinfo=timezone.utc)), num_boost_round=30)
    registry = ForecastRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=tmp_path / "artifacts")
    record = {"champion_version": None, "champion_refused": None, "interval_coverage": 0.81, "config": {"coverage": 0.8, "coverage_tolerance": 0.05, "margin": 0.01},
              "by_lead": {"1": _lead(1.0, 2.0, 0.5), "24": _lead(3.0, 4.0, float("nan"))}}
    run_id, version = registry.log_candidate("routeaq-pm25", forecaster, params={}, metrics={}, metadata={}, example=demo_features, run_name="t", record=record)
    read = registry.candidate_record("routeaq-pm25", version)
    assert (read["model_name"], read["version"], read["run_id"]) == ("routeaq-pm25", version, run_id)
    assert read["by_lead"][1] == _lead(1.0, 2.0, 0.5) and np.isnan(read["by_lead"][24]["champion_rmse"])
    assert {k: read[k] for k in ("champion_version", "champion_refused", "interval_coverage", "config")} == {k: record[k] for k in ("champion_version", "champion_refused", "interval_coverage", "config")}
    with pytest.raises(LookupError, match="routeaq-pm25 v7 is not registered"):
        registry.candidate_record("routeaq-pm25", "7")
    bare = registry.client.create_run(registry.experiment_id()).info.run_id
    source = registry.client.get_model_version("routeaq-pm25", version).source
    unrecorded = registry.client.create_model_version("routeaq-pm25", source, run_id=bare).version
    with pytest.raises(LookupError, match=f"routeaq-pm25 v{unrecorded} .* keeps no candidate.json"):
        registry.candidate_record("routeaq-pm25", unrecorded)


def test_the_training_rows_thinned_as_each_lead_is_built_are_the_rows_thin_leads_keeps(trained_home):
    """The candidate reads its training rows already thinned (``stored_features(thin_before=)``),
    so a year of 150 sites never holds all 14 leads' rows at once: the same rows as thinning the
    whole frame, and the held-out hours whole."""
    from datetime import timedelta

    from routeaq_assets.core.models import TRAINING_LEADS, thin_leads
    from routeaq_assets.warehouse import Warehouse

    warehouse = Warehouse(path=str(trained_home / "warehouse.duckdb"))
    end = datetime(2025, 8, 1, 12, tzinfo=timezone.utc)
    start, holdout = end - timedelta(days=10), end - timedelta(days=2)
    whole = warehouse.stored_features("no2", start, end, TRAINING_LEADS)
    thinned = warehouse.stored_features("no2", start, end, TRAINING_LEADS, thin_before=holdout)
    expected = pl.concat([thin_leads(whole.filter(pl.col("time") < holdout)), whole.filter(pl.col("time") >= holdout)]).sort("time", "site_id", "hours_ahead")
    assert thinned.equals(expected)
    assert thinned.filter(pl.col("time") < holdout).height < whole.filter(pl.col("time") < holdout).height * 0.6  # 3 whole leads and 5 in 14 of the other 11 leads' rows: about half
