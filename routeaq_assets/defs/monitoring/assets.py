"""Monitoring assets, hour by hour: ``forecast_performance`` (every forecast made for an hour
scored against the observation that arrived later), ``interval_calibration`` (the factors that
keep the served interval at its coverage) and ``{p}_drift_report`` per pollutant.

Per hour, each writes its figures to a small warehouse table (``rolling_scores``: the rolling
scores at each hour; ``{p}_drift_hours``: each hour's alarm), so a range run (a backfill) gives
the retraining policy each hour's own figures and its sensor reads them with one query each.
The drift report also keeps each hour's full record (every column's distance) as JSON in the
lake, for people and tools."""


import json
from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from routeaq_assets.adapters.pushgateway import push
from routeaq_assets.adapters.shared import shared_folder
from routeaq_assets.core import drift, intervals, scoring
from routeaq_assets.core.backtest import forecast_plot
from routeaq_assets.core.environment import load_settings, model_name
from routeaq_assets.core.features import MAX_HORIZON
from routeaq_assets.core.models import GATE_LEADS
from routeaq_assets.core.predictions import read_prediction_log
from routeaq_assets.core.prometheus import drift_figures, interval_figures, performance_figures
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.core.shared_folders import PREDICTIONS, report_url
from routeaq_assets.defs.features import silver_features
from routeaq_assets.defs.ingest import raw_aurn
from routeaq_assets.defs.partitions import hourly_partitions, single_run_backfill
from routeaq_assets.lake import Lake
from routeaq_assets.model_store import ModelStore
from routeaq_assets.online_store import OnlineStore
from routeaq_assets.warehouse import WarehouseResource

PLOTS = "reports/performance/plots"
# What accumulates in the lake: a drift record per pollutant and hour (a few kB) for RETAIN_DAYS, and the
# Evidently page (several MB) only for hours that drifted or were asked for, the newest MAX_HTML.
RETAIN_DAYS = 90
MAX_HTML = 24
MAX_PLOTS = 24 * len(FORECAST_POLLUTANTS)  # a day of hourly runs


ROLLING_SCORES = "rolling_scores"  # per hour, pollutant and hours ahead: the scores of the ROLLING_HOURS before it
DRIFT_HOURS = {"time": pl.Datetime("us", "UTC"), "drifted": pl.Boolean, "drifted_share": pl.Float64, "champion_version": pl.String}


def drift_hours_table(pollutant: str) -> str:
    """Each monitored hour's drift alarm for ``pollutant`` (one table per drift report asset, as
    each replaces its own hours)."""
    return f"{pollutant}_drift_hours"


def drift_folder(pollutant: str) -> str:
    return f"reports/drift/{pollutant}"


def hour_stamp(hour: datetime) -> str:
    return f"{hour:%Y-%m-%dT%H}"


def hours_of(context: dg.AssetExecutionContext) -> list[datetime]:
    window = context.partition_time_window
    count = int((window.end - window.start) / timedelta(hours=1))
    return [window.start + timedelta(hours=k) for k in range(count)]


# The drift metadata's ten most distant columns, as a table in the UI.
DRIFT_COLUMNS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("column", "string", description="feature"),
        dg.TableColumn("distance", "float", description="normalised Wasserstein distance, reference to the last 24 hours"),
        dg.TableColumn("threshold", "float", description="the feature's own threshold"),
        dg.TableColumn("drifted", "bool"),
    ]
)

def prune(lake: Lake, folder: str, suffix: str, newest: datetime, keep: int | None = None, days: int | None = None) -> int:
    """Delete the oldest files of a folder: beyond ``keep`` files, or older than ``days``."""
    keys = lake.list_keys(folder, suffix)
    doomed = keys[:-keep] if keep is not None and len(keys) > keep else []
    if days is not None:
        cutoff = hour_stamp(newest - timedelta(days=days))
        doomed += [k for k in keys if k.rsplit("/", 1)[-1][:13] < cutoff and k not in doomed and not k.endswith(("latest" + suffix,))]
    for key in doomed:
        lake.delete(key)
    return len(doomed)


def _as_of(
    warehouse: WarehouseResource, model_store: ModelStore, logged: pl.DataFrame, start: datetime, end: datetime, factors: pl.DataFrame
) -> list[pl.DataFrame]:
    """Champion forecasts at each of ``GATE_LEADS`` for the hours of [start, end) that no logged
    forecast covers, from the stored features, with the interval the service serves: stretched by
    the interval ``factors`` published now (the hourly loop scores hours just past, so these are
    the factors of their origins within a day or two; a backfill of old hours takes today's). Their
    served coverage sets ``interval_calibration``'s level. Hours the champion was trained on get
    none: they would flatter it."""
    frames = []
    registry = model_store.registry()
    for pollutant in FORECAST_POLLUTANTS:
        champion = registry.load(model_name(pollutant, model_store.prefix))
        if champion is None:
            continue
        unseen = max(start, datetime.fromisoformat(champion.metadata["holdout_start"]))
        leads = tuple(h for h in GATE_LEADS if h <= champion.forecaster.max_hours_ahead)
        if unseen >= end or not leads:
            continue
        features = warehouse.stored_features(pollutant, unseen, end, leads)
        features = features.join(scoring.missing_keys(features.select(scoring.KEY), logged), on=list(scoring.KEY), how="semi")
        for (hours_ahead,), rows in features.group_by("hours_ahead"):
            pred, lower, upper = champion.forecaster.predict(rows)
            factor = intervals.factors_for(factors, rows.select("site_id", "pollutant", "hours_ahead").with_columns(pl.Series("pred", pred)))
            frames.append(scoring.as_of_forecasts(
                rows, pred, intervals.widen(pred, lower, factor), intervals.widen(pred, upper, factor), factor, champion.name, champion.version, int(hours_ahead)
            ))
    return frames


def _plot(lake: Lake, scored: pl.DataFrame, pollutant: str, hour: datetime) -> str | None:
    """The forecast-against-observed plot of the rolling window ending with ``hour``, one file per
    partition (``reports/performance/plots/{hour}-{pollutant}.png``); its key, or None."""
    rows = scored.filter((pl.col("pollutant") == pollutant) & (pl.col("hours_ahead") == 1) & pl.col("observed").is_not_null())
    if rows.is_empty():
        return None
    site = rows["site_id"].sort()[0]
    data = forecast_plot(rows.rename({"observed": "target", "persistence": "target_lag_1"}), site, pollutant, hours=scoring.ROLLING_HOURS)
    key = f"{PLOTS}/{hour_stamp(hour)}-{pollutant}.png"
    lake.write_bytes(key, data)
    return key


@dg.asset(
    group_name="monitoring",
    partitions_def=hourly_partitions,
    backfill_policy=single_run_backfill,
    deps=[raw_aurn, silver_features, *(f"{p}_champion" for p in FORECAST_POLLUTANTS)],
    kinds={"duckdb", "polars"},
    pool="warehouse",
)
def forecast_performance(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, model_store: ModelStore, lake: Lake, online_store: OnlineStore
) -> dg.MaterializeResult:
    """Every forecast made for the partition's hours (the prediction log; as-of champion forecasts
    from the stored features where none was served, with the interval the service serves now),
    per site, pollutant and hours ahead, joined with the observation at that hour and at the
    forecast's origin (persistence); stored in
    ``forecast_scores``. Rolling RMSE, MAE, bias, 80 % coverage and skill against persistence over
    the last 72 hours, per pollutant and horizon."""
    hours = hours_of(context)
    start, end = hours[0], hours[-1] + timedelta(hours=1)
    settings = load_settings()  # the service's log: its folder, or in production its S3 prefix
    logged = scoring.logged_forecasts(read_prediction_log(settings.prediction_log_dir, start, end, shared_folder(settings, PREDICTIONS)))
    forecasts = pl.concat([logged, *_as_of(warehouse, model_store, logged, start, end, online_store.interval_factors())])
    observations = warehouse.query(
        "SELECT site_id, time, pollutant, value FROM observations WHERE time >= ? AND time < ?", [start - timedelta(hours=MAX_HORIZON), end]
    )
    scored = scoring.join_observations(forecasts, observations)
    warehouse.replace_window("forecast_scores", scored, start, end)

    window_start, _ = scoring.rolling_window(end)
    history = warehouse.query("SELECT * FROM forecast_scores WHERE time >= ? AND time < ?", [window_start - timedelta(hours=len(hours)), end])
    by_hour = []
    for hour in hours:
        w_start, w_end = scoring.rolling_window(hour + timedelta(hours=1))
        scores = scoring.rolling_scores(history.filter((pl.col("time") >= w_start) & (pl.col("time") < w_end)))
        by_hour.append(scores.with_columns(time=pl.lit(hour, dtype=pl.Datetime("us", "UTC"))))
    warehouse.replace_window(ROLLING_SCORES, pl.concat(by_hour, how="vertical_relaxed"), start, end)

    window = history.filter(pl.col("time") >= window_start)
    scores = scoring.rolling_scores(window)
    push(settings.pushgateway_url, "forecast_performance", performance_figures(scores, end), context.log)
    plots = {p: key for p in FORECAST_POLLUTANTS if (key := _plot(lake, window, p, hours[-1]))}
    prune(lake, PLOTS, ".png", hours[-1], keep=MAX_PLOTS)
    figures = {
        scoring.metadata_key(r["pollutant"], r["hours_ahead"], name): float(r[name]) if r[name] is not None else None
        for r in scores.iter_rows(named=True)
        for name in ("rmse", "mae", "bias", "coverage", "persistence_rmse", "skill")
    }
    return dg.MaterializeResult(
        metadata={
            "forecasts_scored": scored.filter(pl.col("observed").is_not_null()).height,
            "forecasts_logged": logged.height,
            "forecasts_as_of_champion": forecasts.height - logged.height,
            "rolling_hours": scoring.ROLLING_HOURS,
            # The plots first: a long list of figures follows them in the UI.
            **{f"plot_{p}": dg.MetadataValue.url(report_url(settings.service_url, key)) for p, key in plots.items()},
            "scores": dg.MetadataValue.md(scoring.scores_markdown(scores, window_start, end)),
            **{k: dg.MetadataValue.float(round(v, 4)) for k, v in figures.items() if v is not None},
        }
    )


@dg.asset(
    group_name="monitoring",
    partitions_def=hourly_partitions,
    backfill_policy=single_run_backfill,
    deps=[forecast_performance],
    kinds={"duckdb", "polars"},
)
def interval_calibration(context: dg.AssetExecutionContext, warehouse: WarehouseResource, online_store: OnlineStore) -> dg.MaterializeResult:
    """Per pollutant, hours ahead and site, the factor the champion's interval offsets are
    multiplied by so that the interval would have covered its share of the forecasts scored in
    the last 28 days (``core.intervals``: 80 %, raised by what the intervals served in them fell
    short of it, at most to 85 %), as of the end of the partition's hours;
    published beside the online panel, where the service reads it at its next refresh. A site
    with fewer than 100 scored forecasts takes its pollutant and horizon's pooled factor; with
    none, the service serves the model's interval as calibrated."""
    end = hours_of(context)[-1] + timedelta(hours=1)
    start = end - timedelta(days=intervals.WINDOW_DAYS)
    scored = scored_forecasts(warehouse, start, end)
    factors = intervals.interval_factors(scored, end)
    where = online_store.publish_interval_factors(factors)
    pooled = factors.filter((pl.col("site_id") == intervals.ALL_SITES) & pl.col("level_low").is_null())
    levels = factors.filter(pl.col("level_low").is_not_null())
    push(load_settings().pushgateway_url, "interval_calibration", interval_figures(pooled), context.log)
    table = "\n".join(
        ["| pollutant | hours ahead | pooled factor | share fitted to cover | forecasts |", "|---|---|---|---|---|"]
        + [f"| {r['pollutant']} | {r['hours_ahead']} | {r['factor']:.3f} | {r['level']:.3f} | {r['forecasts']} |" for r in pooled.iter_rows(named=True)]
    )
    context.log.info(f"interval factors as of {end.isoformat()} from {scored.height} scored forecasts, published to {where}")
    return dg.MaterializeResult(
        metadata={
            "as_of": end.isoformat(),
            "forecasts_in_window": scored.height,
            "factors": factors.height,
            "published_to": where,
            "pooled_factors": dg.MetadataValue.md(table),
            "level_adjustments": levels.height,
            **{f"factor_{r['pollutant']}_{r['hours_ahead']}h": dg.MetadataValue.float(round(r["factor"], 4)) for r in pooled.iter_rows(named=True)},
        }
    )


def scored_forecasts(warehouse: WarehouseResource, start: datetime, end: datetime) -> pl.DataFrame:
    """The stored ``forecast_scores`` of [start, end) (none before the loop first scored)."""
    if not warehouse.has_table("forecast_scores"):
        return pl.DataFrame(schema=scoring.SCORED)
    return warehouse.query("SELECT * FROM forecast_scores WHERE time >= ? AND time < ?", [start, end])


class DriftConfig(dg.Config):
    html: bool = False  # also write Evidently's page for hours that did not drift


def build_drift_report(pollutant: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{pollutant}_drift_report",
        group_name="monitoring",
        partitions_def=hourly_partitions,
        backfill_policy=single_run_backfill,
        deps=[silver_features, f"{pollutant}_champion"],
        kinds={"evidently"},
        pool="warehouse",
    )
    def drift_report(context: dg.AssetExecutionContext, config: DriftConfig, warehouse: WarehouseResource, model_store: ModelStore, lake: Lake) -> dg.MaterializeResult:
        """Drift of the pollutant's model inputs over the 24 hours ending with each partition hour
        against the champion's training rows (see ``core.drift`` for the window, thresholds and
        method); a JSON record per hour, Evidently's page when the alarm fires."""
        settings = load_settings()
        name = model_name(pollutant, model_store.prefix)
        champion = model_store.registry().load(name)
        if champion is None:
            raise dg.Failure(f"{pollutant}_drift_report: {name} has no champion yet; train and promote a model first")
        train_start, train_end = (datetime.fromisoformat(champion.metadata[k]) for k in ("train_start", "holdout_start"))
        folder = drift_folder(pollutant)
        cached = lake.read_bytes(f"{folder}/thresholds-v{champion.version}.json")
        if cached is None:
            training = warehouse.query("SELECT * FROM silver_features WHERE pollutant = ? AND time >= ? AND time < ?", [pollutant, train_start, train_end])
            thresholds = drift.calibrated_thresholds(training, drift.DRIFT_FEATURES)
            lake.write_bytes(f"{folder}/thresholds-v{champion.version}.json", json.dumps(thresholds).encode())
        else:
            thresholds = json.loads(cached)
        reference = warehouse.query(drift.reference_sample_sql(), [pollutant, train_start, train_end])
        hours = hours_of(context)
        current_all = warehouse.query(
            "SELECT * FROM silver_features WHERE pollutant = ? AND time > ? AND time <= ?",
            [pollutant, hours[0] - timedelta(hours=drift.CURRENT_WINDOW_HOURS), hours[-1]],
        )
        fired, newest_fired, alarms = 0, None, []
        for hour in hours:
            current = current_all.filter((pl.col("time") > hour - timedelta(hours=drift.CURRENT_WINDOW_HOURS)) & (pl.col("time") <= hour))
            try:
                summary = drift.feature_drift(pollutant, reference, current, thresholds=thresholds)
            except ValueError as exc:
                raise dg.Failure(f"{pollutant}_drift_report {hour.isoformat()}: {exc}") from exc
            record = {"hour": hour.isoformat(), "champion_version": champion.version, "window_hours": drift.CURRENT_WINDOW_HOURS, **json.loads(summary.to_json())}
            lake.write_bytes(f"{folder}/{hour_stamp(hour)}.json", json.dumps(record).encode())
            alarms.append({"time": hour, "drifted": summary.drifted, "drifted_share": summary.drifted_share, "champion_version": str(champion.version)})
            if summary.drifted:
                fired, newest_fired = fired + 1, (hour, current)
        # Evidently's page for the newest hour that fired (or the last hour, on request): one per
        # run, so a backfill over a drifted week writes one page, not 168.
        html_key = None
        if newest_fired is not None or config.html:
            hour, current = newest_fired or (hours[-1], current)
            html_key = f"{folder}/{hour_stamp(hour)}.html"
            lake.write_bytes(html_key, drift.evidently_html(reference, current, drift.DRIFT_FEATURES).encode())
        warehouse.replace_window(drift_hours_table(pollutant), pl.DataFrame(alarms, schema=DRIFT_HOURS), hours[0], hours[-1] + timedelta(hours=1))
        push(settings.pushgateway_url, "drift", drift_figures(pollutant, summary.drifted_share, summary.drifted, fired), context.log, pollutant=pollutant)
        prune(lake, folder, ".html", hours[-1], keep=MAX_HTML)
        prune(lake, folder, ".json", hours[-1], days=RETAIN_DAYS)
        top = [dg.TableRecord({"column": c.column, "distance": c.value, "threshold": c.threshold, "drifted": c.drifted}) for c in summary.ranked()[:10]]
        return dg.MaterializeResult(
            metadata={
                "drifted": summary.drifted,
                "drifted_share": dg.MetadataValue.float(summary.drifted_share),
                "drifted_columns": summary.drifted_columns,
                "compared_columns": summary.compared_columns,
                "share_threshold": summary.share_threshold,
                "method": summary.method,
                "threshold_rule": summary.threshold_rule,
                "window_hours": drift.CURRENT_WINDOW_HOURS,
                "hours_fired": fired,
                "champion_version": champion.version,
                "reference_rows": reference.height,
                "current_rows": summary.current_rows,
                "summary": dg.MetadataValue.md(summary.markdown()),
                "columns": dg.MetadataValue.table(records=top, schema=DRIFT_COLUMNS_SCHEMA),
                **({"report": dg.MetadataValue.url(report_url(settings.service_url, html_key))} if html_key else {}),
            }
        )

    return drift_report


drift_reports = [build_drift_report(p) for p in FORECAST_POLLUTANTS]
