"""LightGBM forecasters with split-conformal prediction intervals, and the promotion rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from routeaq_assets.core.features import BASE_COLUMNS, FEATURE_COLUMNS, WEATHER_FEATURES, feature_matrix

if TYPE_CHECKING:  # imported where a model is fitted: lightgbm imports scikit-learn and SciPy (4 s),
    import lightgbm as lgb  # which every Dagster process loading the definitions would pay

# Boosting is most of a candidate's time (281 of 354 s for PM10 at 150 sites), and it grows with
# the rows and the rounds, not with the bagged share: 150 rounds at 0.06 train in about half the
# time of 300 at 0.03, within 0.6 points of their skill at every lead on the real files and AQEval
# (bench/RESULTS.md, "Training every lead ... at 150 sites").
DEFAULT_PARAMS = {
    "objective": "regression",
    "learning_rate": 0.06,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}
NUM_BOOST_ROUND = 150
# Share of training rows whose weather features are all set to missing (a fixed seed): the
# booster learns what to do without a forecast instead of reading NaN as 0 (0 degC, no wind).
WEATHER_MASK_SHARE = 0.1
WEATHER_MASK_SEED = 11
MIN_CALIBRATION_ROWS = 100  # fewer residuals than this in a (lead, level) cell: the lead's, else the pooled quantiles
# Mondrian cells of the interval: per lead, the calibration forecasts' quintiles of predicted level.
# Errors grow with the level (a high forecast misses by more, and upwards), so one quantile per
# lead covers calm hours too often and peaks too rarely; a quantile per level bin covers each.
LEVEL_BINS = 5
# The lead times one forecaster is trained on, as rows with ``hours_ahead`` set: the leads between
# them share the trees' splits on ``hours_ahead`` with their neighbours (bench/RESULTS.md measures
# this against direct models trained for one lead each).
TRAINING_LEADS = (1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 30, 36, 42, 48)
# Each site-hour appears at about this many of the training leads (a seeded draw): the training
# set is this many times the rows of a one-lead model, not len(TRAINING_LEADS) times. Five, not
# four: PM10 at 6 h came within 1 point of a direct model and every lead gained 0.2-0.8 points on
# the real files, for a quarter more rows (bench/RESULTS.md, "Training every lead ... at 150 sites").
LEADS_PER_ROW = 5
# The first hours keep every row: thinned like the others, the one-hour forecast lost 3-9 points of
# skill to a direct one-hour model on the real files (bench/RESULTS.md).
WHOLE_LEADS_UP_TO = 3
LEAD_SAMPLE_SEED = 5  # of the hash that draws the rows
# What the booster predicts; recorded with every registered model and checked when one is loaded.
TARGET_KIND = "change_from_base"
# Leads that also get a booster of their own, trained on that lead's rows alone: at one hour the
# model of every lead lost 1.6-2.7 points of skill to a direct model on the real files (NO2, O3;
# bench/RESULTS.md, "Every hour to 48 ahead"), and a one-hour model costs a seventh of the rows.
DIRECT_LEADS = (1,)
MIN_DIRECT_ROWS = 200


@dataclass(frozen=True)
class TrainingSettings:
    """How a forecaster is trained: one object for the candidate and every backtest fold, so a
    backtest measures the model that is promoted (same window, rounds, interval and weather)."""

    train_days: int = 365  # days of training hours before the held-out (or test) hours
    num_boost_round: int = NUM_BOOST_ROUND
    coverage: float = 0.8
    weather: str = "forecast"  # the features' weather basis (core.features.WEATHER_BASES)

    def training_rows(self, features: pl.DataFrame, held_out_start: datetime) -> pl.DataFrame:
        """The rows a model scored from ``held_out_start`` on is trained on."""
        return features.filter((pl.col("time") < held_out_start) & (pl.col("time") >= held_out_start - timedelta(days=self.train_days)))

    def train(self, features: pl.DataFrame, held_out_start: datetime, num_threads: int = 0) -> Forecaster:
        return train_forecaster(
            thin_leads(self.training_rows(features, held_out_start)), coverage=self.coverage, num_boost_round=self.num_boost_round, num_threads=num_threads
        )


def thin_leads(features: pl.DataFrame, per_row: int = LEADS_PER_ROW, whole_up_to: int = WHOLE_LEADS_UP_TO, seed: int = LEAD_SAMPLE_SEED) -> pl.DataFrame:
    """Rows of several lead times (``hours_ahead``): those up to ``whole_up_to`` hours all kept,
    each longer one kept with probability ``per_row`` over the number of leads. The draw is a hash
    of the row's key (site, hour, lead), so a row is kept or dropped whatever else the frame holds:
    the candidate and a backtest over the same hours train on the same rows. One lead: all rows."""
    leads = features["hours_ahead"].n_unique() if "hours_ahead" in features.columns and features.height else 1
    return features.filter(kept_of_leads(leads, per_row, whole_up_to, seed))


def kept_of_leads(leads: int, per_row: int = LEADS_PER_ROW, whole_up_to: int = WHOLE_LEADS_UP_TO, seed: int = LEAD_SAMPLE_SEED) -> pl.Expr:
    """True for the rows ``thin_leads`` keeps of a frame of ``leads`` lead times: applied to each
    lead's rows as they are built, the rows of all leads never stand in memory at once."""
    if leads <= per_row:
        return pl.lit(True)
    draw = pl.struct("site_id", "time", "hours_ahead").hash(seed) % 1_000_000
    return (pl.col("hours_ahead") <= whole_up_to) | (draw < int(1_000_000 * per_row / leads))


def lead_weights(frame: pl.DataFrame, change: np.ndarray) -> np.ndarray | None:
    """Row weights that give every lead time the same say in the squared error: one over the
    variance of the change to be predicted at the row's lead. Unweighted, the long leads (whose
    changes are several times larger) decide the splits and the one-hour forecast loses to
    persistence (bench/RESULTS.md). None for one lead."""
    if "hours_ahead" not in frame.columns or frame["hours_ahead"].n_unique() < 2:
        return None
    leads = frame["hours_ahead"].to_numpy()
    weights = np.ones(len(leads))
    for lead in np.unique(leads):
        at = leads == lead
        variance = float(np.var(change[at])) if at.sum() > 1 else 0.0
        weights[at] = 1.0 / variance if variance > 0 else 1.0
    return weights / weights.mean()


def lead_key(hours_ahead: np.ndarray, leads: tuple[int, ...]) -> np.ndarray:
    """The trained lead each lead takes its interval quantiles from: the nearest at or after it
    (the wider), else the longest."""
    trained = np.array(sorted(leads))
    at = np.searchsorted(trained, hours_ahead, side="left")
    return trained[np.minimum(at, len(trained) - 1)]


def forecast_base(features: pl.DataFrame) -> np.ndarray:
    """The value each forecast starts from (NaN where a site has no recent observation)."""
    return features.select(pl.coalesce(*BASE_COLUMNS).cast(pl.Float64).fill_null(np.nan).alias("base"))["base"].to_numpy()


@dataclass
class Forecaster:
    """A point model for every lead time it was trained on, plus interval offsets scaled by
    recent variability.

    The booster predicts the change from ``forecast_base`` (the newest value seen, else a recent
    mean); the forecast is base + change, never below zero. The interval for a row is ``pred + q * scale`` with ``scale = 1 + target_std_6`` (or
    ``target_std_24`` when the last six hours are too sparse), so it widens in volatile hours.
    ``q_lower``/``q_upper`` are quantiles of scaled residuals on a calibration slice that the
    point model never saw while it was fitted; ``quantiles`` holds them per (lead, level bin) of the
    predicted level (``level_edges`` per lead) and per lead (bin -1), used where they rest on enough
    residuals (a Mondrian split-conformal step). ``leads`` are the trained lead times; the model
    serves every hour from 1 to ``max(leads)``.
    """

    booster: lgb.Booster
    q_lower: float
    q_upper: float
    coverage: float
    feature_names: tuple[str, ...] = FEATURE_COLUMNS
    params: dict = field(default_factory=dict)
    quantiles: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    level_edges: dict[int, tuple[float, ...]] = field(default_factory=dict)
    leads: tuple[int, ...] = (1,)
    direct: dict[int, lgb.Booster] = field(default_factory=dict)  # lead -> its own booster (DIRECT_LEADS)

    @property
    def max_hours_ahead(self) -> int:
        return max(self.leads)

    def point(self, x: np.ndarray, base: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """The point forecast: base + predicted change, never below zero; the change from the
        lead's own booster where it has one."""
        change = self.booster.predict(x, num_threads=num_threads)
        if self.direct:
            lead = x[:, self.feature_names.index("hours_ahead")]
            for hours, booster in self.direct.items():
                rows = lead == hours
                if rows.any():
                    change[rows] = booster.predict(x[rows], num_threads=num_threads)
        return np.clip(base + change, 0.0, None)

    def predict(self, features: pl.DataFrame, num_threads: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, base = feature_matrix(features, self.feature_names), forecast_base(features)
        pred = self.point(x, base, num_threads)
        return self.predict_matrix(x, base, self.interval_offsets(features, pred), num_threads)

    def interval_offsets(self, features: pl.DataFrame, pred: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per row, what to add to the forecast (``pred``, computed when not given) for the lower
        and upper bound: the quantiles of the row's lead and predicted-level bin, times its scale."""
        if pred is None:
            pred = self.point(feature_matrix(features, self.feature_names), forecast_base(features))
        hours = features["hours_ahead"].to_numpy() if "hours_ahead" in features.columns else np.ones(features.height, dtype=int)
        keys = lead_key(hours, self.leads)
        q = np.tile(np.array([self.q_lower, self.q_upper], dtype=float), (features.height, 1))
        for lead in np.unique(keys):
            rows = keys == lead
            edges = self.level_edges.get(int(lead))
            bins = np.searchsorted(np.array(edges), pred[rows], side="right") if edges else np.full(rows.sum(), -1)
            q[rows] = [self.quantiles.get((int(lead), int(b))) or self.quantiles.get((int(lead), -1)) or (self.q_lower, self.q_upper) for b in bins]
        scale = interval_scale(features)
        return q[:, 0] * scale, q[:, 1] * scale

    def predict_matrix(
        self, x: np.ndarray, base: np.ndarray, offsets: tuple[np.ndarray, np.ndarray], num_threads: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forecast, lower and upper bound from a prepared matrix (the serving path)."""
        pred = self.point(x, base, num_threads)
        return pred, np.clip(pred + offsets[0], 0.0, None), pred + offsets[1]

    def metadata(self) -> dict:
        return {
            "feature_names": list(self.feature_names),
            "q_lower": self.q_lower,
            "q_upper": self.q_upper,
            "interval_quantiles": [[lead, level_bin, *q] for (lead, level_bin), q in sorted(self.quantiles.items())],
            "level_edges": {str(lead): list(edges) for lead, edges in sorted(self.level_edges.items())},
            "leads": list(self.leads),
            "direct_leads": sorted(self.direct),
            "coverage": self.coverage,
            "target_kind": TARGET_KIND,
        }


def interval_scale(features: pl.DataFrame) -> np.ndarray:
    """1 ug/m3 plus the spread of the last six hours (of the last day when those are sparse).

    The floor keeps calm hours from getting a zero-width interval; per-site quantiles take care
    of sites whose typical level is far from others'."""
    spread = pl.coalesce(pl.col("target_std_6"), pl.col("target_std_24"), pl.lit(0.0))
    return features.select((1.0 + spread).alias("scale"))["scale"].to_numpy()


def mask_weather(x: np.ndarray, share: float, seed: int = WEATHER_MASK_SEED) -> np.ndarray:
    """``x`` (columns ``FEATURE_COLUMNS``) with every weather feature of a random ``share`` of
    rows set to NaN; the same rows for the same number of rows and seed."""
    if share <= 0:
        return x
    rows = np.random.default_rng(seed).random(x.shape[0]) < share
    columns = [FEATURE_COLUMNS.index(c) for c in WEATHER_FEATURES]
    x[np.ix_(rows, columns)] = np.nan
    return x


def train_forecaster(
    train: pl.DataFrame,
    *,
    coverage: float = 0.8,
    calibration_fraction: float = 0.2,
    params: dict | None = None,
    num_boost_round: int = NUM_BOOST_ROUND,
    num_threads: int = 0,
    weather_mask_share: float = WEATHER_MASK_SHARE,
) -> Forecaster:
    """Fit on the earlier part of ``train`` (time-ordered) and calibrate the interval on the later
    part, then refit on all of it with the same settings: the served model has seen the newest
    hours, and its interval comes from residuals of a model that had not seen them."""
    rows = train.filter(pl.col("target").is_not_null() & pl.coalesce(*BASE_COLUMNS).is_not_null()).sort("time", "site_id")
    if rows.height < 200:
        raise ValueError(f"only {rows.height} training rows with an observed target and history; need at least 200")
    params = {**DEFAULT_PARAMS, **(params or {}), "num_threads": num_threads}
    cut = rows["time"].sort()[int(rows.height * (1 - calibration_fraction))]
    fit, calibration = rows.filter(pl.col("time") < cut), rows.filter(pl.col("time") >= cut)

    import lightgbm as lgb

    def fit_booster(frame: pl.DataFrame) -> lgb.Booster:
        change = frame["target"].to_numpy() - forecast_base(frame)
        x = mask_weather(feature_matrix(frame), weather_mask_share)
        data = lgb.Dataset(x, label=change, weight=lead_weights(frame, change), feature_name=list(FEATURE_COLUMNS), free_raw_data=True)
        return lgb.train(params, data, num_boost_round=num_boost_round)

    def fit_direct(frame: pl.DataFrame) -> dict[int, lgb.Booster]:
        if "hours_ahead" not in frame.columns or frame["hours_ahead"].n_unique() < 2:  # a one-lead model is direct already
            return {}
        own = {lead: frame.filter(pl.col("hours_ahead") == lead) for lead in DIRECT_LEADS}
        return {lead: fit_booster(rows) for lead, rows in own.items() if rows.height >= MIN_DIRECT_ROWS}

    point = Forecaster(booster=fit_booster(fit), q_lower=0.0, q_upper=0.0, coverage=coverage, direct=fit_direct(fit))  # calibration only
    predicted = point.point(feature_matrix(calibration), forecast_base(calibration))
    alpha = (1.0 - coverage) / 2.0
    residual = (calibration["target"].to_numpy() - predicted) / interval_scale(calibration)
    q_lower, q_upper = np.quantile(residual, [alpha, 1.0 - alpha])
    leads = tuple(sorted(rows["hours_ahead"].cast(pl.Int64).unique().to_list())) if "hours_ahead" in rows.columns else (1,)
    lead_of = calibration["hours_ahead"].cast(pl.Int64).to_numpy() if "hours_ahead" in calibration.columns else np.ones(calibration.height, dtype=int)
    quantiles, level_edges = {}, {}
    for lead in leads:
        at = lead_of == lead
        if at.sum() < MIN_CALIBRATION_ROWS:
            continue
        quantiles[(lead, -1)] = tuple(float(q) for q in np.quantile(residual[at], [alpha, 1.0 - alpha]))
        edges = np.unique(np.quantile(predicted[at], np.arange(1, LEVEL_BINS) / LEVEL_BINS))
        level_edges[lead] = tuple(float(e) for e in edges)
        bins = np.searchsorted(edges, predicted[at], side="right")
        for b in np.unique(bins):
            cell = residual[at][bins == b]
            if cell.size >= MIN_CALIBRATION_ROWS:
                quantiles[(lead, int(b))] = tuple(float(q) for q in np.quantile(cell, [alpha, 1.0 - alpha]))
    return Forecaster(
        booster=fit_booster(rows),
        direct=fit_direct(rows),
        q_lower=float(q_lower),
        q_upper=float(q_upper),
        coverage=coverage,
        params={**params, "num_boost_round": num_boost_round, "weather_mask_share": weather_mask_share},
        quantiles=quantiles,
        level_edges=level_edges,
        leads=leads,
    )


def champion_overlap(champion_metadata: dict, held_out_start: datetime) -> str | None:
    """Why the champion cannot be scored fairly on held-out hours from ``held_out_start``: its
    training reached into them, or its training window is not recorded. None when it can."""
    trained_until = champion_metadata.get("train_end") or champion_metadata.get("holdout_start")
    if not trained_until:
        return "the champion's training window is not recorded, so it may have trained on the held-out hours"
    trained_until = datetime.fromisoformat(trained_until)
    if trained_until > held_out_start:
        return (
            f"the champion trained on hours up to {trained_until.isoformat()}, inside the held-out hours "
            f"from {held_out_start.isoformat()}"
        )
    return None


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


# The lead times the gate scores on the held-out hours: the model must beat persistence at each.
GATE_LEADS = (1, 6, 12, 24, 48)


def day_ahead_decision(
    by_lead: dict[int, dict[str, float]],
    coverage: float | None,
    *,
    target_coverage: float = 0.8,
    coverage_tolerance: float = 0.05,
    margin: float = 0.01,
    champion_refused: str | None = None,
    compare_champion: bool = True,
) -> PromotionDecision:
    """The promotion rule for a forecaster of every lead time, on the same held-out hours: at every
    lead of ``by_lead`` (metrics from ``core.metrics.evaluate``, with ``champion_rmse`` where the
    champion was scored too) it beats persistence; its interval coverage over all of them is within
    tolerance; and, with ``compare_champion``, its RMSE averaged over the leads as a share of the
    champion's is below ``1 - margin``. The reason names the leads and the figures."""
    leads = sorted(by_lead)
    named = ", ".join(str(h) for h in leads)
    for h in leads:
        m = by_lead[h]
        if not m["model_rmse"] < m["persistence_rmse"]:
            return PromotionDecision(False, f"{h} h ahead: RMSE {m['model_rmse']:.3f} does not beat persistence {m['persistence_rmse']:.3f}")
    skill = ", ".join(f"{h} h {by_lead[h]['skill_vs_persistence']:.2f}" for h in leads)
    if coverage is not None and abs(coverage - target_coverage) > coverage_tolerance:
        return PromotionDecision(False, f"interval coverage {coverage:.3f} over {named} h is outside {target_coverage:.2f} +/- {coverage_tolerance:.2f}")
    if champion_refused:
        return PromotionDecision(False, f"not compared with the champion: {champion_refused}")
    if not compare_champion:
        return PromotionDecision(True, f"beats persistence at {named} h ahead (skill {skill}); coverage {coverage:.3f}; the champion is compared when promoting")
    compared = [h for h in leads if by_lead[h].get("champion_rmse") is not None]
    if not compared:
        return PromotionDecision(True, f"no champion yet; beats persistence at {named} h ahead (skill {skill})")
    ratio = float(np.mean([by_lead[h]["model_rmse"] / by_lead[h]["champion_rmse"] for h in compared]))
    if not ratio < 1.0 - margin:
        return PromotionDecision(False, f"RMSE is {ratio:.1%} of the champion's over {', '.join(map(str, compared))} h ahead; needs below {1 - margin:.0%}")
    return PromotionDecision(True, f"RMSE is {ratio:.1%} of the champion's over {', '.join(map(str, compared))} h ahead, and beats persistence at {named} h (skill {skill})")

