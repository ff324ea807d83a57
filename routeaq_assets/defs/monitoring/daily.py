"""``daqi_verification``: every UK day's daily index forecasts, issued the day before (noon) and on
the day (06:00), scored against the index that was observed (``core.daily_verification``).

Daily partitions on UK local days (Europe/London), so a partition is the day Defra's index covers.
A partition stores its site-days in the warehouse table ``daqi_forecasts`` (forecast index and
odds, observed index, yesterday's index) and reports the scores of the last ``SCORED_DAYS`` days
pooled over sites, with the number of site-days and events each rests on. The forecasts are the
champions' as of each origin, from the stored observations and weather, with their intervals as
served: stretched by the factors (``core.intervals``) computed from the forecasts scored before
the origin; a day forecast wholly ahead (the day before) takes its odds from the daily errors
verified by its origin, as the service does. A day a champion trained on is not scored (it would
flatter the model), nor are its errors used.

After storing the day, it publishes the daily errors of the last ``DAILY_ERROR_DAYS`` verified
days beside the online panel, where the service reads them at its next refresh
(``core.daily_daqi``: the odds of tomorrow).
"""


from datetime import date, datetime, timedelta

import dagster as dg
import polars as pl

from routeaq_assets.adapters.pushgateway import push
from routeaq_assets.core import intervals
from routeaq_assets.core.daily_daqi import DAILY_ERROR_DAYS, uk_day_bounds
from routeaq_assets.core.daily_verification import (
    ISSUES,
    climatology_rates,
    daily_errors,
    daily_forecast_rows,
    format_scores,
    issue_origin,
    observed_daily_index,
    verification_scores,
    with_outcomes,
    with_verified_odds,
)
from routeaq_assets.core.environment import load_settings, model_name, partitions_start
from routeaq_assets.core.prometheus import daily_figures
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.defs.features import silver_features
from routeaq_assets.defs.ingest import raw_aurn
from routeaq_assets.defs.monitoring.assets import scored_forecasts
from routeaq_assets.model_store import ModelStore
from routeaq_assets.online_store import OnlineStore
from routeaq_assets.warehouse import WarehouseResource

daily_partitions = dg.DailyPartitionsDefinition(start_date=partitions_start()[:10], timezone="Europe/London")  # UK days, from the hours' start
CLIMATOLOGY_DAYS = 90  # observed days before the partition whose index frequencies are the climatology
SCORED_DAYS = 90  # days of stored forecasts the reported scores pool


@dg.asset(
    group_name="monitoring",
    partitions_def=daily_partitions,
    deps=[raw_aurn, silver_features, *(f"{p}_champion" for p in FORECAST_POLLUTANTS)],
    kinds={"duckdb", "polars"},
    pool="warehouse",
)
def daqi_verification(context: dg.AssetExecutionContext, warehouse: WarehouseResource, model_store: ModelStore, online_store: OnlineStore) -> dg.MaterializeResult:
    """The day's daily index forecasts (issued the day before at noon and on the day at 06:00, UK
    time) for every site, scored against the observed index: exact band, index within one, hit
    rate, false alarm ratio and CSI of Moderate or above (and index 3 or above), Brier scores
    beside climatology and persistence, and the ranked probability score."""
    day = date.fromisoformat(context.partition_key)
    start, end = uk_day_bounds(day)
    registry = model_store.registry()
    champions = {p: m for p in FORECAST_POLLUTANTS if (m := registry.load(model_name(p, model_store.prefix))) is not None}
    if not champions:
        raise dg.Failure("daqi_verification: no champion in the registry; run train_job first")
    trained_until = max(datetime.fromisoformat(m.metadata["holdout_start"]) for m in champions.values())
    panel = warehouse.stored_panel(start - timedelta(days=CLIMATOLOGY_DAYS), end)
    observed = observed_daily_index(panel, tuple(champions))
    coverage = next(iter(champions.values())).forecaster.coverage
    # The intervals as served: stretched by the factors the monitoring loop computed from the
    # forecasts scored before each origin (the same function, on the same stored scores).
    scored = scored_forecasts(warehouse, start - timedelta(days=intervals.WINDOW_DAYS + 1), end)
    forecasts = pl.concat([
        daily_forecast_rows(panel, {p: m.forecaster for p, m in champions.items()}, [day], issue, coverage=coverage,
                            factors_at=lambda as_of: intervals.interval_factors(scored, as_of, coverage=coverage))
        for issue in ISSUES
    ])
    # The stored days before this one, read once: their errors give this day's odds, and with this
    # day's rows they are the scored window.
    earlier = (
        warehouse.query(
            "SELECT * FROM daqi_forecasts WHERE time >= ? AND time < ? AND NOT champion_trained_on_it",
            [start - timedelta(days=max(SCORED_DAYS, DAILY_ERROR_DAYS + 1)), start],
        )
        if warehouse.has_table("daqi_forecasts") else pl.DataFrame()
    )
    rows = with_outcomes(with_verified_odds(forecasts, earlier), observed).with_columns(
        pl.lit(start).alias("time"),
        (pl.col("origin") < pl.lit(trained_until)).alias("champion_trained_on_it"),
        pl.lit(",".join(f"{p}:v{m.version}" for p, m in sorted(champions.items()))).alias("models"),
    )
    warehouse.replace_window("daqi_forecasts", rows, start, end)

    history = pl.concat([earlier, rows.filter(~pl.col("champion_trained_on_it"))], how="diagonal_relaxed").filter(
        pl.col("time") >= end - timedelta(days=SCORED_DAYS)
    )
    errors = daily_errors(history, end)
    where = online_store.publish_daily_errors(errors)
    context.log.info(f"daily errors of {errors.height} verified site-days as of {end.isoformat()} published to {where}")
    climatology = climatology_rates(observed.filter(pl.col("day") < day)["observed"])
    text, numbers, by_issue = [], {}, {}
    for issue in ISSUES:
        scores = by_issue[issue] = verification_scores(history.filter(pl.col("issue") == issue), climatology)
        text.append(format_scores(scores, f"issued {issue.replace('_', ' ')} ({issue_origin(day, issue):%H:%M} UTC origin for this day)"))
        numbers[f"{issue}_site_days"] = scores["site_days"]
        if scores["site_days"]:
            moderate = scores["index_4_or_above"]
            numbers.update({
                f"{issue}_exact_band": scores["exact_band"], f"{issue}_rps": scores["rps"], f"{issue}_rps_climatology": scores["rps_climatology"],
                f"{issue}_moderate_events": moderate["events"], f"{issue}_moderate_brier": moderate["brier"],
                f"{issue}_moderate_brier_climatology": moderate["brier_climatology"],
            })
    push(load_settings().pushgateway_url, "daqi_verification", daily_figures(by_issue, errors.height), context.log)
    today = rows.filter(pl.col("issue") == "day_before")
    return dg.MaterializeResult(
        metadata={
            "day": day.isoformat(),
            "sites": rows["site_id"].n_unique(),
            "forecast_index_by_site": dg.MetadataValue.md(
                "| site | forecast (day before) | P(Moderate+) | P(High+) | observed |\n|---|---|---|---|---|\n"
                + "\n".join(f"| {r['site_id']} | {r['index']} | {r['p_at_least_4']:.2f} | {r['p_at_least_7']:.2f} | {r['observed']} |" for r in today.iter_rows(named=True) if r["index"] is not None)
            ),
            "scores": dg.MetadataValue.md("\n\n".join(text)),
            "daily_errors_site_days": errors.height,
            "daily_errors_published_to": where,
            "scored_days": SCORED_DAYS,
            "scored_from": (end - timedelta(days=SCORED_DAYS)).isoformat(),
            **numbers,
        }
    )
