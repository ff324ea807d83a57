"""Monitoring: forecast scoring, interval recalibration, drift per pollutant, the retraining policy's sensor, alerts, the platform's metrics and the alerts people subscribe to."""

import dagster as dg

from routeaq_assets.core.retraining import RetrainPolicy
from routeaq_assets.defs.monitoring.alerts import monitoring_alerts
from routeaq_assets.defs.monitoring.assets import drift_reports, forecast_performance, interval_calibration
from routeaq_assets.defs.monitoring.daily import daqi_verification
from routeaq_assets.defs.monitoring.platform import platform_metrics
from routeaq_assets.defs.monitoring.sensors import build_retraining_sensor
from routeaq_assets.defs.monitoring.subscriptions import subscription_alerts, subscription_alerts_job, subscription_alerts_sensor

monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=[forecast_performance, interval_calibration, *drift_reports],
)

# At 50 past, score and check for drift the hour that ingest_job_schedule ingested at 20 past.
monitoring_schedule = dg.build_schedule_from_partitioned_job(monitoring_job, minute_of_hour=50, name="monitoring_schedule")

# Each UK day's daily index forecasts scored once the day is over and ingested (01:30 UK time).
daily_verification_job = dg.define_asset_job("daily_verification_job", selection=[daqi_verification])
daily_verification_schedule = dg.build_schedule_from_partitioned_job(
    daily_verification_job, hour_of_day=1, minute_of_hour=30, name="daily_verification_schedule"
)


def build_monitoring(policy: RetrainPolicy = RetrainPolicy(), training_run_config: dict | None = None) -> dict:
    """The monitoring stage's definitions, with the retraining policy to apply."""
    return {
        "assets": [forecast_performance, interval_calibration, *drift_reports, daqi_verification, subscription_alerts],
        "jobs": [monitoring_job, daily_verification_job, subscription_alerts_job],
        "schedules": [monitoring_schedule, daily_verification_schedule],
        "sensors": [build_retraining_sensor(policy, training_run_config), monitoring_alerts, platform_metrics, subscription_alerts_sensor],
    }
