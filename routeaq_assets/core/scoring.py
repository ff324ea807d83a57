"""Forecast scoring: every forecast made for an hour joined with the observation that arrived
later, and rolling scores beside persistence on the same hours.

A forecast is identified by (site, hour, pollutant, hours ahead). When the service answered the
same one several times (clients ask again), the last answer logged is the one scored. The
persistence forecast for hour t at h hours ahead is the observation at the forecast's origin
t - h: what "nothing changes" would have said with the same information.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from routeaq_assets.core.metrics import scores
from routeaq_assets.core.schema import TIME

KEY = ("site_id", "time", "pollutant", "hours_ahead")
LOGGED, AS_OF = "prediction_log", "as_of_champion"
FORECASTS = {
    "site_id": pl.Utf8,
    "time": TIME,
    "pollutant": pl.Utf8,
    "hours_ahead": pl.Int64,
    "model_name": pl.Utf8,
    "model_version": pl.Utf8,
    "source": pl.Utf8,
    "pred": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
    "interval_factor": pl.Float64,  # the recalibration the interval was served with (core.intervals)
}
SCORED = {**FORECASTS, "observed": pl.Float64, "persistence": pl.Float64}
# The rolling window of the scores: three days hold every hour of the day three times and, with
# the demo's six sites, over 400 forecasts per pollutant, so one odd hour does not move the skill.
ROLLING_HOURS = 72


def logged_forecasts(predictions: pl.DataFrame) -> pl.DataFrame:
    """One forecast per key from the prediction log (``schema.PREDICTIONS``): the last logged."""
    return (
        predictions.sort("requested_at")
        .unique(subset=list(KEY), keep="last", maintain_order=True)
        .with_columns(pl.lit(LOGGED).alias("source"))
        .select([pl.col(c).cast(t) for c, t in FORECASTS.items()])
    )


def as_of_forecasts(
    features: pl.DataFrame, pred: np.ndarray, lower: np.ndarray, upper: np.ndarray, interval_factor: np.ndarray, model_name: str, model_version: str, hours_ahead: int
) -> pl.DataFrame:
    """Forecasts computed now for past hours from their stored feature rows, with the interval
    the service serves (``lower``/``upper`` stretched by ``interval_factor``)."""
    return features.select(
        pl.col("site_id"),
        pl.col("time"),
        pl.col("pollutant"),
        pl.lit(hours_ahead, pl.Int64).alias("hours_ahead"),
        pl.lit(model_name).alias("model_name"),
        pl.lit(str(model_version)).alias("model_version"),
        pl.lit(AS_OF).alias("source"),
        pl.Series("pred", np.asarray(pred, float)),
        pl.Series("lower", np.asarray(lower, float)),
        pl.Series("upper", np.asarray(upper, float)),
        pl.Series("interval_factor", np.asarray(interval_factor, float)),
    ).with_columns(pl.col(c).fill_nan(None) for c in ("pred", "lower", "upper"))


def missing_keys(wanted: pl.DataFrame, have: pl.DataFrame) -> pl.DataFrame:
    """Rows of ``wanted`` (site_id, time, pollutant, hours_ahead) with no forecast in ``have``."""
    return wanted.join(have.select(KEY), on=list(KEY), how="anti")


def join_observations(forecasts: pl.DataFrame, observations: pl.DataFrame) -> pl.DataFrame:
    """``forecasts`` with ``observed`` (the value at the hour forecast) and ``persistence`` (the
    value at its origin, ``hours_ahead`` earlier). ``observations`` follow the long contract and
    must reach back to the earliest origin; a missing value stays null."""
    values = observations.select("site_id", "time", "pollutant", "value").unique(subset=["site_id", "time", "pollutant"], keep="last")
    origin = pl.col("time") - pl.duration(hours=pl.col("hours_ahead"))
    return (
        forecasts.join(values.rename({"value": "observed"}), on=["site_id", "time", "pollutant"], how="left")
        .with_columns(origin.alias("origin"))
        .join(values.rename({"time": "origin", "value": "persistence"}), on=["site_id", "origin", "pollutant"], how="left")
        .select([pl.col(c).cast(t) for c, t in SCORED.items()])
        .sort(*KEY)
    )


# The rolling scores' names (in the performance records, the Dagster metadata and Prometheus),
# from the names ``core.metrics.scores`` gives them.
ROLLING_NAMES = {
    "hours": "hours", "model_rmse": "rmse", "model_mae": "mae", "model_bias": "bias", "interval_coverage": "coverage",
    "persistence_rmse": "persistence_rmse", "skill_vs_persistence": "skill",
}


def rolling_scores(scored: pl.DataFrame) -> pl.DataFrame:
    """Per pollutant and hours ahead, on the forecasts whose hour and origin were both observed
    (so model and persistence are scored on the same hours): hours, RMSE, MAE, bias, interval
    coverage, persistence RMSE and skill (1 - RMSE / persistence RMSE), by ``core.metrics.scores``."""
    rows = scored.filter(pl.col("observed").is_not_null() & pl.col("persistence").is_not_null() & pl.col("pred").is_not_null())
    table = scores(rows, observed="observed", forecasts={"model": "pred", "persistence": "persistence"}, by=("pollutant", "hours_ahead"))
    return table.select("pollutant", "hours_ahead", *(pl.col(name).alias(shown) for name, shown in ROLLING_NAMES.items())).sort("pollutant", "hours_ahead")


def rolling_window(hour_end: datetime, hours: int = ROLLING_HOURS) -> tuple[datetime, datetime]:
    """The half-open window of forecast hours whose scores are rolled up at ``hour_end``."""
    return hour_end - timedelta(hours=hours), hour_end


def metadata_key(pollutant: str, hours_ahead: int, figure: str) -> str:
    """``pm25_skill`` for the served one-hour forecasts, ``no2_6h_skill`` further ahead."""
    return f"{pollutant}_{figure}" if hours_ahead == 1 else f"{pollutant}_{hours_ahead}h_{figure}"


def scores_markdown(scores: pl.DataFrame, start: datetime, end: datetime) -> str:
    head = f"Forecasts for {start:%Y-%m-%d %H:00} to {end:%Y-%m-%d %H:00} UTC, scored on hours with an observation at the hour and at the origin.\n\n"
    table = "| pollutant | hours ahead | forecasts | RMSE | MAE | bias | 80% coverage | persistence RMSE | skill |\n|---|---|---|---|---|---|---|---|---|\n"

    def f(value: float | None, fmt: str = ".3f") -> str:
        return "-" if value is None or not np.isfinite(value) else format(value, fmt)

    lines = [
        f"| {r['pollutant']} | {r['hours_ahead']} | {r['hours']} | {f(r['rmse'])} | {f(r['mae'])} | {f(r['bias'])} | {f(r['coverage'], '.1%')} | {f(r['persistence_rmse'])} | {f(r['skill'], '.1%')} |"
        for r in scores.iter_rows(named=True)
    ]
    return head + table + "\n".join(lines)
