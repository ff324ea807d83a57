"""Rolling-origin backtests: several time-ordered folds, each trained only on hours before it."""

from __future__ import annotations

import re
from datetime import timedelta

import polars as pl

from routeaq_assets.core.intervals import recalibrated
from routeaq_assets.core.metrics import evaluate, scorable
from routeaq_assets.core.models import TRAINING_LEADS, TrainingSettings

METRIC_COLUMNS = (
    "hours", "model_rmse", "persistence_rmse", "yesterday_rmse", "skill_vs_persistence", "skill_vs_yesterday",
    "model_mae", "persistence_mae", "model_bias", "interval_coverage", "interval_width",
)


def rolling_origin_backtest(
    features: pl.DataFrame,
    *,
    settings: TrainingSettings = TrainingSettings(),
    folds: int = 4,
    test_days: int = 7,
    hours_ahead: int = 1,
    training_leads: tuple[int, ...] = TRAINING_LEADS,
) -> pl.DataFrame:
    """Predictions of ``folds`` consecutive test windows of ``test_days`` ending at the newest
    hour, ``hours_ahead`` hours ahead. Fold k is trained as the candidate is (``settings``: the
    ``train_days`` before its window, the same rounds and interval) on the rows of
    ``training_leads`` (the served model: every lead; a direct model: ``(hours_ahead,)``), and
    scored on the window's rows of ``hours_ahead`` where the model and both baselines can be
    scored. ``features`` holds rows of those leads, told apart by ``hours_ahead``. The intervals
    are those the service serves: the model's, recalibrated each day from the forecasts scored
    before it (``core.intervals``), the model's own kept as ``model_lower`` and ``model_upper``."""
    if folds < 1 or test_days < 1:
        raise ValueError("a backtest needs at least one fold of at least one day")
    training = features.filter(pl.col("hours_ahead").is_in(list(training_leads)))
    features = features.filter(pl.col("hours_ahead") == hours_ahead)
    if features.is_empty():
        raise ValueError(f"no feature rows for {hours_ahead} h ahead")
    end = features["time"].max() + timedelta(hours=1)
    first_test = end - timedelta(days=folds * test_days)
    if features["time"].min() >= first_test - timedelta(days=2):
        raise ValueError(
            f"{folds} folds of {test_days} days need history before {first_test.isoformat()}; "
            f"the data starts {features['time'].min().isoformat()}"
        )
    results = []
    for k in range(folds):
        test_start = first_test + timedelta(days=k * test_days)
        test_end = test_start + timedelta(days=test_days)
        test = scorable(features.filter((pl.col("time") >= test_start) & (pl.col("time") < test_end)))
        if test.is_empty():
            continue
        forecaster = settings.train(training, test_start)
        pred, lower, upper = forecaster.predict(test)
        results.append(
            test.select("site_id", "time", "pollutant", "target", "target_lag_1", "target_lag_24").with_columns(
                fold=pl.lit(k), pred=pl.Series(pred), lower=pl.Series(lower), upper=pl.Series(upper)
            )
        )
    if not results:
        raise ValueError("no fold has an hour with an observation and both baselines")
    return recalibrated(pl.concat(results), hours_ahead, coverage=settings.coverage)


def metrics_table(predictions: pl.DataFrame) -> pl.DataFrame:
    """Scores per pollutant over all sites (``site_id`` 'ALL') and per pollutant and site."""
    rows = []
    for (pollutant,), group in predictions.group_by("pollutant", maintain_order=True):
        rows.append({"pollutant": pollutant, "site_id": "ALL", **evaluate(group)})
        for (site_id,), site_rows in group.sort("site_id").group_by("site_id", maintain_order=True):
            rows.append({"pollutant": pollutant, "site_id": site_id, **evaluate(site_rows)})
    return pl.DataFrame(rows).select("pollutant", "site_id", *METRIC_COLUMNS)


TOP_SHARE = 0.1  # conditional coverage: the top decile of observed values


def conditional_coverage(predictions: pl.DataFrame) -> pl.DataFrame:
    """Interval coverage per pollutant, over all sites and per site, on every scored hour and on
    the hours whose observation is in the top decile (the site's own top decile; over all sites,
    the pooled rows of those)."""
    def inside(lower: str, upper: str) -> pl.Expr:
        return ((pl.col("target") >= pl.col(lower)) & (pl.col("target") <= pl.col(upper))).cast(pl.Float64)

    own = ("model_lower", "model_upper") if "model_lower" in predictions.columns else ("lower", "upper")
    top = pl.col("target") >= pl.col("target").quantile(1.0 - TOP_SHARE, "higher").over("pollutant", "site_id")
    marked = predictions.with_columns(inside("lower", "upper").alias("inside"), inside(*own).alias("inside_model"), top.alias("top"))
    figures = (
        pl.len().alias("hours"), pl.col("inside").mean().alias("coverage"), pl.col("inside_model").mean().alias("model_coverage"),
        pl.col("top").sum().alias("top_hours"), pl.col("inside").filter(pl.col("top")).mean().alias("top_decile_coverage"),
    )
    by_site = marked.group_by("pollutant", "site_id").agg(*figures)
    pooled = marked.group_by("pollutant").agg(pl.lit("ALL").alias("site_id"), *figures)
    order = pl.when(pl.col("site_id") == "ALL").then(0).otherwise(1)
    return pl.concat([pooled, by_site.select(pooled.columns)], how="vertical_relaxed").sort("pollutant", order, "site_id")


ALIGNMENT = re.compile(r"[<>]\d+")  # a format spec's alignment and width, e.g. ">8" of ">8.3f"


def text_table(table: pl.DataFrame, columns: tuple[tuple[str, str, str], ...]) -> str:
    """A plain-text table: a header, a rule, then a line a row; ``columns`` are (title, column,
    format spec), the title aligned as the spec's leading alignment and width say."""
    header = " ".join(f"{title:{ALIGNMENT.match(spec).group()}}" for title, _, spec in columns)
    lines = [header, "-" * len(header)]
    lines += [" ".join(f"{r[column]:{spec}}" for _, column, spec in columns) for r in table.iter_rows(named=True)]
    return "\n".join(lines)


ROW_LABELS = (("pollutant", "pollutant", "<9"), ("site", "site_id", "<6"), ("hours", "hours", ">6.0f"))


def format_coverage(table: pl.DataFrame) -> str:
    """``cover``: the served (recalibrated) interval; ``model``: the model's own, as calibrated at
    training."""
    return text_table(table, (
        *ROW_LABELS, ("cover", "coverage", ">6.1%"), ("model", "model_coverage", ">6.1%"),
        ("top-10% hours", "top_hours", ">13.0f"), ("top-10% cover", "top_decile_coverage", ">13.1%"),
    ))


def format_table(table: pl.DataFrame) -> str:
    """A plain-text metrics table, persistence beside every model figure."""
    return text_table(table, (
        *ROW_LABELS, ("RMSE", "model_rmse", ">8.3f"), ("persist", "persistence_rmse", ">8.3f"), ("yesterday", "yesterday_rmse", ">9.3f"),
        ("skill", "skill_vs_persistence", ">7.1%"), ("MAE", "model_mae", ">7.3f"), ("bias", "model_bias", ">7.3f"),
        ("cover", "interval_coverage", ">6.1%"), ("width", "interval_width", ">7.2f"),
    ))


def forecast_plot(predictions: pl.DataFrame, site_id: str, pollutant: str, hours: int = 168, horizon: int = 1) -> bytes:
    """PNG of forecast, interval and observation for the last ``hours`` of one site."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = predictions.filter((pl.col("site_id") == site_id) & (pl.col("pollutant") == pollutant)).sort("time").tail(hours)
    figure, axis = plt.subplots(figsize=(11, 3.5), dpi=100)
    times = rows["time"].to_list()
    axis.fill_between(times, rows["lower"].to_numpy(), rows["upper"].to_numpy(), color="tab:blue", alpha=0.2, label="80% interval")
    axis.plot(times, rows["target"].to_numpy(), color="black", linewidth=1.0, label="observed")
    axis.plot(times, rows["pred"].to_numpy(), color="tab:blue", linewidth=1.0, label=f"forecast ({horizon} h)")
    axis.plot(times, rows["target_lag_1"].to_numpy(), color="tab:orange", linewidth=0.8, alpha=0.7, label="persistence")
    axis.set_title(f"{pollutant} at {site_id}: {horizon} h ahead forecast vs observed")
    axis.set_ylabel("ug/m3")
    axis.legend(loc="upper left", ncols=4, fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
