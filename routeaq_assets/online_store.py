"""The online store as a resource: where the serving assets publish the recent-history panel,
the interval factors, the verified daily errors and the yearly history files the service reads
(production's is ``production.SharedOnlineStore``)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from routeaq_assets.adapters.stores import HistoryStore, daily_error_store, interval_factor_store, online_store
from routeaq_assets.core.intervals import empty_factors


class OnlineStore(dg.ConfigurableResource):
    """Where the service reads site history: recent hours from ``target`` (a Parquet file when
    embedded, ``redis://...`` in production) and older hours from yearly Parquet files."""

    target: str
    history_folder: str

    def publish(self, panel: pl.DataFrame) -> str:
        return online_store(self.target).publish(panel)

    def publish_interval_factors(self, factors: pl.DataFrame) -> str:
        return interval_factor_store(self.target).publish(factors)

    def interval_factors(self) -> pl.DataFrame:
        """The interval factors published last, as the service reads them (none yet: an empty
        table, under which the model's own interval is served)."""
        store = interval_factor_store(self.target)
        return store.read() if store.version() is not None else empty_factors()

    def publish_daily_errors(self, errors: pl.DataFrame) -> str:
        return daily_error_store(self.target).publish(errors)

    def history(self) -> HistoryStore:
        return HistoryStore(Path(self.history_folder))
