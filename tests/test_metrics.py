"""core.metrics.scores: the one computation of forecast scores, for training and the backtests
(``evaluate``, whose names MLflow and the backtest tables keep) and for monitoring
(``core.scoring.rolling_scores``, whose names the performance records, metadata and Prometheus keep)."""

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from routeaq_assets.core import scoring
from routeaq_assets.core.metrics import evaluate, scores

START = datetime(2024, 3, 1, tzinfo=timezone.utc)


def test_scores_of_a_small_frame_by_hand():
    frame = pl.DataFrame({"target": [1.0, 3.0], "pred": [2.0, 2.0], "target_lag_1": [1.0, 1.0], "target_lag_24": [3.0, 5.0],
                          "lower": [0.0, 2.5], "upper": [1.5, 2.6]})
    figures = evaluate(frame)
    assert (figures["model_rmse"], figures["model_mae"], figures["model_bias"]) == (1.0, 1.0, 0.0)
    assert figures["persistence_rmse"] == pytest.approx(2 ** 0.5) and figures["persistence_bias"] == -1.0
    assert figures["skill_vs_persistence"] == pytest.approx(1 - 1 / 2 ** 0.5, abs=1e-6)
    assert (figures["yesterday_rmse"], figures["skill_vs_yesterday"]) == (2.0, 0.5)  # yesterday's errors are 2 and 2
    assert (figures["hours"], figures["interval_coverage"], figures["interval_width"]) == (2.0, 0.5, 0.8)
    with pytest.raises(ValueError, match="no hours to score"):
        evaluate(frame.head(0))


def test_a_row_without_an_interval_leaves_the_coverage_to_the_rows_with_one():
    frame = pl.DataFrame({"observed": [1.0, 2.0, 3.0], "pred": [1.0, 2.0, 3.0], "lower": [0.0, None, 5.0], "upper": [2.0, None, 6.0]})
    table = scores(frame, observed="observed", forecasts={"model": "pred"})
    assert table["interval_coverage"].item() == 0.5


def test_training_backtests_and_monitoring_score_the_same_hours_alike():
    """The held-out figures logged to MLflow and the rolling scores monitoring reports are the
    same numbers under their own names, because both come from ``scores``."""
    rng = np.random.default_rng(7)
    n = 300
    observed = rng.gamma(4.0, 5.0, n)
    pred = observed + rng.normal(0.5, 3.0, n)
    persistence = observed + rng.normal(0.0, 4.0, n)
    times = [START + timedelta(hours=k) for k in range(n)]
    scored = pl.DataFrame({
        "site_id": "MY1", "time": times, "pollutant": "no2", "hours_ahead": 1, "model_name": "routeaq-no2", "model_version": "3",
        "source": scoring.LOGGED, "pred": pred, "lower": pred - 4.0, "upper": pred + 4.0, "interval_factor": 1.0,
        "observed": observed, "persistence": persistence,
    })
    rolling = scoring.rolling_scores(scored).row(0, named=True)
    held_out = evaluate(scored.select(target="observed", pred="pred", target_lag_1="persistence", target_lag_24="persistence",
                                      lower="lower", upper="upper"))
    assert list(scoring.rolling_scores(scored).columns) == [
        "pollutant", "hours_ahead", "hours", "rmse", "mae", "bias", "coverage", "persistence_rmse", "skill"
    ]  # the names the performance records, metadata and Prometheus keep
    for rolling_name, held_out_name in [
        ("hours", "hours"), ("rmse", "model_rmse"), ("mae", "model_mae"), ("bias", "model_bias"), ("coverage", "interval_coverage"),
        ("persistence_rmse", "persistence_rmse"), ("skill", "skill_vs_persistence"),
    ]:
        assert rolling[rolling_name] == pytest.approx(held_out[held_out_name], abs=1e-6), rolling_name
    error = pred - observed
    assert rolling["rmse"] == pytest.approx(float(np.sqrt(np.mean(error**2))))
