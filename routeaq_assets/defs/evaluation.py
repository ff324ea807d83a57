"""Evaluation: rolling-origin backtests on the warehouse's features, and on a folder of
openair-format tables a user brings. Results go to MLflow, the lake and the asset's metadata."""

from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from routeaq_assets.core.backtest import (
    conditional_coverage,
    forecast_plot,
    format_coverage,
    format_table,
    metrics_table,
    rolling_origin_backtest,
)
from routeaq_assets.core.features import build_features, hourly_panel, weather_summary
from routeaq_assets.core.daily_daqi import uk_day, uk_day_bounds
from routeaq_assets.core.daily_verification import (
    ISSUES,
    climatology_rates,
    daily_forecast_rows,
    format_scores,
    observed_daily_index,
    verification_scores,
    with_outcomes,
    with_verified_odds,
)
from routeaq_assets.core.intervals import interval_factors, recalibrated
from routeaq_assets.core.models import GATE_LEADS, TRAINING_LEADS
from routeaq_assets.core.schema import FORECAST_POLLUTANTS, WEATHER, SourceDataError
from routeaq_assets.core.sites import load_packaged_registry, site_attributes
from routeaq_assets.defs.features import require_horizon, silver_features
from routeaq_assets.defs.training import ModelConfig, current_versions
from routeaq_assets.lake import Lake
from routeaq_assets.model_store import ModelStore
from routeaq_assets.observation_sources import LocalObservations, ObservationSource
from routeaq_assets.sources.local_tables import folder_sites, local_observations, local_weather
from routeaq_assets.warehouse import WarehouseResource


class BacktestConfig(ModelConfig):
    """The candidate's training settings (``ModelConfig``: window, rounds, interval, weather), the
    lead time to score and the folds to score it on. Each fold trains the served kind of model
    (every lead of ``TRAINING_LEADS`` at once); ``direct`` trains one for ``horizon`` alone
    instead, to compare the two."""

    horizon: int = 1
    direct: bool = False
    pollutants: list[str] = list(FORECAST_POLLUTANTS)
    folds: int = 4
    # Days per fold; 0 splits the second half of the data's span evenly between the folds.
    test_days: int = 7


class WarehouseBacktestConfig(BacktestConfig):
    # The table versions to read (table -> version), as a candidate recorded them in MLflow
    # (``silver_features_version``, ``observations_version``, ...): the backtest re-runs on what that
    # training run read. Empty: the tables as they are now. Only the production lake keeps versions.
    table_versions: dict[str, int] = {}


class LocalBacktestConfig(BacktestConfig):
    folder: str = ""  # empty: ROUTEAQ_SOURCE_FOLDER when the source is local
    test_days: int = 0
    # Also forecast each fold's UK days' daily index (issued the day before and on the day) and
    # score it against the observed index (``core.daily_verification``).
    daily: bool = False


def training_leads(config: BacktestConfig) -> tuple[int, ...]:
    return (config.horizon,) if config.direct else TRAINING_LEADS


def feature_leads(config: BacktestConfig) -> tuple[int, ...]:
    """The leads whose feature rows a backtest needs: those it trains on and the one it scores."""
    return tuple(sorted({*training_leads(config), config.horizon}))


def _fold_days(config: BacktestConfig, features: pl.DataFrame) -> int:
    if config.test_days > 0:
        return config.test_days
    span = (features["time"].max() - features["time"].min()) / timedelta(days=1)
    return max(1, int(span / 2 / config.folds))


def _backtest(features_by_pollutant: dict[str, pl.DataFrame], config: BacktestConfig) -> pl.DataFrame:
    frames = []
    for pollutant, features in features_by_pollutant.items():
        if features.is_empty() or features["target"].drop_nulls().is_empty():
            raise dg.Failure(f"backtest: no {pollutant} observations to evaluate")
        frames.append(
            rolling_origin_backtest(
                features, settings=config.settings(), folds=config.folds, test_days=_fold_days(config, features), hours_ahead=config.horizon,
                training_leads=training_leads(config),
            )
        )
    return pl.concat(frames)


def _report(
    context: dg.AssetExecutionContext, name: str, predictions: pl.DataFrame, config: BacktestConfig, model_store: ModelStore, lake: Lake, weather: str,
    daily: str | None = None, versions: dict[str, int] | None = None,
) -> dg.MaterializeResult:
    table = metrics_table(predictions)
    text = format_table(table)
    context.log.info(f"{name} ({config.horizon} h ahead, {config.folds} rolling-origin folds, weather: {weather}):\n{text}")
    stamp = f"{datetime.now():%Y%m%dT%H%M%S}"
    folder = f"reports/{name}/{stamp}"
    coverage = format_coverage(conditional_coverage(predictions))
    context.log.info(f"interval coverage by site and on the top decile of observed values:\n{coverage}")
    artifacts = {
        "metrics.csv": table.write_csv().encode(), "metrics.txt": text.encode(), "weather.txt": weather.encode(), "coverage.txt": coverage.encode(),
    }
    if daily is not None:
        context.log.info(f"daily index, rolling-origin folds:\n{daily}")
        artifacts["daily.md"] = daily.encode()
    for (pollutant,), rows in predictions.group_by("pollutant"):
        site = rows["site_id"].sort()[0]
        artifacts[f"forecast_{pollutant}_{site}.png"] = forecast_plot(rows, site, pollutant, horizon=config.horizon)
    paths = {file: lake.write_bytes(f"{folder}/{file}", data) for file, data in artifacts.items()}
    headline = {
        f"{r['pollutant']}_{k}": r[k]
        for r in table.filter(pl.col("site_id") == "ALL").iter_rows(named=True)
        for k in ("model_rmse", "persistence_rmse", "yesterday_rmse", "skill_vs_persistence", "interval_coverage", "interval_width")
    }
    run_id = model_store.registry().log_backtest(
        f"{name}-{stamp}",
        params={
            "folds": config.folds, "test_days": config.test_days, "train_days": config.train_days, "coverage": config.coverage,
            "num_boost_round": config.num_boost_round, "pollutants": ",".join(config.pollutants), "horizon_hours": config.horizon,
            "weather": config.weather, **{f"{t}_version": v for t, v in (versions or {}).items()},
        },
        metrics=headline,
        artifacts=artifacts,
    )
    return dg.MaterializeResult(
        metadata={
            "metrics": dg.MetadataValue.md(table.to_pandas().to_markdown(index=False, floatfmt=".3f")),
            "table": dg.MetadataValue.text(text),
            "conditional_coverage": dg.MetadataValue.text(coverage),
            **({"daily_scores": dg.MetadataValue.md(daily)} if daily is not None else {}),
            "horizon_hours": config.horizon,
            "train_days": config.train_days,
            "num_boost_round": config.num_boost_round,
            "weather": weather,
            "mlflow_run_id": run_id,
            **{f"{t}_version": v for t, v in (versions or {}).items()},
            "report_folder": dg.MetadataValue.path(lake.uri(folder)),
            **{f"plot_{p}": dg.MetadataValue.path(v) for p, v in paths.items() if p.endswith(".png")},
            **{k: float(v) for k, v in headline.items()},
        }
    )


@dg.asset(group_name="evaluation", deps=[silver_features], kinds={"lightgbm", "mlflow"})
def backtest(
    context: dg.AssetExecutionContext, config: WarehouseBacktestConfig, warehouse: WarehouseResource, model_store: ModelStore, lake: Lake
) -> dg.MaterializeResult:
    """Rolling-origin backtest of every pollutant on the stored features (at ``table_versions``
    when given): each fold trains on the hours before it, and RMSE, MAE, bias, skill and interval
    coverage are reported per pollutant and site beside persistence and same-hour-yesterday."""
    require_horizon("backtest", config.horizon)
    versions = config.table_versions or current_versions(warehouse)
    try:
        reads = warehouse.as_of(versions)
    except ValueError as exc:
        raise dg.Failure(f"backtest: {exc}") from exc
    start, newest = reads.query("SELECT min(time), max(time) FROM silver_features").row(0)
    if newest is None:
        raise dg.Failure("backtest: silver_features is empty; materialize the features first")
    end = newest + timedelta(hours=1)
    if config.weather != "forecast":
        raise dg.Failure("backtest: the stored features use the weather the service has; the reanalysis upper bound is measured on user files (local_data_backtest)")
    features = {p: reads.stored_features(p, start, end, feature_leads(config)) for p in config.pollutants}
    kinds = reads.query("SELECT kind FROM weather WHERE time >= ? AND time < ?", [start, end])["kind"]
    return _report(context, "backtest", _backtest(features, config), config, model_store, lake, weather_summary(kinds), versions=versions)


def local_panel(folder: Path) -> pl.DataFrame:
    """The hourly panel of every site in a folder of openair-format tables. Their met columns
    are what happened (kind reanalysis): the features use them at the forecast's origin unless
    asked for the reanalysis upper bound."""
    sites = folder_sites(folder)
    known = set(load_packaged_registry()["site_id"].to_list())
    attributes = site_attributes(load_packaged_registry(tuple(s for s in sites if s in known))) if known & set(sites) else None
    unknown = pl.DataFrame({"site_id": [s for s in sites if s not in known]}, schema={"site_id": pl.Utf8})
    sites_frame = pl.concat([attributes, unknown], how="diagonal_relaxed") if attributes is not None else unknown.with_columns(
        pl.lit(None, pl.Float64).alias("latitude"), pl.lit(None, pl.Float64).alias("longitude"), pl.lit(None, pl.Int32).alias("location_type_code")
    )
    observations = pl.concat([local_observations(folder, s, "local") for s in sites])
    weather_parts = [w for s in sites if (w := local_weather(folder, s)) is not None]
    met = pl.concat(weather_parts) if weather_parts else pl.DataFrame(schema=WEATHER)
    start, end = observations["time"].min(), observations["time"].max() + timedelta(hours=1)
    return hourly_panel(observations, met, sites_frame, start, end)


def local_features(folder: Path, pollutants: list[str], leads: tuple[int, ...] = (1,), weather: str = "forecast") -> dict[str, pl.DataFrame]:
    """Features of every site and pollutant in a folder of openair-format tables, for each lead."""
    panel = local_panel(folder)
    return {p: pl.concat([build_features(panel, p, h, weather) for h in leads]) for p in pollutants}


@dg.asset(group_name="evaluation", kinds={"lightgbm", "mlflow"})
def local_data_backtest(
    context: dg.AssetExecutionContext, config: LocalBacktestConfig, observations: ObservationSource, model_store: ModelStore, lake: Lake
) -> dg.MaterializeResult:
    """The same rolling-origin backtest on a folder of openair-format tables a user brings
    (``folder`` config, or ``ROUTEAQ_SOURCE_FOLDER``), read through the local-file source."""
    folder = config.folder or (observations.folder if isinstance(observations, LocalObservations) else "")
    if not folder:
        raise dg.Failure("local_data_backtest: set config 'folder' (or ROUTEAQ_SOURCE_FOLDER) to a folder of openair-format tables")
    require_horizon("local_data_backtest", config.horizon)
    try:
        panel = local_panel(Path(folder))
        features = {p: pl.concat([build_features(panel, p, h, config.weather) for h in feature_leads(config)]) for p in config.pollutants}
        weather = weather_summary(panel["weather_kind"], config.weather)
    except (SourceDataError, ValueError) as exc:
        raise dg.Failure(f"local_data_backtest: {exc}") from exc
    available = {p: f for p, f in features.items() if not f["target"].drop_nulls().is_empty()}
    for missing in sorted(set(features) - set(available)):
        context.log.warning(f"no {missing} observations in {folder}: skipped")
    if not available:
        raise dg.Failure(f"local_data_backtest: none of {config.pollutants} is measured in {folder}")
    daily = daily_backtest(panel, available, config) if config.daily else None
    return _report(context, "local_data_backtest", _backtest(available, config), config, model_store, lake, weather, daily)


def daily_backtest_rows(panel: pl.DataFrame, features: dict[str, pl.DataFrame], config: BacktestConfig) -> tuple[pl.DataFrame, dict[int, float]]:
    """Each fold's UK days forecast as the service would (one model per pollutant trained before
    the fold, issued the day before at noon and on the day at 06:00), with the observed daily
    index and the fold (0 first); and the climatology: the observed index frequencies before the
    first fold. The hourly intervals are stretched as served: by the interval factors as of each
    origin, from the folds' forecasts at the gate leads already scored then, with the intervals
    they were served with (the monitoring loop scores those leads; the first fold's first days
    have none and keep the models' own). A day forecast wholly ahead (issued the day before) takes
    its odds from the daily errors of the days verified by its origin (``with_verified_odds``),
    until there are too few: the hourly draws."""
    settings = config.settings()
    any_features = next(iter(features.values()))
    end = any_features["time"].max() + timedelta(hours=1)
    test_days = _fold_days(config, any_features)
    first = end - timedelta(days=config.folds * test_days)
    folds, scored = [], []
    for k in range(config.folds):
        start, stop = first + timedelta(days=k * test_days), first + timedelta(days=(k + 1) * test_days)
        models = {p: settings.train(f.filter(pl.col("hours_ahead").is_in(list(TRAINING_LEADS))), start) for p, f in features.items()}
        scored += [_gate_lead_forecasts(features[p], p, model, start, stop) for p, model in models.items()]
        folds.append((start, stop, models))
    known = _as_served(pl.concat(scored), settings.coverage)
    rows = []
    for k, (start, stop, models) in enumerate(folds):
        days = [d for d in (uk_day(start) + timedelta(days=i) for i in range(test_days + 1)) if uk_day_bounds(d)[0] >= start and uk_day_bounds(d)[1] <= stop]
        rows += [
            daily_forecast_rows(
                panel, models, days, issue, coverage=settings.coverage, factors_at=lambda as_of: interval_factors(known, as_of, coverage=settings.coverage)
            ).with_columns(pl.lit(k).alias("fold"))
            for issue in ISSUES
        ]
    observed = observed_daily_index(panel, tuple(features))
    climatology = climatology_rates(observed.filter(pl.col("day") < uk_day(first))["observed"])
    verified = with_outcomes(pl.concat(rows), observed)
    # A day forecast wholly ahead takes its odds from the days verified by its origin, as served.
    return with_verified_odds(verified, verified), climatology


def _gate_lead_forecasts(features: pl.DataFrame, pollutant: str, model, start: datetime, stop: datetime) -> pl.DataFrame:  # noqa: ANN001 - a Forecaster
    """``model``'s forecasts at the gate leads for the hours of [start, stop) with an observation,
    as the monitoring loop scores them (site_id, time, pollutant, hours_ahead, pred, lower, upper,
    observed)."""
    rows = features.filter(
        pl.col("hours_ahead").is_in([h for h in GATE_LEADS if h <= model.max_hours_ahead])
        & (pl.col("time") >= start) & (pl.col("time") < stop) & pl.col("target").is_not_null()
    )
    pred, lower, upper = model.predict(rows)
    return rows.select("site_id", "time", pl.lit(pollutant).alias("pollutant"), pl.col("hours_ahead").cast(pl.Int64),
                       pl.Series("pred", pred), pl.Series("lower", lower), pl.Series("upper", upper), pl.col("target").alias("observed"))


def _as_served(forecasts: pl.DataFrame, coverage: float) -> pl.DataFrame:
    """The gate leads' scored forecasts with the intervals the service served them with: each
    day's recalibrated from the forecasts scored before it (``recalibrated``), as the monitoring
    loop stores them (bounds as served, ``interval_factor``)."""
    return pl.concat([
        recalibrated(rows.rename({"observed": "target"}), hours_ahead, coverage=coverage).select(
            "site_id", "time", "pollutant", pl.lit(hours_ahead, pl.Int64).alias("hours_ahead"), "pred", "lower", "upper",
            pl.col("target").alias("observed"), "interval_factor",
        )
        for (hours_ahead,), rows in forecasts.group_by("hours_ahead")
    ])


def daily_backtest(panel: pl.DataFrame, features: dict[str, pl.DataFrame], config: BacktestConfig) -> str:
    """The daily backtest's rows (``daily_backtest_rows``) scored per issue."""
    scored, climatology = daily_backtest_rows(panel, features, config)
    return "\n\n".join(format_scores(verification_scores(scored.filter(pl.col("issue") == issue), climatology), f"issued {issue.replace('_', ' ')}") for issue in ISSUES)
