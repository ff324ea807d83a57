"""routeaq_assets.adapters.retries: the one retry mechanism, and the three callers that ask an outside
service again (the HTTP sources' session, the SOS client, the alert webhook) going through it."""

import pytest

from routeaq_assets.adapters import retries
from routeaq_assets.adapters.notify import WebhookNotifier
from routeaq_assets.adapters.retries import RetryPolicy
from routeaq_assets.sources.http import make_session
from routeaq_assets.sources.sos import CircuitBreaker, SosClient


def test_waits_double_from_the_backoff_and_the_retries_are_counted():
    waits, answers = [], iter([503, 503, 503, 200])
    answer, calls = RetryPolicy(3, 0.5, retry_answer=lambda status: status >= 500).call(lambda: next(answers), sleep=waits.append)
    assert (answer, calls, waits) == (200, 4, [0.5, 1.0, 2.0])


def test_running_out_returns_the_last_answer_or_raises_the_last_error():
    waits = []
    assert RetryPolicy(2, 1.0, retry_answer=lambda status: status >= 500).call(lambda: 502, sleep=waits.append) == (502, 3)
    assert waits == [1.0, 2.0]
    calls = []

    def refused():
        calls.append(1)
        raise ConnectionError(f"refused {len(calls)}")

    with pytest.raises(ConnectionError, match="refused 3"):
        RetryPolicy(2, 0.0, errors=(ConnectionError,)).call(refused)
    assert len(calls) == 3


def test_an_error_of_another_kind_is_not_retried():
    calls = []

    def broken():
        calls.append(1)
        raise KeyError("not a passing failure")

    with pytest.raises(KeyError):
        RetryPolicy(5, 0.0, errors=(ConnectionError,)).call(broken)
    assert len(calls) == 1


def _through_the_policy(monkeypatch) -> list[int]:
    """Record each RetryPolicy.call's number of calls: a caller with a loop of its own records none."""
    seen, call = [], RetryPolicy.call

    def recorded(self, ask, sleep=retries.time.sleep):
        answer, calls = call(self, ask, sleep)
        seen.append(calls)
        return answer, calls

    monkeypatch.setattr(RetryPolicy, "call", recorded)
    return seen


def _busy_then_ok(httpserver, path: str, busy: int, method: str, ok) -> None:  # noqa: ANN001
    for _ in range(busy):
        httpserver.expect_ordered_request(path, method=method).respond_with_data("busy", status=503)
    ok(httpserver.expect_ordered_request(path, method=method))


@pytest.mark.parametrize("retries_configured", [1, 3])
def test_sos_webhook_and_source_downloads_retry_a_503_as_configured_through_the_one_policy(httpserver, tmp_path, monkeypatch, retries_configured):
    seen = _through_the_policy(monkeypatch)

    _busy_then_ok(httpserver, "/sos/api/v1/timeseries/7/getData", retries_configured, "GET", lambda r: r.respond_with_json({"values": []}))
    sos = SosClient(httpserver.url_for("/sos/api/v1/"), cache_folder=tmp_path / "sos", retries=retries_configured, backoff_s=0.01,
                    breaker=CircuitBreaker(failures=5, state_path=None))
    assert sos.get("timeseries/7/getData", {}) == {"values": []}
    httpserver.check_assertions()
    httpserver.clear()

    _busy_then_ok(httpserver, "/hook", retries_configured, "POST", lambda r: r.respond_with_data("ok"))
    delivery = WebhookNotifier(httpserver.url_for("/hook"), retries=retries_configured, backoff_s=0.01).send("stale_data", "x")
    assert (delivery.delivered, delivery.attempts, delivery.status) == (True, retries_configured + 1, 200)
    httpserver.check_assertions()
    httpserver.clear()

    _busy_then_ok(httpserver, "/R_data/AH_2017.RData", retries_configured, "GET", lambda r: r.respond_with_data(b"RDX"))
    answer = make_session(retries=retries_configured, backoff=0.01).get(httpserver.url_for("/R_data/AH_2017.RData"), timeout=5)
    assert (answer.status_code, answer.content) == (200, b"RDX")
    httpserver.check_assertions()

    assert seen == [retries_configured + 1] * 3  # each of the three asked through RetryPolicy, retries + 1 times


def test_one_503_too_many_fails_each_caller_after_its_configured_tries(httpserver, tmp_path):
    httpserver.expect_request("/sos/api/v1/timeseries/7/getData").respond_with_data("busy", status=503)
    httpserver.expect_request("/hook", method="POST").respond_with_data("busy", status=503)
    sos = SosClient(httpserver.url_for("/sos/api/v1/"), cache_folder=tmp_path / "sos", retries=2, backoff_s=0.01, breaker=CircuitBreaker(failures=5))
    with pytest.raises(Exception, match="HTTP 503 after 3 attempts"):
        sos.get("timeseries/7/getData", {})
    delivery = WebhookNotifier(httpserver.url_for("/hook"), retries=2, backoff_s=0.01).send("stale_data", "x")
    assert (delivery.delivered, delivery.attempts, delivery.status, delivery.error) == (False, 3, 503, "HTTP 503")
    assert len(httpserver.log) == 6
