"""Forecast scores, always reported beside the persistence and same-hour-yesterday baselines."""

from __future__ import annotations

import math

import numpy as np
import polars as pl


def point_scores(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    error = np.asarray(predicted, float) - np.asarray(observed, float)
    if error.size == 0:
        raise ValueError("no hours to score: every held-out hour lacks an observation or a baseline")
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "bias": float(np.mean(error)),
    }


def interval_scores(observed: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> dict[str, float]:
    observed = np.asarray(observed, float)
    inside = (observed >= lower) & (observed <= upper)
    return {"coverage": float(np.mean(inside)), "width": float(np.mean(np.asarray(upper) - np.asarray(lower)))}


def scorable(frame: pl.DataFrame) -> pl.DataFrame:
    """Held-out rows on which model and both baselines can be scored: the same hours for all."""
    return frame.filter(
        pl.col("target").is_not_null() & pl.col("target_lag_1").is_not_null() & pl.col("target_lag_24").is_not_null()
    )


def evaluate(frame: pl.DataFrame) -> dict[str, float]:
    """Scores of ``pred`` (and ``lower``/``upper`` if present) against the baselines.

    ``frame`` holds ``target``, ``pred``, ``target_lag_1`` (persistence) and ``target_lag_24``
    (same hour yesterday) on already-scorable rows.
    """
    y = frame["target"].to_numpy()
    result: dict[str, float] = {"hours": float(frame.height)}
    for name, column in (("model", "pred"), ("persistence", "target_lag_1"), ("yesterday", "target_lag_24")):
        for metric, value in point_scores(y, frame[column].to_numpy()).items():
            result[f"{name}_{metric}"] = value
    result["skill_vs_persistence"] = 1.0 - result["model_rmse"] / result["persistence_rmse"]
    result["skill_vs_yesterday"] = 1.0 - result["model_rmse"] / result["yesterday_rmse"]
    if "lower" in frame.columns and "upper" in frame.columns:
        scores = interval_scores(y, frame["lower"].to_numpy(), frame["upper"].to_numpy())
        result.update({f"interval_{k}": v for k, v in scores.items()})
    return {k: (round(v, 6) if math.isfinite(v) else v) for k, v in result.items()}
