"""Time windows: every window in RouteAQ is half-open, [start, end)."""

from __future__ import annotations

from datetime import datetime, timedelta


def year_span(start: datetime, end: datetime) -> range:
    """Calendar years touched by the half-open window [start, end): a window that ends at
    1 January 00:00 does not touch the year that begins then (its last hour is 31 December 23:00)."""
    return range(start.year, (end - timedelta(microseconds=1)).year + 1)
