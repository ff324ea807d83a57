"""Source, data and run faults: what each does to the stored rows (docs/reliability.md)."""

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from werkzeug import Response

from conftest import FIXTURES, REPO, WINDOW_END, home_env, make_definitions, partition_key
from routeaq_assets.adapters.locks import LockTimeout
from routeaq_assets.observation_sources import DemoObservations, LocalObservations, OpenairObservations
from routeaq_assets.sources.openair import read_rdata_table
from routeaq_assets.warehouse import Warehouse
from routeaq_assets.weather_sources import DemoWeather, LocalWeather

UTC = timezone.utc
START, END = datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 1, 4, tzinfo=UTC)
SITES = ["ABD", "AH"]


def export_csv(folder: Path, site: str, days: int = 5) -> Path:
    """A site's first days of 2017 as openair exports them to CSV (lower-case names, met columns)."""
    table = read_rdata_table(FIXTURES / f"{site}_2017.RData")
    table = table.rename({c: c.lower() for c in table.columns if c not in ("date", "site", "code")}).rename({"noxasno2": "nox", "temp": "air_temp"})
    path = folder / f"{site}_2017.csv"
    table.drop("code", "site").head(24 * days).write_csv(path, datetime_format="%Y-%m-%d %H:%M:%S", null_value="NA")
    return path


def ingest(defs: dg.Definitions, selection=("raw_aurn", "raw_weather"), start=START, end=END) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [defs.get_assets_def(key) for key in selection],
        resources=defs.resources,
        tags={"dagster/asset_partition_range_start": partition_key(start), "dagster/asset_partition_range_end": partition_key(end - timedelta(hours=1))},
        raise_on_error=False,
    )


def register(defs: dg.Definitions, sites: list[str]) -> None:
    config = {"ops": {"site_registry": {"config": {"sites": sites}}}}
    assert dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, run_config=config).success


def stored(home: Path) -> dict[str, pl.DataFrame]:
    """Every stored observation and weather row, in a fixed order."""
    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    tables = {
        "observations": "SELECT site_id, time, pollutant, value, status, source FROM observations ORDER BY ALL",
        "weather": "SELECT site_id, time, temperature_2m, wind_speed_10m, source FROM weather ORDER BY ALL",
    }
    return {table: warehouse.query(sql) for table, sql in tables.items() if warehouse.has_table(table)}


def assert_unchanged(before: dict[str, pl.DataFrame], after: dict[str, pl.DataFrame]) -> None:
    for table in before:
        assert after[table].equals(before[table]), f"{table} changed"


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(e.step_failure_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE")


@pytest.fixture
def local_home(home, tmp_path):
    """ABD and AH ingested for three days from a folder of openair CSV exports."""
    folder = tmp_path / "exports"
    folder.mkdir()
    for site in SITES:
        export_csv(folder, site)
    defs = make_definitions(home, observations=LocalObservations(folder=str(folder)), weather=LocalWeather(folder=str(folder)))
    register(defs, SITES)
    assert ingest(defs).success
    first = stored(home)
    assert first["observations"].group_by("site_id").len().sort("site_id")["len"].to_list() == [72 * 5, 72 * 3]
    assert first["weather"]["site_id"].value_counts().height == 2
    return home, folder, defs, first


# -- item 2: replace only what was read ----------------------------------------------------

def test_a_truncated_file_fails_naming_file_and_site_and_keeps_stored_rows(local_home):
    home, folder, defs, before = local_home
    path = folder / "ABD_2017.csv"
    text = path.read_text()
    path.write_text(text[: text.index("2017-01-02 07:00")])  # whole lines: 41 hours gone (a cut line is a ragged row, below)
    result = ingest(defs)
    assert not result.success
    message = failure_message(result)
    assert f"local:{path}, site ABD: holds 41 fewer hours than stored (2017-01-02 07:00 to 2017-01-03 23:00 UTC are gone" in message
    assert "site AH" not in message  # the good site is written, not failed
    assert_unchanged(before, stored(home))


def test_a_vanished_file_is_no_new_data_for_observations_and_weather(local_home):
    home, folder, defs, before = local_home
    (folder / "AH_2017.csv").unlink()
    assert ingest(defs).success
    assert_unchanged(before, stored(home))


def test_a_site_dropped_from_the_registry_keeps_its_rows(local_home):
    home, folder, defs, before = local_home
    register(defs, ["ABD"])
    assert ingest(defs).success
    assert_unchanged(before, stored(home))


def test_a_404_from_the_http_source_keeps_the_sites_rows(home, httpserver):
    abd, ah = ((FIXTURES / f"{site}_2017.RData").read_bytes() for site in SITES)
    httpserver.expect_request("/R_data/AURN_metadata.RData").respond_with_data((FIXTURES / "AURN_metadata.RData").read_bytes())
    httpserver.expect_request("/R_data/ABD_2017.RData").respond_with_data(abd)
    answers = [Response(ah), Response("Not Found", status=404)]  # the file, then a 404
    httpserver.expect_request("/R_data/AH_2017.RData").respond_with_handler(lambda request: answers.pop(0))
    source = OpenairObservations(folder=str(home / "sources"), base_url=httpserver.url_for("/R_data/"))
    defs = make_definitions(home, observations=source)
    register(defs, SITES)
    assert ingest(defs, ["raw_aurn"]).success
    before = stored(home)["observations"]
    assert before.filter(pl.col("site_id") == "AH").height == 72 * 3
    (home / "sources" / "aurn" / "AH_2017.RData.http.json").unlink()  # no cached validators: ask again
    assert ingest(defs, ["raw_aurn"]).success
    assert not answers  # the 404 was served
    assert stored(home)["observations"].equals(before)


# -- item 3: bad rows are stopped before they spread ----------------------------------------

def edit_csv(path: Path, hour: str, column: str, value: str) -> int:
    """Set one cell of an openair CSV export; returns the file line it is on."""
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    number = next(i for i, line in enumerate(lines) if line.startswith(hour))
    cells = lines[number].split(",")
    cells[header.index(column)] = value
    lines[number] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return number + 1


def run_ingest_job(defs: dg.Definitions) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("ingest_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": partition_key(START), "dagster/asset_partition_range_end": partition_key(END - timedelta(hours=1))},
        raise_on_error=False,
    )


def check(result: dg.ExecuteInProcessResult, name: str):
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == name and e.asset_key.to_user_string() == "raw_aurn")


def test_impossible_values_are_quarantined_with_the_reason_and_never_reach_the_features(local_home):
    home, folder, defs, before = local_home
    edit_csv(folder / "ABD_2017.csv", "2017-01-02 05:00", "no2", "-500")
    edit_csv(folder / "ABD_2017.csv", "2017-01-02 09:00", "pm2.5", "1e9")
    result = run_ingest_job(defs)
    assert result.success
    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    quarantined = warehouse.query("SELECT site_id, time, pollutant, value, reason, source FROM observations_quarantine ORDER BY time")
    assert quarantined.select("pollutant", "value").rows() == [("no2", -500.0), ("pm25", 1e9)]
    assert quarantined["reason"].to_list() == ["no2 -500.0 outside the physical range -10.0 to 2000.0 ug/m3", "pm25 1000000000.0 outside the physical range -10.0 to 1000.0 ug/m3"]
    assert quarantined["source"].to_list() == [f"local:{folder / 'ABD_2017.csv'}"] * 2
    warned = check(result, "no_rows_quarantined")
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert "| ABD | 2017-01-02 05:00:00+00:00 | no2 -500.0 outside the physical range" in warned.metadata["rows"].value
    assert check(result, "values_in_physical_range").passed
    (bad,) = warehouse.query("SELECT count(*) FROM observations WHERE value < -10 OR value > 2000").row(0)
    assert bad == 0
    features = warehouse.query("SELECT * FROM silver_features WHERE site_id = 'ABD'")
    numbers = features.select(pl.selectors.numeric())
    assert numbers.select(pl.all().abs().max()).max_horizontal()[0] < 1000  # neither -500 nor 1e9 in any feature
    assert features.filter((pl.col("pollutant") == "pm25") & (pl.col("time") == datetime(2017, 1, 2, 9, tzinfo=UTC)))["target"].to_list() == [None]


def test_a_failed_blocking_check_stops_silver_features_and_fails_the_run(local_home):
    home, folder, defs, before = local_home
    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    # A stored value this run will not re-read (its site is no longer registered): written
    # by another path, before quarantine existed.
    hour = datetime(2017, 1, 2, 5, tzinfo=UTC)
    row = before["observations"].filter((pl.col("site_id") == "AH") & (pl.col("time") == hour) & (pl.col("pollutant") == "no2"))
    warehouse.replace_window("observations", warehouse.query("SELECT * FROM observations WHERE site_id = 'AH' AND time = ? AND pollutant = 'no2'", [hour]).with_columns(pl.lit(-500.0).alias("value")), hour, hour + timedelta(hours=1), site_ids=["AH"])
    assert row.height == 1
    register(defs, ["ABD"])
    result = run_ingest_job(defs)
    assert not result.success
    failed = check(result, "values_in_physical_range")
    assert not failed.passed and "no2 -500.0 outside the physical range" in failed.description
    assert "blocking asset check failed with ERROR severity" in failure_message(result)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "silver_features" not in materialized
    assert not warehouse.has_table("silver_features")


def test_repeated_hours_and_a_text_value_fail_only_their_site_naming_file_column_and_line(local_home):
    home, folder, defs, before = local_home
    abd, ah = folder / "ABD_2017.csv", folder / "AH_2017.csv"
    line = edit_csv(abd, "2017-01-02 05:00", "no2", "n/a-calib")
    edit_csv(ah, "2017-01-01 03:00", "o3", "77.5")  # a correction the good site brings
    result = ingest(defs, ["raw_aurn"])
    assert not result.success
    assert f"local:{abd}: site ABD, column 'no2', line {line}: 'n/a-calib' is not a number (1 such cells in the column)" in failure_message(result)
    after = stored(home)["observations"]
    assert after.filter(pl.col("site_id") == "ABD").equals(before["observations"].filter(pl.col("site_id") == "ABD"))
    assert after.filter((pl.col("site_id") == "AH") & (pl.col("time") == datetime(2017, 1, 1, 3, tzinfo=UTC)) & (pl.col("pollutant") == "o3"))["value"].to_list() == [77.5]

    edit_csv(abd, "2017-01-02 05:00", "no2", "30.0")
    lines = abd.read_text().splitlines()
    abd.write_text("\n".join(lines[:40] + lines[30:34] + lines[40:]) + "\n")  # four hours given twice
    result = ingest(defs, ["raw_aurn"])
    assert not result.success
    assert f"local:{abd}, site ABD: 4 hours appear more than once (2017-01-02 05:00, 2017-01-02 06:00, 2017-01-02 07:00, 2017-01-02 08:00 UTC)" in failure_message(result)
    assert stored(home)["observations"].filter(pl.col("site_id") == "ABD").equals(before["observations"].filter(pl.col("site_id") == "ABD"))


def test_a_text_value_in_a_ukair_csv_names_file_site_column_and_line():
    from routeaq_assets.core.schema import SourceDataError
    from routeaq_assets.sources.openair import openair_to_observations
    from routeaq_assets.sources.ukair_csv import format_ukair_csv, parse_ukair_csv

    obs = openair_to_observations(read_rdata_table(FIXTURES / "ABD_2017.RData"), site_id="ABD", network="aurn", source="t")
    lines = format_ukair_csv("Aberdeen", obs.filter(pl.col("time") < datetime(2017, 1, 2, tzinfo=UTC))).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("01-01-2017,04:00,"))
    cells = lines[at].split(",")
    cells[2] = "calib"  # the first value: PM2.5
    lines[at] = ",".join(cells)
    text = "\n".join(lines) + "\n"
    with pytest.raises(SourceDataError, match=r"ABD_2017.csv: site ABD, column 'pm2.5 particulate matter \(hourly measured\)' \(pm25\), line 10: 'calib' is not a number"):
        parse_ukair_csv(text, site_id="ABD", source="ABD_2017.csv")


# -- a row is whole or it is an error; each file is read on its own --------------------------

def ah_correction(folder: Path) -> None:
    """A correction in the good site's file: it shows that the good site was written."""
    edit_csv(folder / "AH_2017.csv", "2017-01-01 03:00", "o3", "77.5")


def assert_ah_corrected_and_abd_kept(home: Path, before: dict[str, pl.DataFrame]) -> None:
    after = stored(home)["observations"]
    assert after.filter(pl.col("site_id") == "ABD").equals(before["observations"].filter(pl.col("site_id") == "ABD"))
    corrected = after.filter((pl.col("site_id") == "AH") & (pl.col("time") == datetime(2017, 1, 1, 3, tzinfo=UTC)) & (pl.col("pollutant") == "o3"))
    assert corrected["value"].to_list() == [77.5]


def test_a_last_line_cut_inside_fails_its_site_naming_file_line_and_field_count(local_home):
    home, folder, defs, before = local_home
    path = folder / "ABD_2017.csv"
    lines = path.read_text().splitlines()
    fields = len(lines[0].split(","))
    last = next(i for i, line in enumerate(lines) if line.startswith("2017-01-03 23:00"))
    path.write_text("\n".join(lines[:last] + [lines[last][:21]]))  # the window's last hour, cut after one character of its first value, no newline
    ah_correction(folder)
    result = ingest(defs, ["raw_aurn"])
    assert not result.success
    message = failure_message(result)
    assert f"site ABD, year 2017: ABD_2017.csv: line {last + 1} has 2 fields where the header has {fields} (a cut or ragged row)" in message
    assert "site AH" not in message
    assert_ah_corrected_and_abd_kept(home, before)


@pytest.mark.parametrize("damage", ["extra field", "binary", "cut date", "empty"])
def test_an_unreadable_file_fails_only_its_site_and_an_empty_one_is_no_new_data(damage, local_home):
    home, folder, defs, before = local_home
    path = folder / "ABD_2017.csv"
    ah_correction(folder)
    if damage == "extra field":
        line = edit_csv(path, "2017-01-02 05:00", "no2", "30.0,31.0")
        expected = f"ABD_2017.csv: line {line} has"
    elif damage == "binary":
        path.write_bytes(bytes(range(256)) * 40)
        expected = "ABD_2017.csv: not a text CSV table (binary data at byte 0)"
    elif damage == "cut date":
        line = edit_csv(path, "2017-01-02 05:00", "date", "2017-01-02 1")
        expected = f"local:{path}: site ABD, column 'date', line {line}: '2017-01-02 1' is not a date and time"
    else:
        path.write_bytes(b"")
        expected = None
    result = ingest(defs, ["raw_aurn"])
    assert result.success is (expected is None)
    if expected is not None:
        message = failure_message(result)
        assert "1 of 2 site-years failed (1 written" in message
        assert expected in message and "site AH" not in message
    assert_ah_corrected_and_abd_kept(home, before)


def quarantined_rows(home: Path) -> pl.DataFrame:
    return Warehouse(path=str(home / "warehouse.duckdb")).query(
        "SELECT site_id, time, pollutant, value, replaced_value, replaced_source FROM observations_quarantine ORDER BY time"
    )


def test_a_quarantined_reading_keeps_the_value_it_displaced_and_a_re_read_that_empties_values_warns(local_home):
    home, folder, defs, before = local_home
    path = folder / "ABD_2017.csv"
    hour = datetime(2017, 1, 2, 5, tzinfo=UTC)
    key = (pl.col("site_id") == "ABD") & (pl.col("time") == hour) & (pl.col("pollutant") == "no2")
    (good,) = before["observations"].filter(key)["value"].to_list()
    edit_csv(path, "2017-01-02 05:00", "no2", "-500")
    for _ in range(2):  # read twice: the second read finds the value in the quarantine, not the observations
        result = run_ingest_job(defs)
        assert result.success
        assert quarantined_rows(home).rows() == [("ABD", hour, "no2", -500.0, good, f"local:{path}")]
        assert stored(home)["observations"].filter(key).is_empty()
    assert check(result, "stored_values_not_nulled").passed

    edit_csv(path, "2017-01-02 05:00", "no2", "31.5")
    result = run_ingest_job(defs)
    changes = result.asset_materializations_for_node("raw_aurn")[0].metadata["rows_changed_by_kind"].value
    assert changes["null_to_value"] == 0 and changes["value_to_value"] == 0  # the key had no stored observation: a new row
    assert quarantined_rows(home).is_empty()
    assert stored(home)["observations"].filter(key)["value"].to_list() == [31.5]

    lines = path.read_text().splitlines()
    no2 = lines[0].split(",").index("no2")
    path.write_text("\n".join([lines[0]] + [",".join(c if i != no2 else "NA" for i, c in enumerate(line.split(","))) for line in lines[1:]]) + "\n")
    result = run_ingest_job(defs)
    assert result.success
    changes = result.asset_materializations_for_node("raw_aurn")[0].metadata["rows_changed_by_kind"].value
    nulled = before["observations"].filter((pl.col("site_id") == "ABD") & (pl.col("pollutant") == "no2") & (pl.col("time") < END) & pl.col("value").is_not_null()).height
    assert changes["value_to_null"] == nulled > 0
    warned = check(result, "stored_values_not_nulled")
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert f"turned {nulled} stored values" in warned.description


# -- item 1: a dead run blocks nothing ------------------------------------------------------

BIN = Path(sys.executable).parent


def wait_for(what: str, probe, timeout: float = 60.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def fast_monitoring_instance(dagster_home: Path) -> None:
    """The repository's dagster.yaml with the monitoring loop made fast for a test."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["run_monitoring"].update(poll_interval_seconds=1, free_slots_after_run_end_seconds=1)
    (dagster_home / "dagster.yaml").unlink()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.parametrize("config", ["dagster.yaml", "deploy/dagster.yaml"])
def test_make_dev_and_the_production_instance_both_monitor_runs_and_free_slots_of_ended_runs(config, tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text((REPO / config).read_text())
    settings, _ = dagster_instance_config(str(tmp_path))  # validated against Dagster's schema
    monitoring = settings["run_monitoring"]
    assert monitoring["enabled"] and monitoring["free_slots_after_run_end_seconds"] > 0
    assert monitoring["start_timeout_seconds"] > 0 and monitoring["cancel_timeout_seconds"] > 0


def test_a_backfill_killed_mid_run_is_failed_by_run_monitoring_and_a_plain_rerun_completes(home, tmp_path):
    """The demo's backfill command, SIGKILLed while it holds the warehouse pool's only slot,
    with the daemon that `make dev` runs beside it; the same command again then completes,
    no run is deleted, and the data equals a clean run's."""
    dagster_home = home / "dagster"
    fast_monitoring_instance(dagster_home)
    instance = dg.DagsterInstance.get()
    defs = make_definitions(home)
    assert dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, instance=instance, run_config={"ops": {"site_registry": {"config": {"sites": ["CLL2", "MY1"]}}}}).success
    start, end = WINDOW_END - timedelta(days=1), WINDOW_END
    backfill = [str(BIN / "dagster"), "asset", "materialize", "--select", "raw_aurn,raw_weather,silver_features",
                "--partition-range", f"{partition_key(start)}...{partition_key(end - timedelta(hours=1))}", "-m", "routeaq_assets.definitions"]
    logs = tmp_path / "logs"
    logs.mkdir()
    with (logs / "daemon.log").open("w") as out:
        # The daemon `make dev` runs, on this instance; run monitoring needs no code location.
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "--empty-workspace"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with (logs / "first.log").open("w") as out:
            first = subprocess.Popen(backfill, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        backfills = lambda: [r for r in instance.get_runs() if "dagster/asset_partition_range_start" in r.tags]  # noqa: E731
        killed = wait_for("the backfill to start raw_aurn", lambda: next((r for r in backfills() if instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_START)), None))
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.STARTED
        assert [slot.run_id for slot in instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots] == [killed.run_id]

        rerun = subprocess.run(backfill, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        dead = instance.get_run_by_id(killed.run_id)
        assert dead.status == dg.DagsterRunStatus.FAILURE
        messages = [e.message for e in instance.all_logs(killed.run_id) if e.message]
        assert any("is gone: killed or crashed without ending the run" in m for m in messages)
        assert [r.status for r in backfills()] == [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]  # newest first: none deleted
        assert instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots == []
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()

    recovered = warehouse_tables(home)
    clean_home = tmp_path / "clean"
    demo = str(home / "demo_network")
    clean = make_definitions(clean_home, observations=DemoObservations(folder=demo), weather=DemoWeather(folder=demo))
    register(clean, ["CLL2", "MY1"])
    assert ingest(clean, ["raw_aurn", "raw_weather", "silver_features"], start, end).success
    for table, rows in warehouse_tables(clean_home).items():
        assert recovered[table].equals(rows), table


def warehouse_tables(home: Path) -> dict[str, pl.DataFrame]:
    """Observations, weather and features as stored, less the ingestion time stamps."""
    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    return {t: warehouse.query(f"SELECT * EXCLUDE (ingested_at) FROM {t} ORDER BY ALL") if t != "silver_features" else warehouse.query(f"SELECT * FROM {t} ORDER BY ALL")
            for t in ("observations", "weather", "silver_features")}


# -- item 4: readers and writers in other processes queue instead of failing ----------------

READER = """
import sys, time
from pathlib import Path
from routeaq_assets.warehouse import Warehouse
warehouse, stop = Warehouse(path=sys.argv[1]), Path(sys.argv[2])
reads = 0
while not stop.exists():
    warehouse.query("SELECT count(*) FROM sites")
    if warehouse.has_table("observations"):
        warehouse.query("SELECT count(*), max(time) FROM observations")
    reads += 1
    if reads == 1:
        print("ready", flush=True)
    time.sleep(0.05)
print(f"reads {reads}", flush=True)
"""

LONG_WRITER = """
import sys, time
from routeaq_assets.warehouse import Warehouse
with Warehouse(path=sys.argv[1]).connect() as con:
    con.execute("BEGIN TRANSACTION")
    con.execute("UPDATE observations SET unit = unit")
    print("writing", flush=True)
    time.sleep(float(sys.argv[2]))
    con.execute("COMMIT")
print("done", flush=True)
"""


def test_a_backfill_beside_a_polling_reader_and_online_features_during_a_long_write_both_succeed(home, tmp_path):
    defs = make_definitions(home)
    register(defs, ["CLL2", "MY1"])
    database, stop = str(home / "warehouse.duckdb"), tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, database, str(stop)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "ready"
        result = ingest(defs, ["raw_aurn", "raw_weather", "silver_features"], WINDOW_END - timedelta(days=1), WINDOW_END)
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=60)
    assert result.success, failure_message(result)
    assert reader.returncode == 0, err[-2000:]
    assert int(out.split()[-1]) > 10  # it kept reading all through the backfill

    hold_s = 4.0
    writer = subprocess.Popen([sys.executable, "-c", LONG_WRITER, database, str(hold_s)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        impatient = Warehouse(path=database, lock_timeout_s=0.3)
        with pytest.raises(LockTimeout, match=rf"warehouse {database}: pid {os.getpid()} waited 0.3 s to open it for reading .* \(last writer: pid {writer.pid} \(python -c"):
            impatient.query("SELECT count(*) FROM observations")
        began = time.monotonic()
        published = dg.materialize([defs.get_assets_def("online_features")], resources=defs.resources, raise_on_error=False)
        waited = time.monotonic() - began
    finally:
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0 and out.strip() == "done", err[-2000:]
    assert published.success, failure_message(published)
    assert waited >= hold_s - 1.0  # it queued behind the writer rather than failing


# -- item 4: two writing runs at once, on the embedded default ------------------------------

DAY_A, DAY_B = WINDOW_END - timedelta(days=2, hours=12), WINDOW_END - timedelta(days=1, hours=12)  # 2025-07-30, 2025-07-31
BACKFILLED = ("raw_aurn", "raw_weather", "silver_features")
# What DuckDB says when a second process opens the file (and SQLite, Dagster's embedded storage).
LOCK_ERRORS = ("Could not set lock", "Conflicting lock", "LockTimeout", "database is locked")
KEYS = {"observations": ["site_id", "time", "pollutant"], "weather": ["site_id", "time"], "silver_features": ["site_id", "time", "pollutant"]}


def backfill_days_at_once(home: Path, days: list[datetime], logs: Path) -> list[str]:
    """One backfill run per day, as the demo runs them (``workspace_run --partition-range``),
    each its own OS process, all started together; the logs of the runs, after all have ended."""
    logs.mkdir(parents=True, exist_ok=True)
    runs = []
    for number, day in enumerate(days):
        command = [sys.executable, "-m", "routeaq_assets.workspace_run", "--job", "ingest_job",  # selects BACKFILLED
                   "--partition-range", f"{partition_key(day)}...{partition_key(day + timedelta(hours=23))}"]
        with (logs / f"run{number}.log").open("w") as out:
            runs.append(subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT))
    for run in runs:
        run.wait(timeout=300)
    texts = [(logs / f"run{number}.log").read_text() for number in range(len(days))]
    for run, text in zip(runs, texts):
        assert run.returncode == 0, text[-4000:]
        assert re.search(r"^run \S+ of ingest_job succeeded$", text, re.M), text[-4000:]  # the code server may log its shutdown after
    for text in texts:
        assert not [e for e in LOCK_ERRORS if e in text], text[-4000:]
    return texts


def one_after_the_other(home: Path, clean_home: Path, days: list[datetime]) -> dict[str, pl.DataFrame]:
    """The same days backfilled one at a time in a clean home (reading the same demo network
    files, so the rows name the same sources)."""
    demo = str(home / "demo_network")
    clean = make_definitions(clean_home, observations=DemoObservations(folder=demo), weather=DemoWeather(folder=demo))
    register(clean, ["CLL2", "MY1"])
    for day in days:
        assert ingest(clean, BACKFILLED, day, day + timedelta(days=1)).success
    return warehouse_tables(clean_home)


def assert_complete(tables: dict[str, pl.DataFrame], days: list[datetime]) -> None:
    """One row per key, and every hour of the days for both sites in every table."""
    hours = sorted({day + timedelta(hours=h) for day in set(days) for h in range(24)})
    for table, rows in tables.items():
        assert rows.select(KEYS[table]).n_unique() == rows.height, f"{table}: repeated keys"
        for site in ("CLL2", "MY1"):
            assert sorted(rows.filter(pl.col("site_id") == site)["time"].unique().to_list()) == hours, f"{table}: hours of {site}"


@pytest.mark.parametrize("days", [[DAY_A, DAY_B], [DAY_A, DAY_A]], ids=["different-days", "same-day"])
def test_two_backfills_started_together_both_succeed_and_store_what_one_after_the_other_stores(days, home, tmp_path):
    """Two runs of the demo's backfill command, separate processes started at the same moment:
    their warehouse steps queue on the `warehouse` pool (and every connection on the file lock),
    so both succeed with no lock error, and the stored observations, weather and features equal
    those of the same runs one after the other: nothing lost, nothing twice."""
    register(make_definitions(home), ["CLL2", "MY1"])
    backfill_days_at_once(home, days, tmp_path / "logs")
    together = warehouse_tables(home)
    assert_complete(together, days)
    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    for table in ("observations", "weather"):  # each site's day written whole by one run: no mixture of two
        writes = warehouse.query(f"SELECT count(DISTINCT ingested_at) AS n FROM {table} GROUP BY site_id, time::DATE")["n"]
        assert writes.to_list() == [1] * writes.len(), table
    expected = one_after_the_other(home, tmp_path / "clean", sorted(set(days)))
    for table, rows in expected.items():
        assert together[table].equals(rows), table


OPENER = """
import os, sys, time
from pathlib import Path
from routeaq_assets.workspace_run import open_instance
go, homes = Path(sys.argv[1]), sys.argv[2:]
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
for home in homes:
    os.environ["DAGSTER_HOME"] = home
    with open_instance() as instance:
        instance.get_runs(limit=1)
"""


def test_the_first_commands_of_a_new_home_open_its_dagster_instance_one_at_a_time(tmp_path):
    """Four processes open the Dagster instances of new homes (no storage yet) as `workspace_run`
    does, released at the same moment, home after home: in each home the first creates the
    SQLite storage while the others wait. (Opened all at once, Dagster's creation of the storage
    crashes: "table ... already exists".)"""
    homes = [str(Path(home_env(tmp_path / f"home{n}")["DAGSTER_HOME"])) for n in range(8)]
    go = tmp_path / "go"
    openers = [subprocess.Popen([sys.executable, "-c", OPENER, str(go), *homes], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for opener in openers:
        assert opener.stdout.readline().strip() == "ready"
    go.touch()
    for opener in openers:
        _, err = opener.communicate(timeout=120)
        assert opener.returncode == 0, err[-3000:]


# -- a home that cannot be written ---------------------------------------------------------------


def test_a_read_only_home_is_refused_at_start_naming_it(tmp_path):
    """ROUTEAQ_HOME on a read-only mount (root ignores file modes, so a read-only bind mount is the
    real thing): the code location, the demo and the service refuse to start with one sentence
    naming the folder and why, instead of an OSError halfway through a run."""
    source, home = tmp_path / "source", tmp_path / "home"
    source.mkdir()
    home.mkdir()
    bound = subprocess.run(["mount", "--bind", str(source), str(home)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"a read-only home needs a bind mount (root): {bound.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(home)], check=True, capture_output=True)
        said = f"ROUTEAQ_HOME {home} cannot be written (Read-only file system)"
        env = {**os.environ, **{k: v for k, v in home_env(tmp_path / "elsewhere").items() if k != "ROUTEAQ_HOME"}, "ROUTEAQ_HOME": str(home)}
        for command in (["-c", "import routeaq_assets.definitions"], ["-m", "routeaq_assets.demo"]):
            done = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode != 0 and said in done.stderr, done.stderr[-2000:]
        assert "Traceback" not in done.stderr  # the demo says it in one line
        assert list(source.iterdir()) == []  # nothing was written, nothing half-made
    finally:
        subprocess.run(["umount", str(home)], capture_output=True)


def test_a_second_demo_in_the_same_home_stops_at_once_naming_the_first_and_changes_nothing(tmp_path):
    """Two ``make demo`` in one folder: the second would backfill, train and promote into the same
    warehouse, registry and Dagster instance as the first. It stops at once, naming the running
    demo, and writes nothing; once the first has ended (however it ended) a demo may start."""
    home = tmp_path / "routeaq"
    env = {**os.environ, **home_env(home)}
    hold = "from routeaq_assets.demo import prepare_instance; import time; prepare_instance(); print('held', flush=True); time.sleep(120)"
    first = subprocess.Popen([sys.executable, "-c", hold], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        before = sorted((p, p.stat().st_size, p.stat().st_mtime_ns) for p in home.rglob("*") if p.is_file())
        started = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "routeaq_assets.demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode != 0 and time.monotonic() - started < 60
        assert f"RouteAQ demo: another demo is running in {home} (pid {first.pid} " in second.stderr and "Nothing was changed." in second.stderr, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
        assert sorted((p, p.stat().st_size, p.stat().st_mtime_ns) for p in home.rglob("*") if p.is_file()) == before
    finally:
        first.kill()  # a demo killed mid-run: the kernel releases its hold
        first.wait()
    again = subprocess.run([sys.executable, "-c", hold.replace("time.sleep(120)", "pass")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip() == "held", again.stderr[-2000:]


def test_one_process_may_take_its_own_home_again_and_another_process_is_still_refused(tmp_path):
    """bench/heldout_skill.py evaluates one horizon after another in one process, each through
    ``prepare_instance``: the second must not refuse the home the process already holds, while any
    other process still is refused."""
    home = tmp_path / "routeaq"
    env = {**os.environ, **home_env(home)}
    hold = "from routeaq_assets.demo import prepare_instance; import time; prepare_instance(); prepare_instance(); print('held twice', flush=True); time.sleep(120)"
    first = subprocess.Popen([sys.executable, "-c", hold], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held twice", first.stderr.read() if first.poll() is not None else ""
        second = subprocess.run([sys.executable, "-c", "from routeaq_assets.demo import prepare_instance; prepare_instance()"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and f"another demo is running in {home} (pid {first.pid} " in second.stderr, second.stderr[-2000:]
    finally:
        first.kill()
        first.wait()
