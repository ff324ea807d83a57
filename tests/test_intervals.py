"""Interval recalibration from scored forecasts (core.intervals): the factor, its fallbacks, no
feedback through served factors, no look-ahead in backtests, and coverage that comes back after
the errors grow."""

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from routeaq_assets.core.intervals import ALL_SITES, conformity, factors_for, interval_factors, recalibrated, widen

START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def scored(sites: dict[str, int], sigma: float, served_factor: float = 1.0, seed: int = 0, pollutant: str = "no2") -> pl.DataFrame:
    """Forecasts of 50 with a model interval of +/- 10, observations 50 + N(0, sigma), served with
    the model's interval stretched by ``served_factor``."""
    rng = np.random.default_rng(seed)
    frames = []
    for site, n in sites.items():
        observed = 50.0 + rng.normal(0.0, sigma, n)
        frames.append(pl.DataFrame({
            "site_id": site, "pollutant": pollutant, "hours_ahead": 1,
            "time": [START + timedelta(hours=k) for k in range(n)],
            "pred": 50.0, "lower": 50.0 - 10.0 * served_factor, "upper": 50.0 + 10.0 * served_factor,
            "observed": observed, "interval_factor": served_factor,
        }))
    return pl.concat(frames)


def site_factors(factors: pl.DataFrame) -> dict[str, float]:
    """Site and pooled factors by site_id (``ALL_SITES`` for the pooled one); level rows left out."""
    rows = factors.filter(pl.col("level_low").is_null())
    return dict(zip(rows["site_id"], rows["factor"]))


def inside(frame: pl.DataFrame, factor: float) -> float:
    pred = frame["pred"].to_numpy()
    lower, upper = widen(pred, pred - 10.0, factor), widen(pred, pred + 10.0, factor)
    observed = frame["observed"].to_numpy()
    return float(((observed >= lower) & (observed <= upper)).mean())


def test_the_factor_stretches_the_interval_to_cover_its_share_of_recent_errors():
    # errors with sigma 15.6: the model's +/- 10 covers about 48 %; +/- 20 covers 80 %. Served at
    # +/- 20 already, the intervals covered about 80 %: the factor covers that share again.
    frame = scored({"A": 600, "B": 600}, sigma=15.6, served_factor=2.0)
    factors = interval_factors(frame, START + timedelta(days=25))  # the window holds all 600 hours
    by_site = site_factors(factors)
    assert set(by_site) == {ALL_SITES, "A", "B"}
    assert by_site[ALL_SITES] == pytest.approx(2.0, abs=0.2)
    assert inside(frame, 1.0) < 0.55
    assert inside(frame, by_site[ALL_SITES]) == pytest.approx(0.8 + (0.8 - inside(frame, 2.0)), abs=0.002)
    assert inside(frame, by_site[ALL_SITES]) == pytest.approx(0.8, abs=0.03)


def test_the_share_covered_rises_by_what_the_served_intervals_fell_short_of_it():
    """The intervals served over the window covered 70 %, 78 %, 80 % or 90 % of what was observed:
    the factors are fitted to cover 80 % plus the shortfall (85 %, the most, and 82 %), 80 %, or
    75 % (the least). The served coverage is read from the bounds as served, not the model's."""
    from scipy.stats import norm

    sigma = 15.6
    for served_coverage, level in ((0.70, 0.85), (0.78, None), (0.80, None), (0.90, 0.75)):
        served_factor = sigma * norm.ppf((1 + served_coverage) / 2) / 10.0  # the model's +/- 10 stretched to cover that share
        frame = scored({"A": 28 * 24}, sigma=sigma, served_factor=served_factor, seed=7)  # the window: 28 days
        covered = inside(frame, served_factor)
        assert covered == pytest.approx(served_coverage, abs=0.04)
        pooled = interval_factors(frame, START + timedelta(days=28)).filter((pl.col("site_id") == ALL_SITES) & pl.col("level_low").is_null())
        expected = level if level is not None else 0.8 + (0.8 - covered)
        assert pooled["level"].item() == pytest.approx(expected, abs=1e-9)
        # the factor is the level's quantile of the scores against the model's own interval
        scores = np.sort(np.abs(frame["observed"].to_numpy() - 50.0) / 10.0)
        assert pooled["factor"].item() == pytest.approx(scores[int(np.ceil(expected * (len(scores) - 1)))], rel=1e-9)


def test_a_site_with_few_scored_forecasts_takes_the_pooled_factor_and_none_means_one():
    frame = pl.concat([scored({"A": 600}, sigma=15.6), scored({"B": 40}, sigma=40.0, seed=1)])
    factors = interval_factors(frame, START + timedelta(days=30))
    assert "B" not in factors["site_id"].to_list()  # 40 forecasts: too few for a factor of its own
    keys = pl.DataFrame({"pollutant": ["no2", "no2", "o3"], "hours_ahead": [1, 1, 1], "site_id": ["A", "B", "A"]})
    own_a, pooled, nothing = factors_for(factors, keys)
    assert own_a == site_factors(factors)["A"]
    assert pooled == site_factors(factors)[ALL_SITES]
    assert nothing == 1.0  # no scored o3 forecast: the model's interval as calibrated


def test_factors_do_not_feed_on_themselves():
    """The same errors served with the interval already stretched twice: the factor is still about
    2, the stretch of the model's interval. Read against the served interval alone, it would say
    about 1 and the next hour would undercover again."""
    served = interval_factors(scored({"A": 600}, sigma=15.6, served_factor=2.0), START + timedelta(days=30))
    assert site_factors(served)["A"] == pytest.approx(2.0, abs=0.15)


def test_only_scored_hours_before_as_of_and_inside_the_window_count():
    frame = scored({"A": 2000}, sigma=15.6)
    as_of = START + timedelta(hours=1000)
    factors = interval_factors(frame, as_of, window_days=28)
    counted = frame.filter((pl.col("time") < as_of) & (pl.col("time") >= as_of - timedelta(days=28))).height
    assert factors.filter(pl.col("site_id") == "A")["forecasts"].item() == counted == 672
    unobserved = frame.with_columns(pl.when(pl.col("time") >= as_of - timedelta(hours=100)).then(None).otherwise(pl.col("observed")).alias("observed"))
    assert interval_factors(unobserved, as_of, window_days=28).filter(pl.col("site_id") == "A")["forecasts"].item() == 572
    # a forecast that could not be made (no recent observation: pred null, or NaN) is not scored
    unforecast = frame.with_columns(
        pl.when(pl.col("time") == as_of - timedelta(hours=1)).then(None).when(pl.col("time") == as_of - timedelta(hours=2)).then(float("nan"))
        .otherwise(pl.col("pred")).alias("pred")
    )
    factors = interval_factors(unforecast, as_of, window_days=28).filter(pl.col("site_id") == "A")
    assert factors["forecasts"].item() == 670 and np.isfinite(factors["factor"].item())


def test_conformity_is_in_half_widths_on_each_side():
    score = conformity(np.array([10.0, 10.0, 10.0]), np.array([8.0, 8.0, 8.0]), np.array([14.0, 14.0, 14.0]), np.array([6.0, 12.0, 22.0]))
    assert score.tolist() == [2.0, 0.5, 3.0]


def backtest_predictions(days: int = 120, change_day: int = 60) -> pl.DataFrame:
    """Hourly forecasts at two sites of a model whose interval (+/- 10) covers 80 % of the errors
    of the first ``change_day`` days (sigma 7.8); then the errors double."""
    rng = np.random.default_rng(5)
    hours = days * 24
    frames = []
    for site in ("A", "B"):
        sigma = np.where(np.arange(hours) < change_day * 24, 7.8, 15.6)
        pred = 50.0 + rng.normal(0, 5, hours)
        frames.append(pl.DataFrame({
            "site_id": site, "pollutant": "no2", "time": [START + timedelta(hours=k) for k in range(hours)],
            "pred": pred, "lower": pred - 10.0, "upper": pred + 10.0, "target": pred + rng.normal(0, 1, hours) * sigma,
        }))
    return pl.concat(frames)


def coverage(frame: pl.DataFrame, lower: str = "lower", upper: str = "upper") -> float:
    return frame.select(((pl.col("target") >= pl.col(lower)) & (pl.col("target") <= pl.col(upper))).mean()).item()


def test_a_recalibrated_backtest_recovers_coverage_after_the_errors_double():
    result = recalibrated(backtest_predictions(), hours_ahead=6)
    before = result.filter(pl.col("time") < START + timedelta(days=60))
    settled = result.filter(pl.col("time") >= START + timedelta(days=60 + 28))
    assert coverage(before) == pytest.approx(0.8, abs=0.02)
    assert coverage(settled, "model_lower", "model_upper") < 0.6  # the model's own interval after the change
    assert coverage(settled) == pytest.approx(0.8, abs=0.02)  # what is served, recalibrated
    assert settled["interval_factor"].mean() == pytest.approx(2.0, abs=0.15)


def test_a_recalibrated_backtest_never_reads_an_hour_not_yet_observed_at_the_forecasts_origin():
    predictions = backtest_predictions()
    day = START + timedelta(days=70)
    changed = predictions.with_columns(
        pl.when(pl.col("time") >= day - timedelta(hours=6)).then(pl.col("target") * 5).otherwise(pl.col("target")).alias("target")
    )
    a, b = (recalibrated(p, hours_ahead=6).filter(pl.col("time") >= day).filter(pl.col("time") < day + timedelta(days=1)) for p in (predictions, changed))
    assert a["interval_factor"].to_list() == b["interval_factor"].to_list()
    later = (recalibrated(p, hours_ahead=6).filter(pl.col("time") >= day + timedelta(days=1)) for p in (predictions, changed))
    assert next(later)["interval_factor"].to_list() != next(later)["interval_factor"].to_list()


def test_the_level_adjustment_holds_coverage_in_every_quintile_of_the_predicted_level():
    """Errors that grow with the level (a PM episode misses by more than a clean day): the site's
    factor alone covers 80 % on average but not at the top; with each quintile's adjustment, fresh
    forecasts from the same law are covered about 80 % in every quintile."""
    rng = np.random.default_rng(4)

    def forecasts(n: int, start: datetime, site: str = "A") -> pl.DataFrame:
        pred = rng.uniform(5.0, 100.0, n)
        return pl.DataFrame({
            "site_id": site, "pollutant": "pm25", "hours_ahead": 6, "time": [start + timedelta(hours=k) for k in range(n)],
            "pred": pred, "lower": pred - 10.0, "upper": pred + 10.0, "observed": pred + rng.normal(0.0, 0.15 * pred), "interval_factor": 1.0,
        })

    past, fresh = pl.concat([forecasts(672, START, site) for site in "ABC"]), forecasts(4000, START + timedelta(days=28))
    # served with a factor that covered 80 % of them as a whole (not in each quintile)
    served = float(np.quantile(np.abs(past["observed"] - past["pred"]).to_numpy() / 10.0, 0.8))
    past = past.with_columns(lower=pl.col("pred") - 10.0 * served, upper=pl.col("pred") + 10.0 * served, interval_factor=pl.lit(served))
    factors = interval_factors(past, START + timedelta(days=28))
    levels = factors.filter(pl.col("level_low").is_not_null()).sort("level_low")
    assert levels.height == 5 and levels["level_low"][0] == -np.inf and levels["level_high"][-1] == np.inf
    assert levels["factor"][-1] > 1.3 > 0.8 > levels["factor"][0]  # the top quintile stretched, the bottom shrunk

    def coverage_by_quintile(factor: np.ndarray) -> list[float]:
        pred, observed = fresh["pred"].to_numpy(), fresh["observed"].to_numpy()
        covered = np.abs(observed - pred) <= 10.0 * factor
        quintile = np.searchsorted(np.quantile(pred, [0.2, 0.4, 0.6, 0.8]), pred, side="right")
        return [float(covered[quintile == q].mean()) for q in range(5)]

    site_only = coverage_by_quintile(factors_for(factors, fresh.select("pollutant", "hours_ahead", "site_id")))
    with_levels = coverage_by_quintile(factors_for(factors, fresh.select("pollutant", "hours_ahead", "site_id", "pred")))
    assert site_only[-1] < 0.7 and site_only[0] > 0.9
    # each bin's factor rests on about 400 scored forecasts: within 8 points of 80 % (sampling),
    # against 15 or more without
    assert max(abs(c - 0.8) for c in with_levels) <= 0.08 < 0.15 <= max(abs(c - 0.8) for c in site_only), (with_levels, site_only)


def test_errors_that_keep_growing_are_covered_closer_to_the_share_asked_for_than_by_the_window_alone(monkeypatch):
    """Errors whose spread grows every day: a factor from the last 28 days of scores is always a
    step behind, and the intervals served fall short. The served step (the level raised by that
    shortfall) makes up for it; with it switched off (gain 0) the served interval covers several
    points less."""
    import routeaq_assets.core.intervals as intervals

    rng = np.random.default_rng(5)
    hours, frames = 120 * 24, []
    for site in ("A", "B"):
        pred = 50.0 + rng.normal(0, 5, hours)
        frames.append(pl.DataFrame({
            "site_id": site, "pollutant": "no2", "time": [START + timedelta(hours=k) for k in range(hours)],
            "pred": pred, "lower": pred - 10.0, "upper": pred + 10.0, "target": pred + rng.normal(0, 1, hours) * np.linspace(6.0, 24.0, hours),
        }))
    predictions = pl.concat(frames)

    def served_coverage() -> float:
        return coverage(recalibrated(predictions, hours_ahead=24).filter(pl.col("time") >= START + timedelta(days=40)))

    with_level = served_coverage()
    monkeypatch.setattr(intervals, "LEVEL_GAIN", 0.0)
    window_alone = served_coverage()
    assert window_alone < 0.75 and with_level >= window_alone + 0.03, (with_level, window_alone)
    assert abs(with_level - 0.8) < abs(window_alone - 0.8)


def test_a_lead_without_scores_of_its_own_takes_the_factors_of_the_nearest_scored_lead():
    """The monitoring loop scores the gate leads (1, 6, 12, 24, 48) and what was served; the
    service forecasts every hour to 48 ahead. Lead 17 takes lead 12's factors, 18 (a tie) lead 24's,
    and a pollutant without factors stays at 1."""
    from routeaq_assets.core.intervals import FACTORS, scored_lead

    factors = pl.DataFrame(
        {"pollutant": "no2", "hours_ahead": [1, 6, 12, 24, 48], "site_id": ALL_SITES, "factor": [1.1, 1.2, 1.3, 1.4, 1.5],
         "forecasts": 500, "as_of": START, "level": 0.8, "level_low": None, "level_high": None},
        schema=FACTORS,
    )
    keys = pl.DataFrame({"pollutant": ["no2"] * 6 + ["o3"], "hours_ahead": [1, 2, 17, 18, 36, 47, 17], "site_id": "A"})
    assert scored_lead(factors, keys).tolist() == [1, 1, 12, 24, 48, 48, 17]
    assert factors_for(factors, keys).tolist() == pytest.approx([1.1, 1.1, 1.3, 1.4, 1.5, 1.5, 1.0])
