"""The RouteAQ Definitions: assembles the stages, their automation and the resources."""

import dagster as dg

from routeaq_assets.core.retraining import RetrainPolicy
from routeaq_assets.defs import evaluation, features, ingest, jobs, maintenance, serving, training
from routeaq_assets.defs.monitoring import build_monitoring
from routeaq_assets.environments import get_resources


def build_definitions(resources: dict[str, dg.ConfigurableResource], policy: RetrainPolicy = RetrainPolicy(), training_run_config: dict | None = None) -> dg.Definitions:
    monitoring = build_monitoring(policy, training_run_config)
    return dg.Definitions(
        assets=[
            ingest.site_registry,
            jobs.with_raw_freshness(ingest.raw_aurn),
            jobs.with_raw_freshness(ingest.raw_weather),
            features.silver_features,
            *training.candidates,
            *training.champions,
            serving.online_features,
            *monitoring["assets"],
            evaluation.backtest,
            evaluation.local_data_backtest,
            maintenance.lake_maintenance,
        ],
        asset_checks=training.gates,
        jobs=[jobs.registry_job, jobs.ingest_job, jobs.train_job, jobs.publish_job, maintenance.lake_maintenance_job, *monitoring["jobs"]],
        schedules=[jobs.hourly_ingest_schedule, jobs.hourly_publish_schedule, jobs.ratify_schedule, maintenance.lake_maintenance_schedule, *monitoring["schedules"]],
        sensors=monitoring["sensors"],
        resources=resources,
        # DuckDB takes one writer process: the steps of a run share this process.
        executor=dg.in_process_executor,
    )


defs = build_definitions(get_resources())
