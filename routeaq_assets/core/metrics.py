"""Forecast scores, always reported beside the persistence and same-hour-yesterday baselines.

``scores`` is the one computation of forecast scores: training's held-out scores and the backtests
(``evaluate``) and monitoring's rolling scores (``core.scoring.rolling_scores``) all call it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import polars as pl

# What is scored, by name: the model's forecast and the two baselines, as the feature rows hold them.
FORECASTS = {"model": "pred", "persistence": "target_lag_1", "yesterday": "target_lag_24"}


def scores(
    frame: pl.DataFrame,
    *,
    observed: str = "target",
    forecasts: Mapping[str, str] = FORECASTS,
    interval: tuple[str, str] = ("lower", "upper"),
    by: Sequence[str] = (),
) -> pl.DataFrame:
    """One row of scores per group of ``by`` (one row for the whole frame without it), on every
    row given: ``hours``; for each ``name`` of ``forecasts`` (column of its forecast)
    ``{name}_rmse``, ``{name}_mae`` and ``{name}_bias`` (forecast - observed); for each forecast but
    the model, ``skill_vs_{name}`` (1 - model RMSE / its RMSE); and, where ``interval``'s columns
    are present, ``interval_coverage`` (share of the rows with an interval whose observation lies
    inside it) and ``interval_width`` (mean upper - lower)."""
    truth = pl.col(observed)
    columns = [pl.len().alias("hours")]
    for name, column in forecasts.items():
        error = pl.col(column) - truth
        columns += [(error**2).mean().sqrt().alias(f"{name}_rmse"), error.abs().mean().alias(f"{name}_mae"), error.mean().alias(f"{name}_bias")]
    lower, upper = interval
    has_interval = lower in frame.columns and upper in frame.columns
    if has_interval:
        inside = (truth >= pl.col(lower)) & (truth <= pl.col(upper))
        columns += [
            inside.filter(pl.col(lower).is_not_null() & pl.col(upper).is_not_null()).mean().alias("interval_coverage"),
            (pl.col(upper) - pl.col(lower)).mean().alias("interval_width"),
        ]
    table = frame.group_by(*by, maintain_order=True).agg(columns) if by else frame.select(columns)
    skills = [(1.0 - pl.col("model_rmse") / pl.col(f"{name}_rmse")).alias(f"skill_vs_{name}") for name in forecasts if name != "model"]
    order = [*by, "hours", *(f"{n}_{m}" for n in forecasts for m in ("rmse", "mae", "bias")), *(s.meta.output_name() for s in skills)]
    return table.with_columns(skills).select(*order, *(["interval_coverage", "interval_width"] if has_interval else []))


def scorable(frame: pl.DataFrame) -> pl.DataFrame:
    """Held-out rows on which model and both baselines can be scored: the same hours for all."""
    return frame.filter(
        pl.col("target").is_not_null() & pl.col("target_lag_1").is_not_null() & pl.col("target_lag_24").is_not_null()
    )


def evaluate(frame: pl.DataFrame) -> dict[str, float]:
    """``scores`` of ``pred`` (and ``lower``/``upper`` if present) against the baselines, as the
    figures training logs to MLflow and the backtests tabulate: floats rounded to 6 places.

    ``frame`` holds ``target``, ``pred``, ``target_lag_1`` (persistence) and ``target_lag_24``
    (same hour yesterday) on already-scorable rows.
    """
    if frame.is_empty():
        raise ValueError("no hours to score: every held-out hour lacks an observation or a baseline")
    row = scores(frame).row(0, named=True)
    result = {k: float("nan") if v is None else float(v) for k, v in row.items()}
    return {k: (round(v, 6) if math.isfinite(v) else v) for k, v in result.items()}
