"""The alerts sensor: reads what happened since its cursor (check evaluations, champion
decisions, forecast scores) and posts each alert-worthy event to the webhook
(``adapters.notify``; off unless ``ROUTEAQ_WEBHOOK_URL`` is set). Retrain requests are posted by the
retraining sensor when it makes them."""


import json

import dagster as dg
from dagster import DagsterEventType

from routeaq_assets.adapters.notify import notifier_from_settings
from routeaq_assets.core.environment import load_settings
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.defs.ingest_checks import CHECK_FRESHNESS, CHECK_UNIQUE_HOURS, CHECK_VALUE_RANGE
from routeaq_assets.defs.training import CHECK_GATE

BATCH = 500


def _value(metadata: dict, key: str):
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def alerts_for(entry: dg.EventLogEntry) -> list[tuple[str, str, dict]]:
    """(event, summary, figures) for one stored event; most events need no alert."""
    event = entry.dagster_event
    if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
        check = event.event_specific_data
        if check.passed:
            return []
        key = check.asset_check_key
        figures = {"asset": key.asset_key.to_user_string(), "check": key.name, "partition": check.partition, "run_id": entry.run_id}
        figures.update({k: _value(check.metadata, k) for k in check.metadata})
        if key.name == CHECK_FRESHNESS:
            return [("stale_data", f"{figures['asset']}: {check.description or 'newest observation too old'}", figures)]
        if check.severity == dg.AssetCheckSeverity.ERROR:
            return [("check_failed", f"blocking check {key.name} on {figures['asset']} failed: {check.description or ''}".strip(), figures)]
        return []
    if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
        materialization = event.event_specific_data.materialization
        asset = materialization.asset_key.to_user_string()
        metadata = {k: _value(materialization.metadata, k) for k in materialization.metadata}
        if asset.endswith("_champion"):
            verdict = "promoted" if metadata.get("promoted") else "kept the champion"
            return [("promotion_decision", f"{asset}: {verdict}: {metadata.get('reason')}", {"asset": asset, "run_id": entry.run_id, **metadata})]
        if asset == "forecast_performance":
            losing = {p: metadata[f"{p}_skill"] for p in FORECAST_POLLUTANTS if isinstance(metadata.get(f"{p}_skill"), float) and metadata[f"{p}_skill"] < 0}
            return [
                ("champion_loses_to_persistence", f"{p} champion's rolling skill against persistence is {skill:.3f}", {"pollutant": p, "skill": skill, "partition": materialization.partition})
                for p, skill in losing.items()
            ]
    return []


# What is watched: the checks that block (errors) and the freshness check, each champion's
# decision, and the forecast scores.
WATCHED_CHECKS = [
    *(dg.AssetCheckKey(dg.AssetKey(f"{p}_candidate"), CHECK_GATE) for p in FORECAST_POLLUTANTS),
    dg.AssetCheckKey(dg.AssetKey("raw_aurn"), CHECK_VALUE_RANGE),
    dg.AssetCheckKey(dg.AssetKey("raw_aurn"), CHECK_UNIQUE_HOURS),
    dg.AssetCheckKey(dg.AssetKey("raw_weather"), CHECK_UNIQUE_HOURS),
    dg.AssetCheckKey(dg.AssetKey("raw_aurn"), CHECK_FRESHNESS),
]
WATCHED_ASSETS = [*(dg.AssetKey(f"{p}_champion") for p in FORECAST_POLLUTANTS), dg.AssetKey("forecast_performance")]


def new_entries(instance: dg.DagsterInstance, cursor: dict[str, int]) -> list[tuple[str, int, dg.EventLogEntry]]:
    """(cursor key, storage id, entry) of every watched event after the cursor, oldest first."""
    found = []
    for check in WATCHED_CHECKS:
        name, seen = check.to_user_string(), cursor.get(check.to_user_string(), 0)
        history = instance.event_log_storage.get_asset_check_execution_history(check, limit=BATCH)
        found += [(name, r.id, r.event) for r in history if r.id > seen and r.event is not None and r.event.dagster_event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION]
    for asset in WATCHED_ASSETS:
        name = asset.to_user_string()
        result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset, after_storage_id=cursor.get(name, 0)), limit=BATCH, ascending=True)
        found += [(name, r.storage_id, r.event_log_entry) for r in result.records]
    return sorted(found, key=lambda f: f[2].timestamp)


@dg.sensor(name="monitoring_alerts", minimum_interval_seconds=60)
def monitoring_alerts(context: dg.SensorEvaluationContext):
    """Posts failed blocking checks, stale data, promotion decisions and a champion that loses to
    persistence to the configured webhook, each once (the cursor holds the last event read per
    check and asset)."""
    settings = load_settings()
    notifier = notifier_from_settings(settings.webhook_url, settings.webhook_token)
    cursor = json.loads(context.cursor) if context.cursor else {}
    entries = new_entries(context.instance, cursor)
    sent, failed = 0, []
    for name, storage_id, entry in entries:
        for event, summary, figures in alerts_for(entry):
            if notifier is None:
                context.log.info(f"alert {event} (no webhook configured): {summary}")
                continue
            delivery = notifier.send(event, summary, **figures)
            sent += delivery.delivered
            if not delivery.delivered:
                failed.append(f"{event} to {delivery.destination}: {delivery.error} after {delivery.attempts} attempts")
        cursor[name] = max(cursor.get(name, 0), storage_id)
    for message in failed:
        context.log.warning(f"alert not delivered: {message}")
    summary = f"{len(entries)} new events read, {sent} alerts delivered" + (f", {len(failed)} failed" if failed else "")
    return dg.SensorResult(cursor=json.dumps(cursor), skip_reason=dg.SkipReason(summary))
