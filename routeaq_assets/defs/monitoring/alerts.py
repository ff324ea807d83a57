"""The alerts sensor: reads what happened since its cursor (check evaluations, champion
decisions, forecast scores) and posts each alert-worthy event to the webhook
(``core.notify``; off unless ``ROUTEAQ_WEBHOOK_URL`` is set). Retrain requests are posted by the
retraining sensor when it makes them."""


import dagster as dg
from dagster import DagsterEventType

from routeaq_assets.core.environment import load_settings
from routeaq_assets.core.notify import notifier_from_settings
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.defs.ingest import CHECK_FRESHNESS

BATCH = 500


def _value(metadata: dict, key: str):
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def alerts_for(record: dg.EventLogRecord) -> list[tuple[str, str, dict]]:
    """(event, summary, figures) for one stored event; most events need no alert."""
    entry = record.event_log_entry
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


@dg.sensor(name="monitoring_alerts", minimum_interval_seconds=60)
def monitoring_alerts(context: dg.SensorEvaluationContext):
    """Posts failed blocking checks, stale data, promotion decisions and a champion that loses to
    persistence to the configured webhook, each once (the cursor is the last event read)."""
    settings = load_settings()
    notifier = notifier_from_settings(settings.webhook_url, settings.webhook_token)
    after = int(context.cursor) if context.cursor else 0
    records, cap = [], None
    for event_type in (DagsterEventType.ASSET_CHECK_EVALUATION, DagsterEventType.ASSET_MATERIALIZATION):
        batch = context.instance.get_event_records(dg.EventRecordsFilter(event_type=event_type, after_cursor=after), limit=BATCH, ascending=True)
        records += batch
        if len(batch) == BATCH:  # more to read: stop where this batch ends, so nothing is skipped
            cap = min(cap or batch[-1].storage_id, batch[-1].storage_id)
    records = sorted((r for r in records if cap is None or r.storage_id <= cap), key=lambda r: r.storage_id)
    sent, failed = 0, []
    for record in records:
        for event, summary, figures in alerts_for(record):
            if notifier is None:
                context.log.info(f"alert {event} (no webhook configured): {summary}")
                continue
            delivery = notifier.send(event, summary, **figures)
            sent += delivery.delivered
            if not delivery.delivered:
                failed.append(f"{event} to {delivery.destination}: {delivery.error} after {delivery.attempts} attempts")
    cursor = str(records[-1].storage_id) if records else context.cursor
    for message in failed:
        context.log.warning(f"alert not delivered: {message}")
    return dg.SensorResult(cursor=cursor, skip_reason=dg.SkipReason(f"{len(records)} new events read, {sent} alerts delivered" + (f", {len(failed)} failed" if failed else "")))
