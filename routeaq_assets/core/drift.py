"""Feature drift between a reference sample (the champion's training rows) and recent rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl


@dataclass
class DriftResult:
    drifted_columns: int
    drifted_share: float
    columns: list[dict[str, Any]]
    html: str
    json: str


def feature_drift(reference: pl.DataFrame, current: pl.DataFrame, columns: list[str]) -> DriftResult:
    """Evidently's data drift preset over ``columns``; each column's method and score as
    Evidently chose them (the method depends on sample size)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    usable = [c for c in columns if reference[c].drop_nulls().len() > 1 and current[c].drop_nulls().len() > 1]
    if not usable:
        raise ValueError("no feature has values in both the reference and the current window")
    definition = DataDefinition(numerical_columns=usable)
    snapshot = Report([DataDriftPreset(columns=usable)]).run(
        Dataset.from_pandas(current.select(usable).to_pandas(), data_definition=definition),
        Dataset.from_pandas(reference.select(usable).to_pandas(), data_definition=definition),
    )
    drifted, share, per_column = 0, 0.0, []
    for metric in snapshot.dict()["metrics"]:
        value, config = metric.get("value"), metric.get("config", {})
        if isinstance(value, dict) and {"count", "share"} <= set(value):
            drifted, share = int(value["count"]), float(value["share"])
        elif "column" in config:
            per_column.append({"column": config["column"], "method": config.get("method"), "score": value, "threshold": config.get("threshold")})
    return DriftResult(drifted, share, per_column, snapshot.get_html_str(as_iframe=False), snapshot.json())
