"""Time windows: every window in RouteAQ is half-open, [start, end)."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl


def year_span(start: datetime, end: datetime) -> range:
    """Calendar years touched by the half-open window [start, end): a window that ends at
    1 January 00:00 does not touch the year that begins then (its last hour is 31 December 23:00)."""
    return range(start.year, (end - timedelta(microseconds=1)).year + 1)


def check_rows_for_window(table: str, frame: pl.DataFrame, start: datetime, end: datetime, site_ids: list[str] | None = None) -> None:
    """Refuse rows a replacement of [start, end) (of ``site_ids`` only, when given) would not
    cover: written, they would sit outside the window that is deleted and duplicate stored keys."""
    outside = frame.filter((pl.col("time") < start) | (pl.col("time") >= end))
    if outside.height:
        raise ValueError(f"{table}: {outside.height} rows fall outside the window {start}..{end}")
    if site_ids is not None:
        strays = sorted(set(frame["site_id"].unique().to_list()) - set(site_ids))
        if strays:
            raise ValueError(f"{table}: rows of sites {strays} are not among the sites replaced {sorted(site_ids)}")
