"""The weekly ``lake_maintenance`` asset: Delta tables compacted, with recent versions kept for
time travel; the embedded DuckDB file checkpointed, with nothing to compact."""

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from conftest import make_definitions
from routeaq_assets.storage import DeltaWarehouse
from test_production_lake import observations

DAY = datetime(2025, 8, 1, tzinfo=timezone.utc)


def maintain(defs: dg.Definitions) -> dict:
    result = dg.materialize([defs.get_assets_def("lake_maintenance")], resources=defs.resources)
    return {k: v.value for k, v in result.asset_materializations_for_node("lake_maintenance")[0].metadata.items()}


def test_the_embedded_warehouse_has_nothing_to_compact(home):
    defs = make_definitions(home)
    defs.resources["warehouse"].replace_window("observations", observations(DAY, 4), DAY, DAY + timedelta(hours=4))
    metadata = maintain(defs)
    assert metadata["tables"] == 0 and "nothing to compact" in metadata["report"]
    assert defs.resources["warehouse"].query("SELECT count(*) AS n FROM observations")["n"][0] == 8


def test_delta_tables_are_compacted_and_recent_versions_kept(home):
    warehouse = DeltaWarehouse(location=str(home / "tables"))
    defs = make_definitions(home, warehouse=warehouse)
    for h in range(6):
        warehouse.replace_window("observations", observations(DAY + timedelta(hours=h), 1, value=float(h)), DAY + timedelta(hours=h), DAY + timedelta(hours=h + 1))
    metadata = maintain(defs)
    assert (metadata["tables"], metadata["files_compacted"], metadata["files_removed"], metadata["retention_days"]) == (1, 6, 0, 7.0)
    first = warehouse.as_of({"observations": 0})  # a week's versions are kept: time travel still reads them
    assert first.query("SELECT count(*) AS n FROM observations")["n"][0] == 2
    assert warehouse.query("SELECT sum(value) AS v FROM observations")["v"][0] == 2 * sum(range(6))


def test_a_version_older_than_the_retention_is_refused_by_name(tmp_path):
    warehouse = DeltaWarehouse(location=str(tmp_path / "tables"))
    for value in (1.0, 2.0):
        warehouse.replace_window("observations", observations(DAY, 2, value=value), DAY, DAY + timedelta(hours=2))
    warehouse.maintain(timedelta(0))
    with pytest.raises(ValueError, match="lake_maintenance removes the files of versions older than its retention_days"):
        warehouse.as_of({"observations": 0}).query("SELECT * FROM observations")
    with pytest.raises(ValueError, match="observations has no version 99"):
        warehouse.as_of({"observations": 99}).query("SELECT * FROM observations")
    assert warehouse.query("SELECT DISTINCT value FROM observations")["value"].to_list() == [2.0]
