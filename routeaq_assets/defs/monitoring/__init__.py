"""Monitoring: forecast scoring, interval recalibration, drift per pollutant, the retraining policy's sensor and alerts."""

import dagster as dg

from routeaq_assets.core.retraining import RetrainPolicy
from routeaq_assets.defs.monitoring.alerts import monitoring_alerts
from routeaq_assets.defs.monitoring.assets import drift_reports, forecast_performance, interval_calibration
from routeaq_assets.defs.monitoring.sensors import build_retraining_sensor

monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=[forecast_performance, interval_calibration, *drift_reports],
    partitions_def=forecast_performance.partitions_def,
)

# At 50 past, score and check for drift the hour that ingest_job_schedule ingested at 20 past.
monitoring_schedule = dg.build_schedule_from_partitioned_job(monitoring_job, minute_of_hour=50, name="monitoring_schedule")


def build_monitoring(policy: RetrainPolicy = RetrainPolicy(), training_run_config: dict | None = None) -> dict:
    """The monitoring stage's definitions, with the retraining policy to apply."""
    return {
        "assets": [forecast_performance, interval_calibration, *drift_reports],
        "jobs": [monitoring_job],
        "schedules": [monitoring_schedule],
        "sensors": [build_retraining_sensor(policy, training_run_config), monitoring_alerts],
    }
