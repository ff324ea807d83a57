"""Jobs and the schedules that run them. The monitoring stage's sensors live in defs/monitoring."""

from datetime import timedelta, timezone

import dagster as dg

from routeaq_assets.core.environment import load_settings
from routeaq_assets.defs.features import silver_features
from routeaq_assets.defs.ingest import raw_aurn, raw_weather, site_registry
from routeaq_assets.defs.serving import online_features
from routeaq_assets.defs.training import candidates, champions

registry_job = dg.define_asset_job("registry_job", selection=[site_registry])
ingest_job = dg.define_asset_job(
    "ingest_job", selection=[raw_aurn, raw_weather, silver_features]
)
train_job = dg.define_asset_job(
    "train_job", selection=dg.AssetSelection.assets(*candidates, *champions, online_features)
)

publish_job = dg.define_asset_job("publish_job", selection=[online_features])

# Ingest each hour at 20 past, once its data can be published, and hand the service the new
# history at 40 past. Both are stopped by default: switch them on in the UI.
LIVE_CATCH_UP_HOURS = 6  # a live feed publishes some hours late: each hourly run reads the last few again


def _partition_key(hour) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


@dg.schedule(name="ingest_job_schedule", job=ingest_job, cron_schedule="20 * * * *", execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED)
def hourly_ingest_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """The hour that just ended; with a live feed (``ROUTEAQ_LIVE``) the last
    ``LIVE_CATCH_UP_HOURS`` hours, so an hour the feed published late is filled an hour later."""
    settings = load_settings()
    newest = context.scheduled_execution_time.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    if not settings.live:
        return dg.RunRequest(run_key=_partition_key(newest), partition_key=_partition_key(newest))
    first = newest - timedelta(hours=min(LIVE_CATCH_UP_HOURS, settings.live_hours) - 1)
    return dg.RunRequest(
        run_key=f"live-{_partition_key(newest)}",
        tags={"dagster/asset_partition_range_start": _partition_key(first), "dagster/asset_partition_range_end": _partition_key(newest)},
    )


hourly_publish_schedule = dg.ScheduleDefinition(name="publish_schedule", job=publish_job, cron_schedule="40 * * * *", execution_timezone="UTC")

# The raw assets are stale when the newest hour was materialized more than two hours ago (a
# warning after 90 minutes): the schedule ingests every hour at 20 past.
RAW_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=2), warn_window=timedelta(minutes=90))

@dg.schedule(name="ratify_schedule", job=ingest_job, cron_schedule="30 6 * * *", execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED)
def ratify_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Once a day (after the archive files are rebuilt), re-ingest the 24 hours that have just
    left the live window (``ROUTEAQ_LIVE_HOURS``; without a live feed, the last 24 hours) from
    the archives: their values replace the provisional live ones by key, ``rows_changed`` counts
    them, and the features that read those hours are rebuilt."""
    settings = load_settings()
    now = context.scheduled_execution_time.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    end = now - timedelta(hours=settings.live_hours if settings.live else 0)
    start = end - timedelta(hours=24)
    return dg.RunRequest(
        run_key=f"ratify-{_partition_key(start)}",
        tags={
            "dagster/asset_partition_range_start": _partition_key(start),
            "dagster/asset_partition_range_end": _partition_key(end - timedelta(hours=1)),
            "routeaq/trigger": "ratify",
        },
    )


def with_raw_freshness(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    return assets_def.map_asset_specs(lambda spec: spec.replace_attributes(freshness_policy=RAW_FRESHNESS))
