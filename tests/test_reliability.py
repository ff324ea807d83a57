"""Source, data and run faults: what each does to the stored rows (docs/reliability.md)."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from werkzeug import Response

from conftest import FIXTURES, make_definitions, partition_key
from routeaq_assets.resources import ObservationSource, Warehouse, WeatherSource
from routeaq_assets.sources.openair import read_rdata_table

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
    defs = make_definitions(home, observations=ObservationSource(kind="local", folder=str(folder)), weather=WeatherSource(kind="local", folder=str(folder)))
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
    cut = text.index("2017-01-02 06:00") + 30  # mid-line: 06:00 keeps a few values, 41 hours gone
    path.write_text(text[:cut])
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
    source = ObservationSource(kind="openair", folder=str(home / "sources"), base_url=httpserver.url_for("/R_data/"))
    defs = make_definitions(home, observations=source)
    register(defs, SITES)
    assert ingest(defs, ["raw_aurn"]).success
    before = stored(home)["observations"]
    assert before.filter(pl.col("site_id") == "AH").height == 72 * 3
    (home / "sources" / "aurn" / "AH_2017.RData.http.json").unlink()  # no cached validators: ask again
    assert ingest(defs, ["raw_aurn"]).success
    assert not answers  # the 404 was served
    assert stored(home)["observations"].equals(before)
