"""RouteAQ's Grafana dashboards, written as provisioned JSON into ``dashboards/``.

    python deploy/grafana/dashboards.py      # after changing a panel; commit the JSON with it

Each panel is one PromQL query over the figures the service serves at /metrics and the batch
stage pushes (routeaq_assets/core/prometheus.py). tests/test_prometheus.py runs every query
against a real Prometheus fed by a real service and Pushgateway, and checks that the JSON here is
what this file writes. Grafana's variables in a query: ``$pollutant``, ``$hours_ahead`` (regular
expressions over the labels) and ``$__rate_interval``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "prometheus", "uid": "routeaq-prometheus"}
SERVICE = 'service_name="routeaq"'
FORECAST = 'pollutant=~"$pollutant", hours_ahead=~"$hours_ahead"'


@dataclass(frozen=True)
class Panel:
    title: str
    expr: str
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    legend: str = ""
    description: str = ""
    width: int = 12


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[str, ...] = ()


DASHBOARDS = (
    Dashboard(
        "routeaq-overview",
        "RouteAQ: overview",
        "Is the platform answering, is its data fresh, are its forecasts better than persistence?",
        (
            Panel("Services ready", "sum(routeaq_model_loaded)", kind="stat", width=6, description="Service pods with a champion loaded"),
            Panel("Newest observation age", "time() - max(routeaq_newest_observation_timestamp_seconds)", "s", "stat", width=6),
            Panel("Since the last successful ingestion", "time() - routeaq_ingest_success_timestamp_seconds", "s", "stat", width=6),
            Panel("Firing alerts", 'count(ALERTS{alertstate="firing", alertname=~"RouteAQ.*"}) or vector(0)', kind="stat", width=6),
            Panel("Skill against persistence at 1, 6, 24 and 48 h", 'routeaq_forecast_skill{hours_ahead=~"1|6|24|48"}', "percentunit", legend="{{pollutant}} {{hours_ahead}} h"),
            Panel("Requests per second by status", f"sum by (http_response_code) (rate(bentoml_service_request_total{{{SERVICE}}}[$__rate_interval]))", "reqps", legend="{{http_response_code}}"),
        ),
    ),
    Dashboard(
        "routeaq-forecast-quality",
        "RouteAQ: forecast quality by pollutant and horizon",
        "Rolling scores of every served forecast against what was observed (forecast_performance).",
        (
            Panel("Skill against persistence", f"routeaq_forecast_skill{{{FORECAST}}}", "percentunit", legend="{{pollutant}} {{hours_ahead}} h", description="1 - RMSE / persistence RMSE; below 0 loses to persistence"),
            Panel("RMSE", f"routeaq_forecast_rmse{{{FORECAST}}}", "conμgm3", legend="{{pollutant}} {{hours_ahead}} h"),
            Panel("Persistence RMSE on the same hours", f"routeaq_forecast_persistence_rmse{{{FORECAST}}}", "conμgm3", legend="{{pollutant}} {{hours_ahead}} h"),
            Panel("80 % interval coverage", f"routeaq_forecast_coverage{{{FORECAST}}}", "percentunit", legend="{{pollutant}} {{hours_ahead}} h", description="Aim 80 %; the alert fires outside 75-85 %"),
            Panel("Interval factors", f"routeaq_interval_factor{{{FORECAST}}}", legend="{{pollutant}} {{hours_ahead}} h", description="What interval_calibration multiplies the champion's interval offsets by"),
            Panel("Share the factors are fitted to cover", f"routeaq_interval_level{{{FORECAST}}}", "percentunit", legend="{{pollutant}} {{hours_ahead}} h", description="80 % plus what the intervals served in the last 28 days fell short of it; at 85 % they missed by 5 points or more"),
            Panel("Forecasts scored in the window", f"routeaq_forecast_scored{{{FORECAST}}}", legend="{{pollutant}} {{hours_ahead}} h"),
        ),
        ("pollutant", "hours_ahead"),
    ),
    Dashboard(
        "routeaq-daily-index",
        "RouteAQ: the daily index, verified",
        "Each UK day's index forecasts (issued at noon the day before and at 06:00 on the day) scored against the observed index over the last 90 days (daqi_verification).",
        (
            Panel("Ranked probability score of the odds", "routeaq_daily_rps", legend="{{issue}}", description="Over the ten indices; lower is better"),
            Panel("Ranked probability score of climatology, same days", "routeaq_daily_rps_climatology", legend="{{issue}}", description="The odds should stay below this"),
            Panel("Brier score of index 3 and 4 or above", "routeaq_daily_brier", legend="{{issue}} >= {{at_least}}"),
            Panel("Probability deciles off by more than 0.10", "routeaq_daily_deciles_missed", legend="{{issue}} >= {{at_least}}", description="Deciles of 30+ site-days; a calibrated forecast misses some by chance"),
            Panel("Site-days scored", "routeaq_daily_site_days", legend="{{issue}}"),
            Panel("Verified site-days behind tomorrow's odds", "routeaq_daily_errors_site_days", kind="stat", description="Under 30: tomorrow's odds come from the hourly intervals"),
        ),
    ),
    Dashboard(
        "routeaq-drift",
        "RouteAQ: drift",
        "Drift of each model's inputs over the last 24 hours against its training rows (the drift reports).",
        (
            Panel("Share of input columns drifted", 'routeaq_drift_share{pollutant=~"$pollutant"}', "percentunit", legend="{{pollutant}}"),
            Panel("Drift detected", 'routeaq_drift_detected{pollutant=~"$pollutant"}', legend="{{pollutant}}", description="1 while the newest report fires; held 3 h, it asks for a retrain"),
            Panel("Hours fired in the last run", 'routeaq_drift_hours_fired{pollutant=~"$pollutant"}', legend="{{pollutant}}"),
            Panel("Retrain requests by rule, last 7 days", 'increase(routeaq_retrain_requests_total{pollutant=~"$pollutant"}[7d])', legend="{{pollutant}} {{rule}}"),
        ),
        ("pollutant",),
    ),
    Dashboard(
        "routeaq-freshness",
        "RouteAQ: data freshness by site",
        "How old each site's newest observation is, in the warehouse and in what the service serves.",
        (
            Panel("Newest stored observation age, by site", "time() - routeaq_newest_observation_timestamp_seconds", "s", legend="{{site}}"),
            Panel("Served history age, by site", "max by (site) (routeaq_newest_observation_age_hours)", "h", legend="{{site}}"),
            Panel("Rows stored by the last ingestion", "routeaq_ingest_rows", kind="stat", width=6),
            Panel("Since the last successful ingestion", "time() - routeaq_ingest_success_timestamp_seconds", "s", "stat", width=6),
            Panel("Error checks failing", 'count(routeaq_check_passed{severity="error"} == 0) or vector(0)', kind="stat", width=6),
            Panel("Warning checks failing", 'count(routeaq_check_passed{severity="warn"} == 0) or vector(0)', kind="stat", width=6),
        ),
    ),
    Dashboard(
        "routeaq-training",
        "RouteAQ: training and promotion",
        "Which version is champion, how old its data is, what each promotion decided, which runs failed.",
        (
            Panel("Champion version", "routeaq_champion_version", kind="stat", legend="{{pollutant}}"),
            Panel("Champion's training data age", "time() - routeaq_champion_trained_until_timestamp_seconds", "s", legend="{{pollutant}}"),
            Panel("Since the last promotion decision", "time() - routeaq_promotion_decision_timestamp_seconds", "s", legend="{{pollutant}} {{decision}}"),
            Panel("Failed runs in the last 24 h, by job", "increase(routeaq_failed_runs[24h])", legend="{{dagster_job}}"),
            Panel("Served versions", "max by (pollutant, version) (routeaq_model_version_info) == 1", kind="stat", legend="{{pollutant}} v{{version}}"),
            Panel("Retrain requests, last 7 days", "sum by (pollutant) (increase(routeaq_retrain_requests_total[7d]))", legend="{{pollutant}}"),
        ),
    ),
    Dashboard(
        "routeaq-serving",
        "RouteAQ: serving",
        "The forecast service as BentoML and RouteAQ report it at /metrics.",
        (
            Panel("Requests per second by endpoint", f"sum by (endpoint) (rate(bentoml_service_request_total{{{SERVICE}}}[$__rate_interval]))", "reqps", legend="{{endpoint}}"),
            Panel("Share of 5xx answers", f'(sum(rate(bentoml_service_request_total{{{SERVICE}, http_response_code=~"5.."}}[$__rate_interval])) or vector(0)) / sum(rate(bentoml_service_request_total{{{SERVICE}}}[$__rate_interval]))', "percentunit"),
            Panel("p99 latency", f"histogram_quantile(0.99, sum by (le) (rate(bentoml_service_request_duration_seconds_bucket{{{SERVICE}}}[$__rate_interval])))", "s", legend="p99"),
            Panel("Requests in progress", f"sum(bentoml_service_request_in_progress{{{SERVICE}}})"),
            Panel("Forecast values served, by pollutant", "sum by (pollutant) (rate(routeaq_prediction_value_count[$__rate_interval]))", "reqps", legend="{{pollutant}}"),
            Panel("Readiness problems", "routeaq_serving_problems == 1 or vector(0)", kind="stat", legend="{{problem}}"),
        ),
    ),
)


def _variable(name: str) -> dict:
    label = {"pollutant": "pollutant", "hours_ahead": "hours_ahead"}[name]
    return {
        "name": name,
        "label": name.replace("_", " "),
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": f"label_values(routeaq_forecast_skill, {label})", "refId": name},
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
        "sort": 3,
    }


def _panel(panel: Panel, index: int, x: int, y: int) -> dict:
    height = 4 if panel.kind == "stat" else 8
    return {
        "id": index + 1,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": height},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if panel.kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [{"datasource": DATASOURCE, "expr": panel.expr, "legendFormat": panel.legend, "refId": "A"}],
    }


def dashboard_json(dashboard: Dashboard) -> dict:
    panels, x, y, row_height = [], 0, 0, 0
    for index, panel in enumerate(dashboard.panels):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel(panel, index, x, y))
        x, row_height = x + panel.width, max(row_height, panels[-1]["gridPos"]["h"])
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["routeaq"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-2d", "to": "now"},
        "templating": {"list": [_variable(v) for v in dashboard.variables]},
        "panels": panels,
    }


def rendered() -> dict[str, str]:
    """File name -> the JSON text, for every dashboard."""
    return {f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2, ensure_ascii=False) + "\n" for d in DASHBOARDS}


if __name__ == "__main__":
    for name, text in rendered().items():
        (HERE / "dashboards" / name).write_text(text)
        print(f"wrote deploy/grafana/dashboards/{name}")
