"""``subscription_alerts``: after each new forecast, the alerts due to people who subscribed
(``core.subscriptions`` holds the rules), sent and recorded so that a rerun sends nothing twice.

The forecasts are asked of the forecast service itself (``POST {service_url}/predict/daily`` per
subscribed site), so an alert says what the forecast page shows and every hourly forecast behind
it is in the prediction log. A delivery that fails (a webhook down, the SMTP server away) is
counted and not recorded: the next run tries again. The run fails only when the forecast service
cannot answer, since then nothing can be judged.

The trigger: ``subscription_alerts_sensor`` asks the service's ``GET /health`` every minute for
the forecast it serves (its newest observed hour, the origin of every forecast, and the champion
versions) and requests one run per new forecast (the run key and the cursor are that pair). This
watches what people see rather than the publishing asset, whose snapshot the service picks up
only at its next refresh, and /health computes no forecast (``/api/sites`` computes the whole
overview).
"""

import json
from collections import Counter
from datetime import datetime, timedelta, timezone

import dagster as dg
import requests

from routeaq_assets.adapters.alert_delivery import deliver, smtp_settings
from routeaq_assets.adapters.subscription_store import subscription_store
from routeaq_assets.core.environment import load_settings
from routeaq_assets.core.subscriptions import CHANNELS, PENDING_HOURS, DayForecast, alert_message, due_alerts, new_token

TIMEOUT_S = 60.0


def daily_forecasts(service_url: str, sites: list[str], log) -> tuple[list[DayForecast], set[str]]:  # noqa: ANN001 - a Dagster logger
    """Each site's today and tomorrow from the forecast service, and the origins they start from.
    A site the service no longer serves (404) is skipped with a warning; any other failure fails."""
    forecasts, origins = [], set()
    for site in sites:
        try:
            response = requests.post(f"{service_url.rstrip('/')}/predict/daily", json={"site_id": site}, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise dg.Failure(f"the forecast service at {service_url} did not answer POST /predict/daily ({type(exc).__name__}): no alert can be judged") from None
        if response.status_code == 404:
            log.warning(f"site {site} is no longer served: its subscribers get no alert for it")
            continue
        if response.status_code != 200:
            raise dg.Failure(f"the forecast service at {service_url} answered POST /predict/daily for {site} with {response.status_code}: {response.text[:300]}")
        answer = response.json()
        origins.add(answer["origin"])
        forecasts += [DayForecast.from_answer(answer["site_id"], day) for day in answer["days"]]
    return forecasts, origins


@dg.asset(group_name="monitoring", kinds={"python"})
def subscription_alerts(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Alerts for confirmed subscriptions whose sites' daily index today or tomorrow reaches their
    band (the forecast index, or a probability of at least 0.5), once per subscription, site and
    day, and once more each time that day's band rises; subscriptions left unconfirmed for 48 hours
    are deleted first."""
    settings = load_settings()
    store = subscription_store(settings)
    expired = store.expire_pending(datetime.now(timezone.utc) - timedelta(hours=PENDING_HOURS))
    subscriptions = store.confirmed()
    sites = sorted({site for subscription in subscriptions for site in subscription.sites})
    forecasts, origins = daily_forecasts(settings.service_url, sites, context.log)
    sent = store.sent_bands(sorted({f.day for f in forecasts}))
    smtp = smtp_settings(settings)
    delivered, failed, skipped, rows = Counter(), 0, 0, []
    for subscription in subscriptions:
        due, already = due_alerts(subscription, forecasts, sent)
        skipped += already
        for alert in due:
            token, hashed = new_token()
            delivery = deliver(subscription.channel, subscription.destination, alert_message(alert, settings.service_url, token), smtp, settings.alerts_allow_loopback)
            if not delivery.delivered:
                failed += 1
                context.log.warning(f"subscription {subscription.id}: {alert.band} alert for {alert.site_id} on {alert.day} not delivered ({delivery.error}); the next run tries again")
                continue
            store.record_sent(alert, hashed)
            delivered[subscription.channel] += 1
            rows.append(f"| {subscription.id} | {subscription.channel} | {alert.site_id} | {alert.day} | {alert.band} | {alert.index} | {alert.probability:.2f} |")
    return dg.MaterializeResult(
        metadata={
            "forecast_origin": ", ".join(sorted(origins)) or "none (no confirmed subscription)",
            "subscriptions_confirmed": len(subscriptions),
            "subscriptions_expired_unconfirmed": expired,
            "sites_forecast": len(sites),
            **{f"alerts_sent_{channel}": delivered[channel] for channel in CHANNELS},
            "deliveries_failed": failed,
            "skipped_already_sent": skipped,
            "alerts": dg.MetadataValue.md("| subscription | channel | site | day | band | index | probability |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows)),
        }
    )


subscription_alerts_job = dg.define_asset_job("subscription_alerts_job", selection=[subscription_alerts])


@dg.sensor(name="subscription_alerts_sensor", job=subscription_alerts_job, minimum_interval_seconds=60)
def subscription_alerts_sensor(context: dg.SensorEvaluationContext):
    """One ``subscription_alerts`` run per new forecast served (newest observed hour and champion
    versions, from the forecast service's ``GET /health``)."""
    url = load_settings().service_url.rstrip("/")
    try:
        response = requests.get(f"{url}/health", timeout=10)
    except requests.RequestException as exc:
        return dg.SkipReason(f"the forecast service at {url} did not answer GET /health ({type(exc).__name__})")
    status = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200 or not status.get("newest_observation"):
        return dg.SkipReason(f"the forecast service at {url} serves no forecast ({response.status_code}: {status.get('reason') or status.get('status')})")
    forecast = json.dumps({"origin": status["newest_observation"], "models": status["models"]}, sort_keys=True)
    if forecast == context.cursor:
        return dg.SkipReason(f"no new forecast since the one from {status['newest_observation']}")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=forecast)], cursor=forecast)
