"""The prediction-log contract (``schema.PREDICTIONS``): the one way a served forecast becomes a
log record, and the one way monitoring reads the log back.

The log is one JSON line per forecast, one file per UTC day of the request
(``predictions-YYYY-MM-DD.jsonl``); times are ISO 8601 UTC strings in the file."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import polars as pl

from routeaq_assets.core.schema import PREDICTIONS, TIME


# Columns added to the contract later, and what a line written before them meant.
DEFAULTS = {"interval_factor": 1.0}


def prediction_record(result: dict, requested_at: datetime) -> dict:
    """The log record of one served forecast (a forecast answer as the service builds it)."""
    return {
        "site_id": result["site_id"],
        "time": result["timestamp"],
        "pollutant": result["pollutant"],
        "model_name": result["model_name"],
        "model_version": result["model_version"],
        "hours_ahead": result["hours_ahead"],
        "origin": result["origin"],
        "pred": result["pred"],
        "lower": result["lower"],
        "upper": result["upper"],
        "interval": result["interval"],
        "interval_factor": result["interval_factor"],
        "requested_at": requested_at.isoformat(),
    }


def prediction_lines(results: list[dict], requested_at: datetime) -> bytes:
    """The log lines of ``results``, ready for one append."""
    return "".join(json.dumps(prediction_record(r, requested_at), separators=(",", ":")) + "\n" for r in results).encode()


def empty_predictions() -> pl.DataFrame:
    return pl.DataFrame(schema=PREDICTIONS)


def read_prediction_log(folder: Path, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
    """Every logged forecast for hours in [start, end), conformed to ``schema.PREDICTIONS``.

    A torn last line (a crash mid-write) is skipped; lines of an older layout without the
    contract's columns are skipped too, so a reader never guesses a horizon or a model. Lines
    written before the interval was recalibrated read ``interval_factor`` 1 (what they served)."""
    rows = []
    for path in sorted(Path(folder).glob("predictions-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            record = {**DEFAULTS, **record}
            if all(k in record for k in PREDICTIONS):
                rows.append({k: record[k] for k in PREDICTIONS})
    if not rows:
        return empty_predictions()
    frame = pl.DataFrame(rows, schema={k: (pl.Utf8 if v == TIME else v) for k, v in PREDICTIONS.items()})
    frame = frame.with_columns(pl.col(c).str.to_datetime(time_zone="UTC", time_unit="us") for c, t in PREDICTIONS.items() if t == TIME)
    if start is not None:
        frame = frame.filter(pl.col("time") >= start)
    if end is not None:
        frame = frame.filter(pl.col("time") < end)
    return frame
