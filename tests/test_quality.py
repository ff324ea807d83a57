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


def observations(rows, source="MY1_2025.csv"):
    return pl.DataFrame(
        [(site, START + timedelta(hours=h), p, v, source) for site, h, p, v in rows],
        schema={"site_id": pl.Utf8, "time": TIME, "pollutant": pl.Utf8, "value": pl.Float64, "source": pl.Utf8},
        orient="row",
    )


def test_hours_stored_from_a_file_that_it_no_longer_holds_are_counted_per_site():
    from routeaq_assets.core.quality import describe_missing_hours, hours_missing_from_source

    stored = observations([("MY1", h, "no2", 1.0) for h in range(6)])
    shorter = observations([("MY1", h, "no2", 1.0) for h in range(4)])
    missing = hours_missing_from_source(stored, shorter)
    assert missing.select("site_id", "hours").rows() == [("MY1", 2)]
    assert describe_missing_hours(missing) == ["MY1_2025.csv, site MY1: holds 2 fewer hours than stored (2025-03-01 04:00 to 2025-03-01 05:00 UTC are gone; truncated file?); stored rows kept"]
    assert hours_missing_from_source(stored, stored).is_empty()


def test_out_of_range_values_are_split_off_with_the_reason_and_repeated_hours_are_found():
    from routeaq_assets.core.quality import duplicate_hours, split_out_of_range

    frame = observations([("MY1", 0, "no2", -500.0), ("MY1", 0, "pm25", 12.0), ("MY1", 1, "pm25", -0.5), ("MY1", 2, "pm25", None)])
    kept, quarantined = split_out_of_range(frame)
    assert kept.select("pollutant", "value").rows() == [("pm25", 12.0), ("pm25", -0.5), ("pm25", None)]  # noise near zero and missing stay
    assert quarantined["reason"].to_list() == ["no2 -500.0 outside the physical range -10.0 to 2000.0 ug/m3"]
    repeated = duplicate_hours(pl.concat([frame, frame.head(1)]))
    assert repeated.select("pollutant", "copies", "files").rows() == [("no2", 2, "MY1_2025.csv")]
