"""Serving faults: client input at the edges of what the schema accepts, broken stores, access.

Each test here tries one fault and asserts the protection that answers it (see
docs/reliability.md, section Serving)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from routeaq_assets.core.environment import Settings, load_settings
from routeaq_serving.forecasts import ForecastError, Forecasts
from routeaq_serving.schemas import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, PredictRequest

UTC = timezone.utc
# Every fixed UTC offset a timestamp may carry (ISO 8601 allows up to 23:59 either way).
OFFSETS = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-(24 * 60 - 1), 24 * 60 - 1))
# Whole hours over Python's whole datetime range, in any offset: what a JSON client can send.
ANY_TIMESTAMP = st.datetimes(min_value=datetime.min, max_value=datetime.max, timezones=OFFSETS).map(
    lambda t: t.replace(minute=0, second=0, microsecond=0)
)


def settings_for(home, **env) -> Settings:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROUTEAQ_HOME", str(home))
        patch.delenv("ROUTEAQ_ONLINE_STORE", raising=False)
        for key, value in env.items():
            patch.setenv(key, value)
        return load_settings()


@pytest.fixture(scope="module")
def forecasts(trained_home) -> Forecasts:
    service = Forecasts(settings_for(trained_home))
    assert service.refresh(), service._reason
    return service


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(timestamp=ANY_TIMESTAMP)
def test_any_timestamp_is_accepted_in_range_or_refused_naming_the_field(timestamp):
    """Parsed from JSON as a client sends it: either a UTC hour within the stated bounds, or a
    validation error on ``timestamp`` (a 422), never an exception that would be a 500."""
    body = {"site_id": "CLL2", "timestamp": timestamp.isoformat()}
    try:
        request = PredictRequest.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        assert [e["loc"] for e in exc.errors()] == [("timestamp",)]
        (error,) = exc.errors()
        assert "between 1900-01-01T00:00:00Z and 2199-12-31T23:00:00Z" in error["msg"] or "whole hour" in error["msg"]
        return
    assert EARLIEST_TIMESTAMP <= request.timestamp <= LATEST_TIMESTAMP
    assert request.timestamp.utcoffset() == timedelta(0) and request.timestamp == timestamp


def naive(t: datetime) -> datetime:
    return t.replace(tzinfo=None)


# The whole accepted range, and (so that answers are drawn too) the days around the trained home's
# stored hours, which end at 2025-08-01T12:00Z.
ACCEPTED_HOURS = st.one_of(
    st.datetimes(min_value=naive(EARLIEST_TIMESTAMP), max_value=naive(LATEST_TIMESTAMP)),
    st.datetimes(min_value=datetime(2025, 6, 25), max_value=datetime(2025, 8, 3)),
).map(lambda t: t.replace(minute=0, second=0, microsecond=0, tzinfo=UTC))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hour=ACCEPTED_HOURS, pollutant=st.sampled_from(["pm25", "no2", "o3"]))
def test_every_accepted_hour_gets_a_forecast_or_a_client_error(forecasts, hour, pollutant):
    """Over the whole accepted range the forecast path answers or raises a ForecastError (4xx)."""
    try:
        (answer,) = forecasts.forecast([("MY1", hour, pollutant)])
    except ForecastError as exc:
        assert exc.status in (404, 422) and exc.field == "timestamp", exc.message
        return
    assert answer["timestamp"] == hour.strftime("%Y-%m-%dT%H:%M:%SZ")
