"""The prediction-log contract (``schema.PREDICTIONS``): the one way a served forecast becomes a
log record, and the one way monitoring reads the log back.

The log is one JSON line per forecast; times are ISO 8601 UTC strings. Embedded, the service
writes one file per UTC day of the request (``predictions-YYYY-MM-DD.jsonl`` in its folder). In
production every service pod writes local chunks and ships each closed chunk to the shared
folder (``adapters.shared``) as immutable objects, one per UTC day of the forecast hour:
``day=YYYY-MM-DD/<hostname>-<pid>-<opened>.jsonl``. A name of its own per pod and chunk means
pods never write the same object, and a re-shipped chunk replaces itself with the same lines, so
readers see no loss and no duplicate. Partitioned by the forecast hour (what readers select on),
not the request, because a request may ask for any stored hour: a window's forecasts are exactly
the objects under its days. JSON lines rather than Parquet: a chunk is shipped as the bytes the
service appended, with no conversion in the service, and both layouts are read by one parser."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

import polars as pl

from routeaq_assets.core.schema import PREDICTIONS, TIME

SHIPPED = "shipped"  # the reader's local copies of shipped chunks, in the log folder
CACHE_DAYS = 7  # cached days kept before the start of the window read


class ShippedChunks(Protocol):
    """Where the shipped chunks are read from: the shared folder (``adapters.shared.SharedFolder``)."""

    def objects(self, under: str = "") -> dict[str, str]: ...

    def download(self, name: str, path: Path) -> Path: ...


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


def chunk_by_day(chunk: bytes) -> dict[str, bytes]:
    """The lines of a chunk grouped by the UTC day of their forecast hour: what is shipped under
    ``day=YYYY-MM-DD/``. A torn line (a crash mid-write) is left out, as the reader would skip it."""
    days: dict[str, list[bytes]] = defaultdict(list)
    for line in chunk.splitlines(keepends=True):
        try:
            days[json.loads(line)["time"][:10]].append(line)
        except (ValueError, KeyError, TypeError):
            continue
    return {day: b"".join(lines) for day, lines in sorted(days.items())}


def _days(start: datetime, end: datetime) -> list[str]:
    day = start.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    while day < end:
        days.append(f"{day:%Y-%m-%d}")
        day += timedelta(days=1)
    return days


def _shipped_files(shared: ShippedChunks, cache: Path, start: datetime | None, end: datetime | None) -> list[Path]:
    """Local copies of the chunks shipped under the days of [start, end) (every day when either
    bound is missing). Shipped chunks never change, so each is downloaded once; cached days more
    than ``CACHE_DAYS`` before ``start`` are removed, so a long-lived reader's cache stays small."""
    names = [n for prefix in ([f"day={d}/" for d in _days(start, end)] if start and end else ["day="]) for n in shared.objects(prefix)]
    for name in names:
        if not (cache / name).exists():
            shared.download(name, cache / name)
    if start is not None and cache.is_dir():
        oldest = f"day={start - timedelta(days=CACHE_DAYS):%Y-%m-%d}"
        for day in cache.glob("day=*"):
            if day.name < oldest:
                shutil.rmtree(day, ignore_errors=True)
    return [cache / name for name in sorted(names)]


def read_prediction_log(
    folder: Path, start: datetime | None = None, end: datetime | None = None, shared: ShippedChunks | None = None
) -> pl.DataFrame:
    """Every logged forecast for hours in [start, end), conformed to ``schema.PREDICTIONS``: the
    day files in ``folder``, or in production (``shared``, from ``adapters.shared.shared_folder``)
    the chunks every service pod shipped there, cached under ``folder/shipped``.

    A torn last line (a crash mid-write) is skipped; lines of an older layout without the
    contract's columns are skipped too, so a reader never guesses a horizon or a model. Lines
    written before the interval was recalibrated read ``interval_factor`` 1 (what they served)."""
    folder = Path(folder)
    paths = sorted(folder.glob("predictions-*.jsonl")) if shared is None else _shipped_files(shared, folder / SHIPPED, start, end)
    rows = []
    for path in paths:
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
