"""Progress lines of long stages: how often they come and what they say."""

import re

from routeaq_assets.core.progress import PREFIX, Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_line_per_tenth_and_the_last_unit_with_an_estimate_of_what_is_left():
    lines, clock = [], Clock()
    progress = Progress("raw_aurn", 150, "site-years read", lines.append, every_s=1e9, clock=clock)
    for i in range(150):
        clock.now += 1.0
        progress.advance(f"S{i} 2024")
    assert len(lines) == 10  # 15, 30, ... 150: one per tenth, the last one included
    assert lines[0] == f"{PREFIX} raw_aurn: 15/150 site-years read (10 %) (S14 2024), 15 s, about 135 s left"
    assert lines[-1] == f"{PREFIX} raw_aurn: 150/150 site-years read (100 %) (S149 2024), 150 s"


def test_a_slow_stage_reports_at_least_every_interval():
    lines, clock = [], Clock()
    progress = Progress("raw_aurn", 1000, "site-years read", lines.append, every_s=30, clock=clock)
    for _ in range(50):  # 50 units of 2 s: under a tenth, but 100 s
        clock.now += 2.0
        progress.advance()
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == ["15/1000", "30/1000", "45/1000"]


def test_every_unit_of_a_short_stage_and_the_phases_are_reported():
    lines, clock = [], Clock()
    progress = Progress("silver_features", 3, "pollutants built", lines.append, clock=clock)
    progress.note("panel of 8,760 site-hours read")
    for pollutant in ("pm25", "no2", "o3"):
        clock.now += 4.0
        progress.advance(pollutant)
    progress.note("26,280 rows written")
    assert lines == [
        f"{PREFIX} silver_features: panel of 8,760 site-hours read, 0 s",
        f"{PREFIX} silver_features: 1/3 pollutants built (33 %) (pm25), 4 s, about 8 s left",
        f"{PREFIX} silver_features: 2/3 pollutants built (67 %) (no2), 8 s, about 4 s left",
        f"{PREFIX} silver_features: 3/3 pollutants built (100 %) (o3), 12 s",
        f"{PREFIX} silver_features: 26,280 rows written, 12 s",
    ]


def test_a_backfill_logs_its_progress_per_stage_and_site_year(home):
    """The run log of a single-run backfill says how far each stage is."""
    from datetime import timedelta

    import dagster as dg

    from conftest import SITES_CONFIG, TEST_SITES, WINDOW_END, make_definitions, partition_key

    defs = make_definitions(home)
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, run_config=SITES_CONFIG, instance=instance).success
    start = WINDOW_END - timedelta(days=2)
    result = defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance,
        tags={"dagster/asset_partition_range_start": partition_key(start), "dagster/asset_partition_range_end": partition_key(WINDOW_END - timedelta(hours=1))},
    )
    assert result.success
    messages = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message.startswith(PREFIX)]
    n = len(TEST_SITES)
    assert f"{PREFIX} raw_aurn: {n}/{n} site-years read (100 %) ({sorted(TEST_SITES)[-1]} 2025)" in " | ".join(messages)
    assert any(re.match(rf"{PREFIX} raw_aurn: writing [1-9][0-9,]* rows, \d+ s$", m) for m in messages), messages
    assert any(m.startswith(f"{PREFIX} raw_weather: {n}/{n} sites read (100 %)") for m in messages)
    last_site = sorted(TEST_SITES)[-1]
    assert any(m.startswith(f"{PREFIX} silver_features: 4/4 site groups x pollutants built (100 %) (o3, {sorted(TEST_SITES)[0]}..{last_site})") for m in messages), messages
    assert any(m.startswith(f"{PREFIX} silver_features: {n * 48 * 4:,} rows written") for m in messages)


def test_the_demo_shows_progress_lines_from_the_dagster_cli_log():
    from routeaq_assets.demo import worth_showing

    cli_line = "2026-11-23 21:25:12 +0000 - dagster - INFO - __ASSET_JOB - bdd1291c - 18961 - raw_aurn - progress raw_aurn: 3/6 site-years read (50 %) (MY1 2025), 4 s, about 4 s left\n"
    assert worth_showing(cli_line)
    assert not worth_showing(cli_line.replace("progress raw_aurn", "raw_aurn"))
    assert not worth_showing("2026-11-23 21:25:12 +0000 - dagster - DEBUG - __ASSET_JOB - bdd1291c - 18961 - raw_aurn - STEP_START - Started execution of step \"raw_aurn\".\n")
