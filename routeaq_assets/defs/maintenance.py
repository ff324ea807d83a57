"""Upkeep of the warehouse's tables, weekly: small files compacted and the files of old versions
removed (the production lake's Delta tables); a checkpoint of the embedded DuckDB file."""

from datetime import timedelta

import dagster as dg
from pydantic import Field

from routeaq_assets.warehouse import WarehouseResource


class MaintenanceConfig(dg.Config):
    # How far back readers and time travel reach: a backtest can re-run on the table versions a
    # training run of the last ``retention_days`` read; older versions' files are removed. At
    # least a day, so no running query loses the files it is reading.
    retention_days: float = Field(default=7.0, ge=1.0)


@dg.asset(group_name="maintenance", kinds={"deltalake", "duckdb"}, pool="warehouse")
def lake_maintenance(context: dg.AssetExecutionContext, config: MaintenanceConfig, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Each table's small files compacted per partition (every hourly run adds some) and the
    files no version within the retention reads removed; the DuckDB file has nothing to compact
    and no old versions, so it is checkpointed."""
    reports = warehouse.maintain(timedelta(days=config.retention_days))
    rows = [f"| {r.table} | {r.version} | {r.files_compacted} | {r.files_added} | {r.files_removed} |" for r in reports]
    summary = "\n".join(["| table | version | files compacted | into | old files removed |", "|---|---|---|---|---|", *rows])
    context.log.info(f"lake_maintenance ({config.retention_days:g} days kept):\n{summary if reports else 'nothing to compact'}")
    return dg.MaterializeResult(
        metadata={
            "tables": len(reports),
            "files_compacted": sum(r.files_compacted for r in reports),
            "files_removed": sum(r.files_removed for r in reports),
            "retention_days": config.retention_days,
            "report": dg.MetadataValue.md(summary if reports else "nothing to compact: the DuckDB file keeps no old versions (checkpointed)"),
        }
    )


lake_maintenance_job = dg.define_asset_job("lake_maintenance_job", selection=[lake_maintenance])
# Sundays at 03:15 UTC, between the hourly runs' busy minutes (20, 40 and 50 past).
lake_maintenance_schedule = dg.ScheduleDefinition(
    name="lake_maintenance_schedule", job=lake_maintenance_job, cron_schedule="15 3 * * 0", execution_timezone="UTC"
)
