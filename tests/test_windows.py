"""The one rule for the years a half-open window [start, end) touches, and where partitions start."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from routeaq_assets.adapters.stores import HistoryStore
from routeaq_assets.core.windows import year_span


def test_a_window_ending_at_new_year_does_not_touch_the_new_year():
    assert list(year_span(datetime(2024, 12, 31, 22, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))) == [2024]
    assert list(year_span(datetime(2024, 12, 31, 22, tzinfo=UTC), datetime(2025, 1, 1, 1, tzinfo=UTC))) == [2024, 2025]
    assert list(year_span(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, 1, tzinfo=UTC))) == [2025]
    assert list(year_span(datetime(2023, 6, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))) == [2023, 2024]


def test_history_window_ending_at_new_year_does_not_read_the_new_years_file(tmp_path):
    store = HistoryStore(tmp_path)
    hours = [datetime(2024, 12, 31, 22, tzinfo=UTC), datetime(2024, 12, 31, 23, tzinfo=UTC)]
    store.write_year(2024, pl.DataFrame({"site_id": ["MY1", "MY1"], "time": hours, "value": [1.0, 2.0]}))
    store.path(2025).write_bytes(b"not parquet")  # a damaged year the window does not need
    rows = store.window(["MY1"], hours[0], datetime(2025, 1, 1, tzinfo=UTC))
    assert rows["value"].to_list() == [1.0, 2.0]


def test_demo_weather_ending_at_new_year_does_not_simulate_the_new_year(tmp_path):
    from routeaq_assets.weather_sources import DemoWeather

    source = DemoWeather(basis="reanalysis", folder=str(tmp_path))
    site = {"site_id": "MY1", "latitude": 51.52253, "longitude": -0.154611}
    start, end = datetime(2024, 12, 31, 22, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    weather = source.window(site, start, end)
    assert sorted(set(weather["time"].to_list())) == [start, datetime(2024, 12, 31, 23, tzinfo=UTC)]
    assert sorted(p.name for p in (tmp_path / "open-meteo").iterdir()) == ["MY1_2024.json"]


def test_partitions_start_where_the_setting_or_the_demo_says_and_a_bad_start_is_named(tmp_path, monkeypatch):
    from routeaq_assets.core.environment import ConfigurationError, partitions_start
    from routeaq_assets.demo import record_partitions_start

    monkeypatch.setenv("ROUTEAQ_HOME", str(tmp_path))
    monkeypatch.delenv("ROUTEAQ_PARTITIONS_START")
    assert partitions_start() == "2015-01-01-00:00"  # nothing said: the archives' reach
    record_partitions_start(tmp_path, datetime(2025, 6, 2, 12, tzinfo=UTC))
    record_partitions_start(tmp_path, datetime(2025, 6, 4, 12, tzinfo=UTC))  # a later demo window keeps the earlier start
    assert partitions_start() == "2025-06-02-12:00"
    monkeypatch.setenv("ROUTEAQ_PARTITIONS_START", "2020-03-01")
    assert partitions_start() == "2020-03-01-00:00"  # the setting wins
    monkeypatch.setenv("ROUTEAQ_PARTITIONS_START", "2020-03-01T00:00Z")
    with pytest.raises(ConfigurationError, match="ROUTEAQ_PARTITIONS_START must be an hour as YYYY-MM-DD-HH:MM"):
        partitions_start()
