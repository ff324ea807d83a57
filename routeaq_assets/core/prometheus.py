"""The batch stage's figures for Prometheus: every figure is one of ``METRICS``, whose name, type
and help are declared once, here, for the code, the alert rules and the dashboards alike; each
stage's figures are built from what it already computed. ``adapters.pushgateway`` pushes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl
from prometheus_client import CollectorRegistry, Counter, Gauge

# name -> (type, help, label names)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "routeaq_ingest_success_timestamp_seconds": ("gauge", "When raw_aurn last stored a window without a failed site-year (Unix time)", ()),
    "routeaq_ingest_rows": ("gauge", "Observation rows the last successful ingestion stored", ()),
    "routeaq_newest_observation_timestamp_seconds": ("gauge", "The hour (its end, Unix time) of each site's newest stored observation", ("site",)),
    "routeaq_forecast_skill": ("gauge", "Rolling skill against persistence (1 - RMSE / persistence RMSE) over the scored hours", ("pollutant", "hours_ahead")),
    "routeaq_forecast_rmse": ("gauge", "Rolling RMSE of the served forecasts, ug/m3", ("pollutant", "hours_ahead")),
    "routeaq_forecast_persistence_rmse": ("gauge", "Rolling RMSE of persistence on the same hours, ug/m3", ("pollutant", "hours_ahead")),
    "routeaq_forecast_coverage": ("gauge", "Rolling share of observations inside the served 80 % interval", ("pollutant", "hours_ahead")),
    "routeaq_forecast_scored": ("gauge", "Forecasts scored in the rolling window", ("pollutant", "hours_ahead")),
    "routeaq_scored_hour_timestamp_seconds": ("gauge", "The newest hour forecast_performance scored (its end, Unix time)", ()),
    "routeaq_drift_share": ("gauge", "Share of the model's input columns that drifted in the 24 hours to the newest hour", ("pollutant",)),
    "routeaq_drift_detected": ("gauge", "1 when the newest hour's drift report fired, else 0", ("pollutant",)),
    "routeaq_drift_hours_fired": ("gauge", "Hours of the last drift run whose report fired", ("pollutant",)),
    "routeaq_interval_factor": ("gauge", "Pooled factor applied to the champion's interval offsets to hold 80 % coverage", ("pollutant", "hours_ahead")),
    "routeaq_interval_level": ("gauge", "Share of the scored window the factors are fitted to cover: 80 % plus what the served intervals fell short of it (75-85 %)", ("pollutant", "hours_ahead")),
    "routeaq_daily_site_days": ("gauge", "Site-days the daily index scores pool (the last 90 days verified)", ("issue",)),
    "routeaq_daily_rps": ("gauge", "Ranked probability score of the daily index odds over the verified days (lower is better)", ("issue",)),
    "routeaq_daily_rps_climatology": ("gauge", "Ranked probability score of climatology on the same verified days", ("issue",)),
    "routeaq_daily_brier": ("gauge", "Brier score of the probability that the daily index reaches at_least", ("issue", "at_least")),
    "routeaq_daily_deciles_missed": ("gauge", "Probability deciles of 30+ site-days whose observed share is more than 0.10 from the stated", ("issue", "at_least")),
    "routeaq_daily_errors_site_days": ("gauge", "Verified site-days whose daily errors give tomorrow's odds (under 30: the hourly draws)", ()),
    "routeaq_champion_version": ("gauge", "The registered version that holds the champion alias", ("pollutant",)),
    "routeaq_champion_trained_until_timestamp_seconds": ("gauge", "The end of the newest hour the champion trained on (Unix time)", ("pollutant",)),
    "routeaq_promotion_decision_timestamp_seconds": ("gauge", "When the last promotion decision was made (Unix time), by its outcome", ("pollutant", "decision")),
    "routeaq_retrain_requests": ("counter", "Retraining runs the policy requested, by pollutant and rule", ("pollutant", "rule")),
    "routeaq_failed_runs": ("gauge", "Failed Dagster runs recorded, by Dagster job (dagster_job: the Pushgateway's job label is the group's)", ("dagster_job",)),
    "routeaq_check_passed": ("gauge", "1 when the newest evaluation of a watched asset check passed, else 0", ("asset", "check", "severity")),
}


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


def registry_of(figures: list[Figure]) -> CollectorRegistry:
    """A registry holding ``figures``; each name must be declared in ``METRICS`` with its labels."""
    registry, made = CollectorRegistry(), {}
    for figure in figures:
        if figure.name not in METRICS:
            raise ValueError(f"undeclared metric {figure.name!r}; declare it in core.prometheus.METRICS")
        kind, documentation, labelnames = METRICS[figure.name]
        if set(figure.labels) != set(labelnames):
            raise ValueError(f"{figure.name} takes labels {labelnames}, got {tuple(figure.labels)}")
        if figure.name not in made:
            cls = Counter if kind == "counter" else Gauge
            made[figure.name] = cls(figure.name, documentation, labelnames, registry=registry)
        metric = made[figure.name].labels(**figure.labels) if labelnames else made[figure.name]
        if kind == "counter":
            metric.inc(figure.value)
        else:
            metric.set(figure.value)
    return registry


# What each stage pushes, from the figures it already computed.

def _unix(moment: datetime) -> float:
    return moment.timestamp()


def ingest_figures(rows: int, newest_by_site: dict[str, datetime], succeeded_at: datetime) -> list[Figure]:
    """``newest_by_site``: each site's newest stored observation hour (hour-beginning); the
    figure is that hour's end, when the observation was complete."""
    return [
        Figure("routeaq_ingest_success_timestamp_seconds", _unix(succeeded_at)),
        Figure("routeaq_ingest_rows", float(rows)),
        *(Figure("routeaq_newest_observation_timestamp_seconds", _unix(hour + timedelta(hours=1)), {"site": site}) for site, hour in newest_by_site.items()),
    ]


def performance_figures(scores: pl.DataFrame, scored_until: datetime) -> list[Figure]:
    """``scores``: ``core.scoring.rolling_scores``; ``scored_until``: the end of the newest hour scored."""
    columns = {"skill": "routeaq_forecast_skill", "rmse": "routeaq_forecast_rmse", "persistence_rmse": "routeaq_forecast_persistence_rmse",
               "coverage": "routeaq_forecast_coverage", "hours": "routeaq_forecast_scored"}
    figures = [Figure("routeaq_scored_hour_timestamp_seconds", _unix(scored_until))]
    for row in scores.iter_rows(named=True):
        labels = {"pollutant": row["pollutant"], "hours_ahead": str(row["hours_ahead"])}
        figures += [Figure(name, float(row[column]), labels) for column, name in columns.items() if row[column] is not None and math.isfinite(row[column])]
    return figures


def drift_figures(pollutant: str, drifted_share: float, drifted: bool, hours_fired: int) -> list[Figure]:
    labels = {"pollutant": pollutant}
    return [
        Figure("routeaq_drift_share", drifted_share, labels),
        Figure("routeaq_drift_detected", 1.0 if drifted else 0.0, labels),
        Figure("routeaq_drift_hours_fired", float(hours_fired), labels),
    ]


def interval_figures(pooled: pl.DataFrame) -> list[Figure]:
    """``pooled``: the all-sites rows of ``core.intervals.interval_factors``."""
    return [
        Figure(name, float(r[column]), {"pollutant": r["pollutant"], "hours_ahead": str(r["hours_ahead"])})
        for r in pooled.iter_rows(named=True)
        for name, column in (("routeaq_interval_factor", "factor"), ("routeaq_interval_level", "level"))
    ]


def daily_figures(scores: dict[str, dict], errors_site_days: int) -> list[Figure]:
    """``scores``: ``core.daily_verification.verification_scores`` per issue; an issue with no
    scored site-day gives its count alone."""
    figures = [Figure("routeaq_daily_errors_site_days", float(errors_site_days))]
    for issue, s in sorted(scores.items()):
        figures.append(Figure("routeaq_daily_site_days", float(s["site_days"]), {"issue": issue}))
        if not s["site_days"]:
            continue
        figures += [Figure("routeaq_daily_rps", s["rps"], {"issue": issue}), Figure("routeaq_daily_rps_climatology", s["rps_climatology"], {"issue": issue})]
        for key, event in sorted((k, v) for k, v in s.items() if k.startswith("index_") and k.endswith("_or_above")):
            labels = {"issue": issue, "at_least": key.removeprefix("index_").removesuffix("_or_above")}
            missed = sum(1 for r in event["reliability"] if r["calibrated"] is False)
            figures += [Figure("routeaq_daily_brier", event["brier"], labels), Figure("routeaq_daily_deciles_missed", float(missed), labels)]
    return figures


def champion_figures(pollutant: str, version: str | None, trained_until: datetime | None, promoted: bool, decided_at: datetime) -> list[Figure]:
    """``trained_until``: the end of the newest hour the champion trained on."""
    labels = {"pollutant": pollutant}
    figures = [Figure("routeaq_promotion_decision_timestamp_seconds", _unix(decided_at), {**labels, "decision": "promoted" if promoted else "kept"})]
    if version is not None:
        figures.append(Figure("routeaq_champion_version", float(version), labels))
    if trained_until is not None:
        figures.append(Figure("routeaq_champion_trained_until_timestamp_seconds", _unix(trained_until), labels))
    return figures


def retrain_request_figures(counts: dict[str, int]) -> list[Figure]:
    """``counts``: requests made so far, by ``pollutant/rule`` (kept in the sensor's cursor)."""
    return [Figure("routeaq_retrain_requests", float(n), dict(zip(("pollutant", "rule"), key.split("/", 1)))) for key, n in sorted(counts.items())]


def platform_figures(failed_runs: dict[str, int], checks: dict[tuple[str, str, str], bool]) -> list[Figure]:
    """``failed_runs`` by job; ``checks``: (asset, check, severity) -> whether its newest evaluation passed."""
    return [
        *(Figure("routeaq_failed_runs", float(n), {"dagster_job": job}) for job, n in sorted(failed_runs.items())),
        *(Figure("routeaq_check_passed", 1.0 if passed else 0.0, {"asset": a, "check": c, "severity": s}) for (a, c, s), passed in sorted(checks.items())),
    ]
