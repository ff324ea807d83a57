"""Webhook alerts against a local HTTP server: the JSON posted, retries, no secret in what is
logged or returned, off unless configured."""

import json

import dagster as dg
import pytest
from werkzeug import Response

from routeaq_assets.adapters.notify import WebhookNotifier
from routeaq_assets.defs.monitoring.alerts import monitoring_alerts

TOKEN = "s3cret-token"


def test_a_post_is_retried_after_server_errors_and_carries_the_token_only_in_its_header(httpserver):
    httpserver.expect_ordered_request("/hooks/abc", method="POST").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/hooks/abc", method="POST").respond_with_data("busy", status=502)
    httpserver.expect_ordered_request("/hooks/abc", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}).respond_with_data("ok")
    notifier = WebhookNotifier(httpserver.url_for("/hooks/abc?key=hidden"), TOKEN, retries=3, backoff_s=0.01)
    delivery = notifier.send("retrain_requested", "no2: retrain requested by the drift rule", pollutant="no2", rule="drift")
    assert (delivery.delivered, delivery.attempts, delivery.status) == (True, 3, 200)
    body = json.loads(httpserver.log[-1][0].get_data())
    assert body["event"] == "retrain_requested" and body["pollutant"] == "no2" and body["source"] == "routeaq"
    shown = f"{delivery} {notifier!r}"
    assert TOKEN not in shown and "hooks" not in shown and "hidden" not in shown
    httpserver.check_assertions()


def test_a_rejected_post_is_not_retried_and_an_unreachable_one_fails_after_its_retries(httpserver):
    httpserver.expect_request("/hook").respond_with_data("bad", status=400)
    rejected = WebhookNotifier(httpserver.url_for("/hook"), retries=3, backoff_s=0.01).send("stale_data", "x")
    assert (rejected.delivered, rejected.attempts, rejected.status) == (False, 1, 400)
    httpserver.clear()
    gone = WebhookNotifier("http://127.0.0.1:9/hook", retries=2, backoff_s=0.01, timeout_s=1).send("stale_data", "x")
    assert (gone.delivered, gone.attempts) == (False, 3)
    with pytest.raises(ValueError, match="unknown alert event"):
        WebhookNotifier(httpserver.url_for("/hook")).send("anything", "x")


def test_the_alerts_sensor_posts_failed_checks_stale_data_promotions_and_a_losing_champion_once(httpserver, monkeypatch):
    received = []

    def handler(request):
        received.append(json.loads(request.get_data()))
        return Response("ok")

    httpserver.expect_request("/alerts", method="POST").respond_with_handler(handler)
    monkeypatch.setenv("ROUTEAQ_WEBHOOK_URL", httpserver.url_for("/alerts"))
    monkeypatch.setenv("ROUTEAQ_WEBHOOK_TOKEN", TOKEN)
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(asset_key=dg.AssetKey("no2_candidate"), check_name="beats_persistence", passed=False,
                                    severity=dg.AssetCheckSeverity.ERROR, description="RMSE 5.1 does not beat persistence 4.9", metadata={"rmse": 5.1})
        )
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(asset_key=dg.AssetKey("raw_aurn"), check_name="newest_hour_is_recent", passed=False,
                                    severity=dg.AssetCheckSeverity.WARN, description="newest observation is 9 h old", metadata={"age_hours": 9.0})
        )
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(asset_key=dg.AssetKey("raw_aurn"), check_name="no_frozen_values", passed=False, severity=dg.AssetCheckSeverity.WARN)
        )
        instance.report_runless_asset_event(
            dg.AssetMaterialization("no2_champion", metadata={"promoted": False, "reason": "RMSE 4.0 does not beat champion 3.9 by 1%", "champion_version": "1"})
        )
        instance.report_runless_asset_event(
            dg.AssetMaterialization("forecast_performance", partition="2025-08-01-11:00", metadata={"pm25_skill": -0.12, "no2_skill": 0.2})
        )
        result = monitoring_alerts.evaluate_tick(dg.build_sensor_context(instance=instance))
        again = monitoring_alerts.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert [a["event"] for a in received] == ["check_failed", "stale_data", "promotion_decision", "champion_loses_to_persistence"]
    assert received[0]["check"] == "beats_persistence" and received[0]["rmse"] == 5.1
    assert received[2]["promoted"] is False and "does not beat champion" in received[2]["summary"]
    assert received[3]["pollutant"] == "pm25" and received[3]["skill"] == -0.12
    assert "4 alerts delivered" in result.skip_message and "0 alerts delivered" in again.skip_message
    assert TOKEN not in json.dumps(received)


def test_alerts_are_off_unless_a_url_is_configured(httpserver, monkeypatch):
    monkeypatch.delenv("ROUTEAQ_WEBHOOK_URL", raising=False)
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("pm25_champion", metadata={"promoted": True, "reason": "better"}))
        result = monitoring_alerts.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert "0 alerts delivered" in result.skip_message and httpserver.log == []
