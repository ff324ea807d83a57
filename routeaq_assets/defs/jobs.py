"""Jobs and the schedules that run them. The monitoring stage's sensors live in defs/monitoring."""

from datetime import timedelta

import dagster as dg

from routeaq_assets.defs.features import silver_features
from routeaq_assets.defs.ingest import raw_aurn, raw_weather
from routeaq_assets.defs.partitions import hourly_partitions
from routeaq_assets.defs.serving import online_features
from routeaq_assets.defs.training import candidates, champions

# A source that fails (an HTTP 5xx after the client's own retries, a file not yet published) is
# tried again after 2, 4 and 8 minutes before the hour's run fails.
SOURCE_RETRY = dg.RetryPolicy(max_retries=3, delay=120, backoff=dg.Backoff.EXPONENTIAL)

ingest_job = dg.define_asset_job(
    "ingest_job", selection=[raw_aurn, raw_weather, silver_features], partitions_def=hourly_partitions, op_retry_policy=SOURCE_RETRY
)
train_job = dg.define_asset_job(
    "train_job", selection=dg.AssetSelection.assets(*candidates, *champions, online_features)
)

publish_job = dg.define_asset_job("publish_job", selection=[online_features])

# Ingest each hour at 20 past, once its data can be published, and hand the service the new
# history at 40 past. Both are stopped by default: switch them on in the UI.
hourly_ingest_schedule = dg.build_schedule_from_partitioned_job(ingest_job, minute_of_hour=20)
hourly_publish_schedule = dg.ScheduleDefinition(name="publish_schedule", job=publish_job, cron_schedule="40 * * * *", execution_timezone="UTC")

# The raw assets are stale when the newest hour was materialized more than two hours ago (a
# warning after 90 minutes): the schedule ingests every hour at 20 past.
RAW_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=2), warn_window=timedelta(minutes=90))


def with_raw_freshness(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    return assets_def.map_asset_specs(lambda spec: spec.replace_attributes(freshness_policy=RAW_FRESHNESS))
