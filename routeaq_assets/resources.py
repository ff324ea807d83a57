"""Resources for the outside systems, chosen per environment from one mapping."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

import dagster as dg
import duckdb
import polars as pl

from routeaq_assets.core.environment import MODEL_PREFIX, Settings, get_environment, load_settings, model_name
from routeaq_assets.core.registry import ForecastRegistry
from routeaq_assets.core.schema import SourceDataError
from routeaq_assets.core.stores import HistoryStore, online_store
from routeaq_assets.core.sites import load_packaged_registry, packaged_metadata_csv, site_attributes
from routeaq_assets.sources.demo_network import DemoNetwork, DemoSite, Shift
from routeaq_assets.sources.http import SourceUnavailable, fetch_to_cache, shared_session
from routeaq_assets.sources.local_tables import local_observations, local_weather
from routeaq_assets.sources.openair import NETWORK_BASE_URLS, openair_to_observations, read_rdata_table, site_year_filename
from routeaq_assets.sources.ukair_csv import UKAIR_BASE_URL, parse_ukair_csv, ukair_csv_url
from routeaq_assets.sources.openmeteo import ARCHIVE_URL, FORECAST_URL, openmeteo_to_weather, request_params


class Warehouse(dg.ConfigurableResource):
    """The embedded DuckDB warehouse. One writer at a time (the ``warehouse`` pool); readers
    open it read-only."""

    path: str

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(self.path, read_only=read_only and Path(self.path).exists())
        try:
            con.execute("SET TimeZone = 'UTC'")
            yield con
        finally:
            con.close()

    def replace_window(self, table: str, frame: pl.DataFrame, start: datetime, end: datetime) -> int:
        """Atomically replace the rows of [start, end) in ``table`` with ``frame``.

        Re-running with the same frame leaves the same rows; a failure leaves the old rows.
        Returns the number of rows that were replaced."""
        outside = frame.filter((pl.col("time") < start) | (pl.col("time") >= end))
        if outside.height:
            raise ValueError(f"{table}: {outside.height} rows fall outside the window {start}..{end}")
        with self.connect() as con:
            con.register("incoming", frame.to_arrow())
            con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM incoming WHERE false")
            con.execute("BEGIN TRANSACTION")
            try:
                (replaced,) = con.execute(
                    f"SELECT count(*) FROM {table} WHERE time >= ? AND time < ?", [start, end]
                ).fetchone()
                con.execute(f"DELETE FROM {table} WHERE time >= ? AND time < ?", [start, end])
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        return int(replaced)

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        with self.connect() as con:
            con.register("incoming", frame.to_arrow())
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM incoming")

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        with self.connect(read_only=True) as con:
            return pl.from_arrow(con.execute(sql, params or []).to_arrow_table())

    def has_table(self, table: str) -> bool:
        if not Path(self.path).exists():
            return False
        with self.connect(read_only=True) as con:
            return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()[0])


def _demo_network(folder: str, site_ids: tuple[str, ...] | None = None, shift: str = "") -> DemoNetwork:
    sites = site_attributes(load_packaged_registry(site_ids))
    return DemoNetwork(
        Path(folder),
        [DemoSite(r["site_id"], r["site_name"], r["location_type"], r["latitude"], r["longitude"]) for r in sites.iter_rows(named=True)],
        shift=Shift.parse(shift),
    )


class ObservationSource(dg.ConfigurableResource):
    """Where hourly observations come from.

    ``kind``: ``demo`` (the demo network's openair files), ``openair`` (per-site-year RData
    over HTTP from ``base_url``, default the ``network``'s published address), ``ukair`` (UK-AIR
    per-site-year CSV over HTTP) or ``local`` (a folder of openair-format tables, see
    ``sources.local_tables``). Downloads are cached in ``folder`` and revalidated."""

    kind: str = "demo"
    network: str = "aurn"
    folder: str
    base_url: str = ""
    timeout_s: float = 30.0
    max_concurrency: int = 4  # site-year files fetched at once: polite to the publisher
    demo_shift: str = ""  # ``demo`` kind: an injected change (``sources.demo_network.Shift``)

    def network_metadata(self) -> pl.DataFrame:
        """The network's published site metadata (``{base}AURN_metadata.RData`` layout) for the
        ``openair`` kind; the packaged AURN metadata otherwise."""
        if self.kind != "openair":
            return pl.read_csv(packaged_metadata_csv(), infer_schema_length=0)
        base = self.base_url or NETWORK_BASE_URLS[self.network]
        name = f"{self.network.upper()}_metadata.RData"
        path = fetch_to_cache(shared_session(), f"{base}{name}", Path(self.folder) / self.network / name, self.timeout_s)
        if path is None:
            raise SourceDataError(f"{base}{name}: the network publishes no metadata file there")
        return read_rdata_table(path)

    def site_year(self, site_id: str, year: int) -> pl.DataFrame | None:
        """Observations of one site-year, or None when the source has no such file."""
        if self.kind == "demo":
            network = _demo_network(self.folder, (site_id,), self.demo_shift)
            network.ensure_site_year(site_id, year)
            path = network.openair_path(site_id, year)
            return openair_to_observations(read_rdata_table(path), site_id=site_id, network=self.network, source=f"demo:{path.name}")
        if self.kind == "openair":
            base = self.base_url or NETWORK_BASE_URLS[self.network]
            url = f"{base}{site_year_filename(site_id, year)}"
            path = fetch_to_cache(shared_session(), url, Path(self.folder) / self.network / site_year_filename(site_id, year), self.timeout_s)
            if path is None:
                return None
            return openair_to_observations(read_rdata_table(path), site_id=site_id, network=self.network, source=url)
        if self.kind == "ukair":
            url = ukair_csv_url(site_id, year, self.base_url or UKAIR_BASE_URL)
            path = fetch_to_cache(shared_session(), url, Path(self.folder) / "uk-air" / f"{site_id}_{year}.csv", self.timeout_s)
            if path is None:
                return None
            return parse_ukair_csv(path.read_text(encoding="utf-8", errors="replace"), site_id=site_id, network=self.network, source=url)
        if self.kind == "local":
            observations = local_observations(Path(self.folder), site_id, self.network)
            return None if observations is None else observations.filter(pl.col("time").dt.year() == year)
        raise ValueError(f"unknown observation source kind {self.kind!r}: use demo, openair, ukair or local")


class WeatherSource(dg.ConfigurableResource):
    """Hourly weather per site: ``demo`` (the demo network's Open-Meteo answers), ``open-meteo``
    (the archive API, and the forecast API for hours ahead) or ``local`` (the met columns of a
    folder of openair-format tables)."""

    kind: str = "demo"
    folder: str
    archive_url: str = ARCHIVE_URL
    forecast_url: str = FORECAST_URL
    timeout_s: float = 30.0
    demo_shift: str = ""  # the demo network writes weather and measurements together: same shift

    def window(self, site: dict, start: datetime, end: datetime, kind: str = "reanalysis") -> pl.DataFrame:
        """Weather of [start, end) at ``site``: ``reanalysis`` for the past, ``forecast`` ahead."""
        site_id = site["site_id"]
        if self.kind == "demo":
            network = _demo_network(self.folder, (site_id,), self.demo_shift)
            frames = []
            for year in range(start.year, end.year + 1):
                network.ensure_site_year(site_id, year)
                path = network.weather_path(site_id, year)
                frames.append(openmeteo_to_weather(json.loads(path.read_text()), site_id=site_id, kind=kind, source=f"demo:{path.name}"))
            weather = pl.concat(frames)
        elif self.kind == "open-meteo":
            params = request_params(site["latitude"], site["longitude"], start.date(), end.date())
            url = self.forecast_url if kind == "forecast" else self.archive_url
            response = shared_session().get(url, params=params, timeout=self.timeout_s)
            if response.status_code >= 400:
                raise SourceUnavailable(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
            weather = openmeteo_to_weather(response.json(), site_id=site_id, kind=kind, source=url)
        elif self.kind == "local":
            weather = local_weather(Path(self.folder), site_id)
            if weather is None:
                raise SourceDataError(f"local weather: no ws, wd or air_temp column for {site_id} in {self.folder}")
        else:
            raise ValueError(f"unknown weather source kind {self.kind!r}: use demo, open-meteo or local")
        return weather.filter((pl.col("time") >= start) & (pl.col("time") < end))


class ModelStore(dg.ConfigurableResource):
    """The MLflow tracking server and model registry."""

    tracking_uri: str
    artifact_root: str = ""
    prefix: str = MODEL_PREFIX

    def registry(self) -> ForecastRegistry:
        return ForecastRegistry(self.tracking_uri, Path(self.artifact_root) if self.artifact_root else None)

    def model_name(self, pollutant: str, horizon: int = 1) -> str:
        return model_name(pollutant, self.prefix, horizon)


class Lake(dg.ConfigurableResource):
    """Files that are not tables: reports and snapshots. A local folder when embedded."""

    root: str

    def write_bytes(self, key: str, data: bytes) -> str:
        path = Path(self.root) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        partial.replace(path)
        return str(path)

    def read_bytes(self, key: str) -> bytes | None:
        """The file at ``key``, or None if there is none."""
        path = Path(self.root) / key
        return path.read_bytes() if path.exists() else None

    def list_keys(self, prefix: str, suffix: str = "") -> list[str]:
        """Keys under the folder ``prefix`` ending with ``suffix``, in name order."""
        folder = Path(self.root) / prefix
        return sorted(f"{prefix}/{p.name}" for p in folder.glob(f"*{suffix}")) if folder.exists() else []

    def delete(self, key: str) -> None:
        (Path(self.root) / key).unlink(missing_ok=True)


class OnlineStore(dg.ConfigurableResource):
    """Where the service reads site history: recent hours from ``target`` (a Parquet file when
    embedded, ``redis://...`` in production) and older hours from yearly Parquet files."""

    target: str
    history_folder: str

    def publish(self, panel: pl.DataFrame) -> str:
        return online_store(self.target).publish(panel)

    def history(self) -> HistoryStore:
        return HistoryStore(Path(self.history_folder))


def _source_folder(settings: Settings) -> str:
    """Where the observation and weather sources read: the demo network, the user's folder, or
    the download cache of the HTTP sources."""
    if settings.source == "demo":
        return str(settings.demo_network_root)
    if settings.source == "local":
        return str(settings.source_folder)
    return str(settings.home / "sources")


def local_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    weather_kind = {"demo": "demo", "local": "local"}.get(settings.source, "open-meteo")
    return {
        "warehouse": Warehouse(path=str(settings.warehouse_path)),
        "observations": ObservationSource(kind=settings.source, folder=_source_folder(settings), demo_shift=settings.demo_shift),
        "weather": WeatherSource(kind=weather_kind, folder=_source_folder(settings), demo_shift=settings.demo_shift),
        "model_store": ModelStore(
            tracking_uri=settings.mlflow_tracking_uri, artifact_root=str(settings.home / "mlflow" / "artifacts"), prefix=settings.model_prefix
        ),
        "lake": Lake(root=str(settings.lake_root)),
        "online_store": OnlineStore(target=settings.online_store_target, history_folder=str(settings.history_dir)),
    }


RESOURCES_BY_ENVIRONMENT = {"local": local_resources}


def get_resources() -> dict[str, dg.ConfigurableResource]:
    environment = get_environment()
    if environment not in RESOURCES_BY_ENVIRONMENT:
        raise ValueError(f"no resources are defined for ROUTEAQ_ENV={environment!r} yet")
    return RESOURCES_BY_ENVIRONMENT[environment](load_settings())
