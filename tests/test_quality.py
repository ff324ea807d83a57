"""core.quality: completeness per day, frozen instruments, changed rows."""

from datetime import datetime, timedelta, timezone

import polars as pl

from routeaq_assets.core.quality import changed_rows, daily_completeness, frozen_runs
from routeaq_assets.core.schema import TIME

START = datetime(2025, 3, 1, tzinfo=timezone.utc)


def hours(values, site="AAA", pollutant="no2", start=START):
    return pl.DataFrame(
        {"site_id": site, "pollutant": pollutant, "time": [start + timedelta(hours=h) for h in range(len(values))], "value": values},
        schema_overrides={"time": TIME, "value": pl.Float64},
    )


def test_completeness_counts_values_per_day_and_judges_today_on_the_hours_passed():
    frame = pl.concat([hours([1.0] * 18 + [None] * 6), hours([2.0] * 6, start=START + timedelta(days=1))])
    result = daily_completeness(frame, end=START + timedelta(days=1, hours=8))
    assert result["completeness"].to_list() == [0.75, 0.75]  # 18/24 yesterday, 6/8 so far today
    assert result["hours_expected"].to_list() == [24, 8]


def test_frozen_runs_need_consecutive_identical_values():
    values = [5.0] * 12 + [6.0] + [7.0] * 11 + [None] * 13
    runs = frozen_runs(hours(values), min_hours=12)
    assert runs.select("value", "hours").rows() == [(5.0, 12)]
    gap = hours([5.0] * 6).vstack(hours([5.0] * 6, start=START + timedelta(hours=7)))
    assert frozen_runs(gap, min_hours=12).is_empty()  # a missing hour breaks the run


def test_changed_rows_counts_new_values_and_statuses_only():
    stored = hours([1.0, 2.0, None]).with_columns(status=pl.lit("P"))
    incoming = hours([1.0, 2.5, 3.0]).with_columns(status=pl.Series(["P", "P", "R"]))
    assert changed_rows(stored, incoming, ["site_id", "time", "pollutant"], ["value", "status"]) == 2
    assert changed_rows(stored.clear(), incoming, ["site_id", "time", "pollutant"], ["value", "status"]) == 0
