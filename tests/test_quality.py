"""core.quality: completeness per day, frozen instruments, changed rows."""

from datetime import datetime, timedelta, timezone

import polars as pl

from routeaq_assets.core.quality import daily_completeness, frozen_runs, nulled_share, value_changes, with_replaced_values
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
    # A series that starts at noon (a window's first day) is judged on its own 12 hours.
    noon = hours([1.0] * 12, start=START + timedelta(hours=12))
    first = pl.DataFrame({"site_id": ["AAA"], "pollutant": ["no2"], "first": [START + timedelta(hours=12)]}, schema_overrides={"first": TIME})
    assert daily_completeness(noon, end=START + timedelta(days=1), first=first)["completeness"].to_list() == [1.0]
    assert daily_completeness(noon, end=START + timedelta(days=1))["completeness"].to_list() == [0.5]


def test_frozen_runs_need_consecutive_identical_values():
    values = [5.0] * 12 + [6.0] + [7.0] * 11 + [None] * 13
    runs = frozen_runs(hours(values), min_hours=12)
    assert runs.select("value", "hours").rows() == [(5.0, 12)]
    gap = hours([5.0] * 6).vstack(hours([5.0] * 6, start=START + timedelta(hours=7)))
    assert frozen_runs(gap, min_hours=12).is_empty()  # a missing hour breaks the run


def test_value_changes_are_counted_by_kind():
    stored = hours([1.0, 2.0, None, 4.0, 5.0, 6.0]).with_columns(status=pl.lit("P"))
    incoming = hours([1.0, 2.5, 3.0, None, 5.0]).with_columns(status=pl.Series(["P", "P", "R", "R", "R"]))
    quarantined = hours([None, None, None, None, None, -500.0]).tail(1)  # hour 5's new reading is impossible
    changes = value_changes(stored, incoming, quarantined)
    assert changes == {"value_to_value": 1, "value_to_null": 1, "null_to_value": 1, "status_only": 1, "value_to_quarantine": 1}
    assert nulled_share(stored, changes) == 1 / 5
    assert set(value_changes(stored.clear(), incoming, quarantined).values()) == {0}


def test_a_quarantined_reading_keeps_the_value_it_displaced_across_re_reads():
    stored = hours([12.29, 20.0]).with_columns(status=pl.lit(None, pl.Utf8), source=pl.lit("MY1_2025.csv"))
    quarantined = hours([-500.0])
    first = with_replaced_values(quarantined, stored, pl.DataFrame())
    assert first.select("value", "replaced_value", "replaced_source").rows() == [(-500.0, 12.29, "MY1_2025.csv")]
    # Read again: the observation is gone (the first read kept it out); the quarantine still has it.
    again = with_replaced_values(quarantined, stored.tail(1), first)
    assert again.select("value", "replaced_value").rows() == [(-500.0, 12.29)]
    assert with_replaced_values(quarantined, pl.DataFrame(), pl.DataFrame())["replaced_value"].to_list() == [None]


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


def test_the_quality_checks_say_what_they_compared_when_they_warn(tmp_path):
    """Completeness and frozen values, run on a warehouse: a failing check names how many of
    what it judged fell short, and the worst case, in words the UI shows."""
    from routeaq_assets.defs.ingest_checks import CHECK_COMPLETENESS, CHECK_FROZEN, quality_checks
    from routeaq_assets.warehouse import Warehouse

    outage = [1.0 + (h % 5) if not 30 <= h < 42 else None for h in range(48)]  # day 2: 12 of 24 hours
    stuck = [7.0] * 48
    frame = pl.concat([hours(outage, "AAA"), hours(stuck, "BBB")])
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"))
    with warehouse.connect() as con:
        con.execute("CREATE TABLE observations AS SELECT * FROM frame")
    results = {r.check_name: r for r in quality_checks(warehouse, START, START + timedelta(hours=48))}
    completeness = results[CHECK_COMPLETENESS]
    assert not completeness.passed
    assert completeness.description == (
        "1 of 4 site-pollutant-days in 2025-03-01..2025-03-03 00:00 have values for under 75% of their hours (sensor outages); "
        "the lowest: AAA no2 2025-03-02, 12 of 24 hours"
    )
    frozen = results[CHECK_FROZEN]
    assert not frozen.passed and frozen.description.startswith("1 runs of ") and "one unchanged value (a stuck sensor)" in frozen.description
