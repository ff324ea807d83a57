"""The reads every consumer of the warehouse shares (features, training, evaluation, monitoring,
serving), written once against the warehouse's query interface (``query(sql, params)``), so the
embedded DuckDB file and the production lake answer them the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from routeaq_assets.core.features import SILVER_COLUMNS, build_features, hourly_panel, lookback_start
from routeaq_assets.core.models import kept_of_leads
from routeaq_assets.core.sites import site_attributes


class WarehouseReads:
    """Mixed into a warehouse resource that has ``query(sql, params) -> pl.DataFrame``."""

    def stored_panel(self, start: datetime, end: datetime, weather_ahead: pl.DataFrame | None = None) -> pl.DataFrame:
        """The hourly panel of [start, end) from the stored observations and weather (plus
        ``weather_ahead`` for hours not stored yet)."""
        observations = self.query("SELECT * FROM observations WHERE time >= ? AND time < ?", [start, end])
        weather = self.query("SELECT * FROM weather WHERE time >= ? AND time < ?", [start, end])
        if weather_ahead is not None:
            weather = pl.concat([weather, weather_ahead], how="vertical_relaxed")
        sites = site_attributes(self.query("SELECT * FROM sites"))
        return hourly_panel(observations, weather, sites, start, end)

    def inputs_version(self, start: datetime, end: datetime) -> tuple:
        """What ``stored_panel(start, end)`` reads, in brief: the rows of observations and weather
        in [start, end) and the newest time any of them was ingested. Another run that replaced
        any of those rows since changes it (a replacement is ingested later)."""
        return tuple(
            self.query(f"SELECT count(*) AS n, max(ingested_at) AS newest FROM {table} WHERE time >= ? AND time < ?", [start, end]).row(0)
            for table in ("observations", "weather")
        )

    def panel_with_lookback(self, start: datetime, end: datetime) -> pl.DataFrame:
        """The hourly panel of [start, end) with the lookback its first rows' features need."""
        return self.stored_panel(lookback_start(start), end)

    def stored_features(
        self, pollutant: str, start: datetime, end: datetime, horizon: int | tuple[int, ...] = 1, thin_before: datetime | None = None
    ) -> pl.DataFrame:
        """Feature rows of [start, end) for ``horizon`` hours ahead (one lead, or several stacked
        and told apart by ``hours_ahead``), in time order: the stored ``silver_features`` for one
        hour, built from the stored observations for other leads (one panel read for all).
        ``thin_before``: the rows before it (the training rows) only as ``core.models.thin_leads``
        keeps them, each lead thinned as it is built (a year of 150 sites at 14 leads is 18
        million rows)."""
        if horizon == 1 or horizon == (1,):
            return self.query(
                "SELECT * FROM silver_features WHERE pollutant = ? AND time >= ? AND time < ? ORDER BY time, site_id",
                [pollutant, start, end],
            )
        panel = self.panel_with_lookback(start, end)
        leads = (horizon,) if isinstance(horizon, int) else horizon
        kept = pl.lit(True) if thin_before is None else (pl.col("time") >= thin_before) | kept_of_leads(len(leads))
        return (
            pl.concat([build_features(panel, pollutant, h).filter((pl.col("time") >= start) & kept).select(SILVER_COLUMNS) for h in leads])
            .sort("time", "site_id", "hours_ahead")
        )


class TablesAsOf(WarehouseReads):
    """The shared reads over tables as they were at given versions (table -> version): a
    warehouse's ``as_of``, for re-running on what a training run read. Read only."""

    def __init__(self, query_at: Callable[..., pl.DataFrame], versions: dict[str, int]) -> None:
        self._query_at = query_at
        self.versions = dict(versions)

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        return self._query_at(sql, params, versions=self.versions)


@dataclass(frozen=True)
class MaintenanceReport:
    """What compaction and the clean-up of old versions did to one table."""

    table: str
    version: int | None  # the table's version after the upkeep (its commits are versions too)
    files_compacted: int  # small files merged ...
    files_added: int  # ... into these
    files_removed: int  # files that no version within the retention reads, deleted
