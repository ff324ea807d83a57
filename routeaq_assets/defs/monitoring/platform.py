"""The ``platform_metrics`` sensor: what only Dagster knows, pushed with the batch stage's other
figures (``core.prometheus``, pushed by ``adapters.pushgateway``): failed runs by job, and whether
the newest evaluation of each watched check passed. Off, and skipped with a word, unless
``ROUTEAQ_PUSHGATEWAY_URL`` is set."""

import dagster as dg
from dagster import DagsterEventType

from routeaq_assets.adapters.pushgateway import push
from routeaq_assets.core.environment import load_settings
from routeaq_assets.core.prometheus import platform_figures
from routeaq_assets.defs.monitoring.alerts import WATCHED_CHECKS


def newest_check_results(instance: dg.DagsterInstance) -> dict[tuple[str, str, str], bool]:
    """(asset, check, severity) -> whether the newest evaluation passed, for the watched checks
    evaluated at least once."""
    results = {}
    for key in WATCHED_CHECKS:
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
        for record in history:
            event = record.event.dagster_event if record.event is not None else None
            if event is not None and event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.event_specific_data
                results[(key.asset_key.to_user_string(), key.name, evaluation.severity.value.lower())] = evaluation.passed
                break
    return results


@dg.sensor(name="platform_metrics", minimum_interval_seconds=60)
def platform_metrics(context: dg.SensorEvaluationContext):
    """Pushes failed runs by job and the watched checks' newest results to the Pushgateway."""
    url = load_settings().pushgateway_url
    if not url:
        return dg.SkipReason("ROUTEAQ_PUSHGATEWAY_URL is not set: no metrics to push")
    failed_statuses = [dg.DagsterRunStatus.FAILURE]
    failed = {
        job: context.instance.get_runs_count(dg.RunsFilter(job_name=job, statuses=failed_statuses))
        for job in (context.repository_def.job_names if context.repository_def else [])
    }
    checks = newest_check_results(context.instance)
    push(url, "dagster", platform_figures(failed, checks), context.log)
    return dg.SkipReason(f"pushed failed runs of {len(failed)} jobs ({sum(failed.values())} failed in all) and {len(checks)} check results")
