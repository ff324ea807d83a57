"""Monitoring: hourly drift reports against the champion's training data, and the sensor that
asks for retraining when drift crosses its threshold."""


import json
from datetime import datetime, timedelta

import dagster as dg

from routeaq_assets.core.drift import feature_drift
from routeaq_assets.core.features import FEATURE_COLUMNS
from routeaq_assets.defs.features import silver_features
from routeaq_assets.defs.partitions import hourly_partitions
from routeaq_assets.resources import Lake, ModelStore, Warehouse

DRIFT_POLLUTANT = "pm25"
REFERENCE_ROWS = 5000
DRIFT_SHARE_THRESHOLD = 0.5


@dg.asset(
    group_name="monitoring",
    partitions_def=hourly_partitions,
    deps=[silver_features, f"{DRIFT_POLLUTANT}_champion"],
    kinds={"evidently"},
)
def drift_report(context: dg.AssetExecutionContext, warehouse: Warehouse, model_store: ModelStore, lake: Lake) -> dg.MaterializeResult:
    """Evidently data drift of the last 24 hours of PM2.5 features (ending with the partition
    hour) against the current champion's training rows, written to the lake."""
    hour: datetime = context.partition_time_window.start
    name = model_store.model_name(DRIFT_POLLUTANT)
    champion = model_store.registry().load(name)
    if champion is None:
        raise dg.Failure(f"drift_report: {name} has no champion yet; train and promote a model first")
    current = warehouse.query(
        "SELECT * FROM silver_features WHERE pollutant = ? AND time > ? AND time <= ?",
        [DRIFT_POLLUTANT, hour - timedelta(hours=24), hour],
    )
    if current.is_empty():
        raise dg.Failure(f"drift_report: no {DRIFT_POLLUTANT} features in the 24 hours ending {hour.isoformat()}")
    reference = warehouse.query(
        f"SELECT * FROM silver_features WHERE pollutant = ? AND time >= ? AND time < ? USING SAMPLE {REFERENCE_ROWS} ROWS (reservoir, 7)",
        [DRIFT_POLLUTANT, datetime.fromisoformat(champion.metadata["train_start"]), datetime.fromisoformat(champion.metadata["holdout_start"])],
    )
    columns = [c for c in FEATURE_COLUMNS if c not in ("latitude", "longitude", "location_type_code")]
    result = feature_drift(reference, current, columns)
    # JSON (about 10 kB) is kept for every hour; the HTML page (about 5 MB) is kept for drifted
    # hours, and the newest one is always at latest.html.
    folder = f"reports/drift/{DRIFT_POLLUTANT}"
    lake.write_bytes(f"{folder}/{hour:%Y-%m-%dT%H}.json", result.json.encode())
    html_path = lake.write_bytes(f"{folder}/latest.html", result.html.encode())
    if result.drifted_share > DRIFT_SHARE_THRESHOLD:
        html_path = lake.write_bytes(f"{folder}/{hour:%Y-%m-%dT%H}.html", result.html.encode())
    top = sorted(result.columns, key=lambda c: str(c["score"]))[:10]
    return dg.MaterializeResult(
        metadata={
            "drifted_columns": result.drifted_columns,
            "drifted_share": result.drifted_share,
            "threshold": DRIFT_SHARE_THRESHOLD,
            "champion_version": champion.version,
            "reference_rows": reference.height,
            "current_rows": current.height,
            "report": dg.MetadataValue.path(html_path),
            "columns": dg.MetadataValue.json(json.loads(json.dumps(top, default=str))),
        }
    )
