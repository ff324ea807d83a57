"""Interval recalibration from scored forecasts: the interval follows the errors the champion is
making now, not only those of its calibration slice.

A model's interval is calibrated once, on residuals from the weeks before its training ended
(``core.models``). When the season turns (NO2 in autumn, when errors double), an interval
calibrated on summer residuals covers far less than it claims. The monitoring loop scores every
forecast against what happened; from those scores this module computes, per pollutant, hours
ahead and site, the factor by which the model's own interval must be stretched (or shrunk) to
have covered ``coverage`` of the last ``WINDOW_DAYS`` of scored forecasts: a split-conformal
step on the model's interval (its conformity score is how many interval half-widths away the
observation fell). The service multiplies the interval's offsets by the factor and logs it; the
backtests apply the same factors as of each day, so they measure what is served.

A scored forecast made with factor ``c`` had offsets ``c`` times the model's, so its score against
the model's own interval is ``c`` times its score against the served one: factors never feed on
themselves.

On top of the site's factor, a level adjustment per quintile of the predicted level (pooled over
sites, a Mondrian step on the served side): high forecasts of PM miss by more than low ones, and
the model's own level bins, fitted on its calibration slice, under-covered the top quintile by
10-17 points on the real files (bench/RESULTS.md). A level row has ``site_id`` ``ALL_SITES`` and
the bin's bounds ``level_low <= pred < level_high``; the served factor is the site's factor times
the adjustment of the forecast's level.

The share of the window the factors cover (``level``) answers for what the served intervals did:
where the intervals served over the window covered less than ``coverage`` of what was then
observed, the level is raised by the shortfall (``LEVEL_GAIN`` of it, within ``LEVEL_STEP``), and
lowered where they covered more (a windowed adaptive conformal step). A factor from the last 28
days is a step behind errors that keep changing (autumn's NO2, a PM episode), and an interval
whose width varies with them covers less than the share it was fitted to; the served coverage
measures both, on every forecast of the window. On the real files and AQEval the pooled coverage
at 6-48 h rose from 77.8-80.0 % (the earlier step: factors from the window's older three
quarters tried on its newest quarter) to 78.5-80.2 % (bench/RESULTS.md, "the served step").
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

WINDOW_DAYS = 28  # scored forecasts the factor is computed from: long enough for 100s per site
MIN_FORECASTS = 100  # fewer scored forecasts at a site: the pooled factor of its pollutant and horizon
ALL_SITES = ""  # the site_id of the pooled factor
FACTORS = {
    "pollutant": pl.Utf8,
    "hours_ahead": pl.Int64,
    "site_id": pl.Utf8,
    "factor": pl.Float64,
    "forecasts": pl.Int64,
    "as_of": pl.Datetime("us", "UTC"),
    "level": pl.Float64,  # the share of the window's forecasts the factor covers (interval_factors)
    "level_low": pl.Float64,  # a level row's bin (null on site and pooled rows)
    "level_high": pl.Float64,
}
LEVEL_BINS = 5
# Recalibration never shrinks an interval below a fifth nor stretches it beyond five times the
# model's: a bound against a window of scores that is broken (e.g. an outage of observations).
FACTOR_BOUNDS = (0.2, 5.0)
LEVEL_GAIN = 1.0  # the level rises by this share of what the served intervals fell short of coverage
LEVEL_STEP = 0.05  # the level moves at most this far from the coverage asked for
MAX_LEVEL = 0.95


def conformity(pred: np.ndarray, lower: np.ndarray, upper: np.ndarray, observed: np.ndarray, factor: np.ndarray | float = 1.0) -> np.ndarray:
    """How far outside the model's own interval each observation fell, in half-widths: <= 1 inside,
    2 = twice as far from the forecast as the bound on its side. ``lower``/``upper`` are the
    interval that was served with ``factor``."""
    below = (pred - observed) / np.maximum(pred - lower, 1e-9)
    above = (observed - pred) / np.maximum(upper - pred, 1e-9)
    return np.maximum(below, above) * factor


def empty_factors() -> pl.DataFrame:
    return pl.DataFrame(schema=FACTORS)


def interval_factors(
    scored: pl.DataFrame,
    as_of: datetime,
    *,
    coverage: float = 0.8,
    window_days: int = WINDOW_DAYS,
    min_forecasts: int = MIN_FORECASTS,
) -> pl.DataFrame:
    """Factors (``FACTORS``) from the scored forecasts for hours in the ``window_days`` before
    ``as_of``: one per pollutant, hours ahead and site with ``min_forecasts`` or more, and a pooled
    one per pollutant and hours ahead (``site_id`` ``ALL_SITES``) when all its sites together have
    that many. ``scored`` has site_id, time, pollutant, hours_ahead, pred, lower, upper, observed and
    optionally interval_factor (the factor each was served with; 1 when absent).

    Each pollutant and horizon's factors cover the share ``level`` of the window, not ``coverage``
    itself: ``coverage`` plus what the intervals served over the window fell short of it (their
    bounds as served: ``lower``/``upper`` of the scored forecasts), within ``LEVEL_STEP``."""
    scorable = pl.all_horizontal(pl.col(c).is_not_null() & pl.col(c).is_not_nan() for c in ("pred", "lower", "upper", "observed"))
    window = scored.filter((pl.col("time") < as_of) & (pl.col("time") >= as_of - timedelta(days=window_days)) & scorable)
    if window.is_empty():
        return empty_factors()
    served = window["interval_factor"].fill_null(1.0).to_numpy() if "interval_factor" in window.columns else 1.0
    window = window.with_columns(
        score=pl.Series(conformity(*(window[c].to_numpy() for c in ("pred", "lower", "upper", "observed")), served)),
        served_covered=((pl.col("observed") >= pl.col("lower")) & (pl.col("observed") <= pl.col("upper"))).cast(pl.Float64),
    )
    levels = {
        (pollutant, hours_ahead): served_level(rows["served_covered"].mean(), coverage)
        for (pollutant, hours_ahead), rows in window.group_by("pollutant", "hours_ahead")
        if rows.height >= min_forecasts
    }
    factors = _factors_at(window, levels, coverage, min_forecasts)
    return factors.with_columns(pl.lit(as_of).cast(FACTORS["as_of"]).alias("as_of")).select(
        [pl.col(c).cast(t) for c, t in FACTORS.items()]
    ).sort("pollutant", "hours_ahead", "site_id", "level_low", nulls_last=False)


def served_level(served_coverage: float, coverage: float) -> float:
    """The share the factors are fitted to cover: ``coverage`` raised by ``LEVEL_GAIN`` of what the
    served intervals fell short of it (lowered by what they covered beyond it), within
    ``LEVEL_STEP`` and never above ``MAX_LEVEL``."""
    level = coverage + LEVEL_GAIN * (coverage - served_coverage)
    return float(np.clip(level, coverage - LEVEL_STEP, min(coverage + LEVEL_STEP, MAX_LEVEL)))


def _factors_at(window: pl.DataFrame, levels: dict[tuple[str, int], float], coverage: float, min_forecasts: int) -> pl.DataFrame:
    """The site, pooled and level factors of ``window`` (with its ``score``): each pollutant and
    horizon's the ``levels`` quantile of its scores (``coverage`` where it has none)."""
    if window.is_empty():
        return empty_factors()
    low_bound, high_bound = FACTOR_BOUNDS
    by = ["pollutant", "hours_ahead"]
    level_of = pl.DataFrame(
        [(p, h, q) for (p, h), q in levels.items()], schema={"pollutant": pl.Utf8, "hours_ahead": pl.Int64, "level": pl.Float64}, orient="row"
    )
    window = window.with_columns(pl.col("pollutant").cast(pl.Utf8), pl.col("hours_ahead").cast(pl.Int64)).join(level_of, on=by, how="left").with_columns(
        pl.col("level").fill_null(coverage)
    )

    def factor(scores: str) -> pl.Expr:  # the level quantile of the group's scores ("higher", as a conformal quantile is taken)
        at = (pl.col("level").first() * (pl.len() - 1)).ceil().cast(pl.UInt32)
        return pl.col(scores).sort().gather(at).first().clip(low_bound, high_bound).alias("factor")

    summary = [factor("score"), pl.len().alias("forecasts"), pl.col("level").first()]
    per_site = window.group_by(*by, "site_id").agg(*summary)
    pooled = window.group_by(*by).agg(pl.lit(ALL_SITES).alias("site_id"), *summary)
    factors = pl.concat([pooled, per_site.select(pooled.columns)], how="vertical_relaxed").filter(pl.col("forecasts") >= min_forecasts)
    factors = factors.with_columns(pl.lit(None, pl.Float64).alias("level_low"), pl.lit(None, pl.Float64).alias("level_high"))
    # Each forecast's score against the interval its site's factor gives, then its level bin's adjustment.
    site_factor = factors_for(factors, window.select(*by, "site_id"))
    window = window.with_columns(pl.Series("site_score", window["score"].to_numpy() / site_factor))
    bins = []
    for (pollutant, hours_ahead), rows in window.group_by(*by):
        if rows.height < min_forecasts * LEVEL_BINS:
            continue
        edges = [-np.inf, *np.unique(np.quantile(rows["pred"].to_numpy(), np.arange(1, LEVEL_BINS) / LEVEL_BINS)), np.inf]
        for low, high in zip(edges[:-1], edges[1:]):
            cell = rows.filter((pl.col("pred") >= low) & (pl.col("pred") < high))
            if cell.height >= min_forecasts:
                bins.append(cell.group_by(*by).agg(pl.lit(ALL_SITES).alias("site_id"), factor("site_score"), pl.len().alias("forecasts"), pl.col("level").first(),
                                                   pl.lit(float(low)).alias("level_low"), pl.lit(float(high)).alias("level_high")))
    if bins:
        factors = pl.concat([factors, *(b.select(factors.columns) for b in bins)], how="vertical_relaxed")
    return factors


def factors_for(factors: pl.DataFrame, keys: pl.DataFrame) -> np.ndarray:
    """The factor for each row of ``keys`` (pollutant, hours_ahead, site_id, and ``pred`` for the
    level adjustment): its site's own, else its pollutant and horizon's pooled one, else 1 (the
    model's interval as calibrated); times the adjustment of the bin ``pred`` falls in, where
    ``factors`` has level rows (factors published before them have none: no adjustment). A lead
    with no factor of its own takes those of the nearest lead its pollutant has (``scored_lead``)."""
    by = ["pollutant", "hours_ahead"]
    keys = keys.with_columns(pl.Series("hours_ahead", scored_lead(factors, keys)))
    is_level = pl.col("level_low").is_not_null() if "level_low" in factors.columns else pl.lit(False)
    own = factors.filter((pl.col("site_id") != ALL_SITES) & ~is_level).select(*by, "site_id", pl.col("factor").alias("own"))
    pooled = factors.filter((pl.col("site_id") == ALL_SITES) & ~is_level).select(*by, pl.col("factor").alias("pooled"))
    joined = keys.select(pl.col("pollutant").cast(pl.Utf8), pl.col("hours_ahead").cast(pl.Int64), pl.col("site_id").cast(pl.Utf8)).join(
        own, on=[*by, "site_id"], how="left", maintain_order="left"
    ).join(pooled, on=by, how="left", maintain_order="left")
    site = joined.select(pl.coalesce("own", "pooled", pl.lit(1.0)))["own"].to_numpy().astype(float)
    if "pred" not in keys.columns or "level_low" not in factors.columns:
        return site
    levels = factors.filter(is_level)
    if levels.is_empty():
        return site
    adjustment = np.ones(keys.height)
    pollutant, hours, pred = keys["pollutant"].cast(pl.Utf8).to_numpy(), keys["hours_ahead"].cast(pl.Int64).to_numpy(), keys["pred"].to_numpy()
    for row in levels.iter_rows(named=True):
        inside = (pollutant == row["pollutant"]) & (hours == row["hours_ahead"]) & (pred >= row["level_low"]) & (pred < row["level_high"])
        adjustment[inside] = row["factor"]
    return site * adjustment


def scored_lead(factors: pl.DataFrame, keys: pl.DataFrame) -> np.ndarray:
    """Each key's ``hours_ahead``, or where ``factors`` has none for its pollutant at that lead,
    the nearest lead it has (the longer on a tie: its interval is the wider). The service forecasts
    every hour to 48 ahead; the monitoring loop scores the gate leads and the hours that were
    served, so most leads' factors come from a neighbour's scores."""
    lead = keys["hours_ahead"].cast(pl.Int64).to_numpy().copy()
    pollutant = keys["pollutant"].cast(pl.Utf8).to_numpy()
    for name in np.unique(pollutant):
        have = np.sort(factors.filter(pl.col("pollutant") == name)["hours_ahead"].unique().to_numpy())
        if have.size:
            rows = pollutant == name
            h = lead[rows][:, None]
            lead[rows] = have[np.argmin(np.abs(h - have[None, :]) * 2 - (have[None, :] > h), axis=1)]
    return lead


def recalibrated(predictions: pl.DataFrame, hours_ahead: int, *, coverage: float = 0.8, window_days: int = WINDOW_DAYS) -> pl.DataFrame:
    """Backtest predictions (site_id, time, pollutant, target, pred, lower, upper from the model)
    with the interval the service would have served: each UTC day's forecasts stretched by the
    factors computed from the forecasts already scored at the day's first origin (its first hour
    minus ``hours_ahead``), as they were served (the earlier days' recalibrated intervals, whose
    coverage sets the level). Adds ``interval_factor``; the model's own bounds are kept as
    ``model_lower``/``model_upper``."""
    frame = predictions.sort("time", "site_id").with_columns(
        pl.lit(hours_ahead, pl.Int64).alias("hours_ahead"), pl.col("target").alias("observed")
    )
    pred, model_lower, model_upper = (frame[c].to_numpy() for c in ("pred", "lower", "upper"))
    lower, upper, factor = model_lower.copy(), model_upper.copy(), np.ones(frame.height)
    days = frame["time"].dt.truncate("1d")
    for day in days.unique().sort().to_list():
        rows = (days == day).to_numpy()
        served = frame.with_columns(pl.Series("lower", lower), pl.Series("upper", upper), pl.Series("interval_factor", factor))
        known = interval_factors(served, day - timedelta(hours=hours_ahead), coverage=coverage, window_days=window_days)
        if not known.is_empty():
            factor[rows] = factors_for(known, frame.filter(pl.Series(rows)))
            lower[rows], upper[rows] = widen(pred[rows], model_lower[rows], factor[rows]), widen(pred[rows], model_upper[rows], factor[rows])
    return frame.drop("hours_ahead", "observed").with_columns(
        pl.Series("model_lower", model_lower),
        pl.Series("model_upper", model_upper),
        pl.Series("lower", lower),
        pl.Series("upper", upper),
        pl.Series("interval_factor", factor),
    )


def widen(pred: np.ndarray, bound: np.ndarray, factor: np.ndarray | float) -> np.ndarray:
    """A bound moved ``factor`` times as far from the forecast; never below zero."""
    return np.clip(pred + (bound - pred) * factor, 0.0, None)
