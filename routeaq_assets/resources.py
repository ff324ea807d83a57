"""Resources for the outside systems, chosen per environment from one mapping."""

from __future__ import annotations

import itertools
import json
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Iterator

import dagster as dg
import duckdb
import polars as pl

from routeaq_assets.core.environment import MODEL_PREFIX, Settings, load_settings, require_writable_home
from routeaq_assets.core.files import write_atomically
from routeaq_assets.core.locks import file_lock
from routeaq_assets.core.registry import ForecastRegistry
from routeaq_assets.core.schema import POLLUTANTS, WEATHER, SourceDataError
from routeaq_assets.core.stores import HistoryStore, interval_factor_store, online_store
from routeaq_assets.core.warehouse_reads import MaintenanceReport, WarehouseReads
from routeaq_assets.core.windows import check_rows_for_window, year_span
from routeaq_assets.core.sites import load_packaged_registry, packaged_metadata_csv, site_attributes
from routeaq_assets.sources.demo_network import DemoNetwork, DemoSite, Shift
from routeaq_assets.sources.http import SourceUnavailable, fetch_to_cache, shared_session
from routeaq_assets.sources.local_tables import local_observations, local_weather
from routeaq_assets.sources.openair import NETWORK_BASE_URLS, openair_to_observations, read_rdata_table, site_year_filename
from routeaq_assets.sources.ukair_csv import UKAIR_BASE_URL, parse_ukair_csv, ukair_csv_url
from routeaq_assets.sources.demo_sos import DEMO_SOS_URL, DemoSosView
from routeaq_assets.sources.sos import SOS_URL, SosClient
from routeaq_assets.sources.openmeteo import (
    ARCHIVE_URL,
    FORECAST_DAYS_BEFORE,
    FORECAST_URL,
    PREVIOUS_RUNS_URL,
    forecast_where_archived,
    openmeteo_to_weather,
    request_params,
)


class WarehouseResource(WarehouseReads, dg.ConfigurableResource):
    """What every asset that reads or writes the warehouse is given: the embedded DuckDB file
    (``Warehouse``, the default) or, in production, Delta tables on S3 (``storage.DeltaWarehouse``).
    Both answer the shared reads of ``WarehouseReads``."""

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        raise NotImplementedError

    def has_table(self, table: str) -> bool:
        raise NotImplementedError

    def replace_window(
        self, table: str, frames: pl.DataFrame | Iterable[pl.DataFrame], start: datetime, end: datetime, site_ids: list[str] | None = None
    ) -> int:
        raise NotImplementedError

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        raise NotImplementedError

    def table_version(self, table: str) -> int | None:
        """The table's version, or None where the warehouse keeps no versions (the DuckDB file)."""
        return None

    def as_of(self, versions: dict[str, int]) -> WarehouseReads:
        """The shared reads over the tables at ``versions`` (from ``table_version``); with none
        named, the warehouse itself."""
        if versions:
            raise ValueError(f"{type(self).__name__} keeps no table versions: it cannot read {versions} (only the production lake can)")
        return self

    def maintain(self, retention: timedelta) -> list[MaintenanceReport]:
        """Compact small files and remove old versions no reader within ``retention`` needs."""
        raise NotImplementedError


class Warehouse(WarehouseResource):
    """The embedded DuckDB warehouse. DuckDB lets one process write the file or many read it,
    never both: every connection takes a lock on ``<path>.lock`` first (shared to read,
    exclusive to write) and waits up to ``lock_timeout_s`` for it, so runs, ``online_features``
    and any reader that goes through this class queue instead of failing. Writing runs also
    share the ``warehouse`` pool, so they queue in Dagster rather than on the lock."""

    path: str
    lock_timeout_s: float = 900.0  # a long backfill's write transaction

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        database = Path(self.path)
        read_only = read_only and database.exists()  # the first opener creates the file
        lock = database.with_name(database.name + ".lock")
        with file_lock(lock, exclusive=not read_only, timeout_s=self.lock_timeout_s, what=f"warehouse {database}"):
            database.parent.mkdir(parents=True, exist_ok=True)
            con = duckdb.connect(str(database), read_only=read_only)
            try:
                con.execute("SET TimeZone = 'UTC'")
                yield con
            finally:
                con.close()

    def replace_window(
        self, table: str, frames: pl.DataFrame | Iterable[pl.DataFrame], start: datetime, end: datetime, site_ids: list[str] | None = None
    ) -> int:
        """Atomically replace the rows of [start, end) in ``table`` with ``frames``: one frame, or
        frames produced one at a time (so a year of the network is never in memory at once).
        Every site's rows are replaced, or with ``site_ids`` only those sites' rows (the rest of
        the window stays: a re-ingest replaces only what it read).

        Re-running with the same frames leaves the same rows; a failure, in writing or in
        producing a frame, leaves the old rows. Returns the number of rows that were replaced."""
        parts = iter([frames] if isinstance(frames, pl.DataFrame) else frames)
        first = next(parts, None)
        if site_ids is not None and not site_ids:
            if first is not None and first.height:
                raise ValueError(f"{table}: {first.height} rows given, but no site to replace")
            return 0
        if first is None and not self.has_table(table):
            return 0
        scope, params = "time >= ? AND time < ?", [start, end]
        if site_ids is not None:
            scope, params = scope + " AND list_contains(?, site_id)", params + [list(site_ids)]
        with self.connect() as con:
            if first is not None:
                con.register("incoming", first.head(0).to_arrow())
                con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM incoming")
                # A contract that gained a column: the stored table gains it too (older rows null).
                stored = {row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()}
                for column, kind, *_ in con.execute("DESCRIBE incoming").fetchall():
                    if column not in stored:
                        con.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" {kind}')
            con.execute("BEGIN TRANSACTION")
            try:
                (replaced,) = con.execute(f"SELECT count(*) FROM {table} WHERE {scope}", params).fetchone()
                con.execute(f"DELETE FROM {table} WHERE {scope}", params)
                for frame in itertools.chain([first] if first is not None else [], parts):
                    check_rows_for_window(table, frame, start, end, site_ids)
                    con.register("incoming", frame.to_arrow())
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

    def maintain(self, retention: timedelta) -> list[MaintenanceReport]:
        """The DuckDB file keeps no old versions and no small files: a CHECKPOINT writes its WAL
        into the file, and there is nothing to compact."""
        if Path(self.path).exists():
            with self.connect() as con:
                con.execute("CHECKPOINT")
        return []

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
    ``sources.local_tables``). Downloads are cached in ``folder`` and revalidated.

    ``live``: ``sos`` reads the hours of the last ``live_hours`` from the UK-AIR Sensor
    Observation Service at ``live_url`` (provisional values; the demo network answers through
    the same SOS shapes), every older hour from the archive files above. Re-ingesting an hour
    once it is older than the live window replaces its provisional value with the archive's."""

    kind: str = "demo"
    network: str = "aurn"
    folder: str
    # The deployment's sites (ROUTEAQ_SITES): what site_registry holds unless its config names others.
    sites: list[str] = []
    base_url: str = ""
    timeout_s: float = 30.0
    max_concurrency: int = 4  # site-year files fetched at once: polite to the publisher
    retries_when_down: int = 3  # a run whose source is down asks again, after retry_wait_s, then doubling
    retry_wait_s: float = 120.0
    live: str = ""
    live_hours: int = 48
    live_url: str = ""  # empty: the UK-AIR service's published address (sources.sos.SOS_URL)

    def hours(self, site_id: str, year: int, start: datetime, end: datetime, pollutants: tuple[str, ...] | list[str] = POLLUTANTS) -> pl.DataFrame | None:
        """Observations of one site for the hours of [start, end) in ``year`` (None when the
        source has none): the live window's hours from the live feed, the others from the
        archive (``site_year``)."""
        start, end = max(start, datetime(year, 1, 1, tzinfo=timezone.utc)), min(end, datetime(year + 1, 1, 1, tzinfo=timezone.utc))
        if self.live not in ("", "sos"):
            raise ValueError(f"unknown live source {self.live!r}: use sos, or nothing for the archives only")
        now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        live_from = now - timedelta(hours=self.live_hours) if self.live else end
        frames = []
        if start < live_from:
            archive = self.site_year(site_id, year)
            if archive is not None:
                frames.append(archive.filter(pl.col("time").is_between(start, min(end, live_from), closed="left") & pl.col("pollutant").is_in(list(pollutants))))
        if max(start, live_from) < min(end, now):  # the hour now under way is not published yet
            live = self.live_client().observations(site_id, self.network_metadata(), tuple(pollutants), max(start, live_from), min(end, now), self.network)
            if live is not None:
                frames.append(live)
        return pl.concat(frames) if frames else None

    def live_client(self) -> SosClient:
        """The SOS client: the real service, or the demo network's values in the SOS shapes."""
        if self.kind == "demo":
            return SosClient(DEMO_SOS_URL, cache_folder=Path(self.folder) / "sos", transport=DemoSosView(_demo_network(self.folder, shift=self.demo_shift)))
        return SosClient(self.live_url or SOS_URL, cache_folder=Path(self.folder) / "sos", timeout_s=self.timeout_s)
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
    (the archive and Previous Runs APIs for the past, the forecast API ahead) or ``local`` (the
    met columns of a folder of openair-format tables, which hold no forecast).

    ``basis`` says what is stored for past hours: ``forecast`` (the default) the forecast as
    issued the day before each hour (kind ``forecast``), with the reanalysis where no archived
    forecast exists (kind ``reanalysis``, which the features use only at the forecast's origin);
    ``reanalysis`` the weather as it happened: an upper bound on skill, not what the service has."""

    kind: str = "demo"
    basis: str = "forecast"
    folder: str
    archive_url: str = ARCHIVE_URL
    previous_runs_url: str = PREVIOUS_RUNS_URL
    forecast_url: str = FORECAST_URL
    timeout_s: float = 30.0
    retries_when_down: int = 3  # as ObservationSource: a run whose source is down asks again
    retry_wait_s: float = 120.0
    demo_shift: str = ""  # the demo network writes weather and measurements together: same shift

    def _get(self, url: str, params: dict) -> dict:
        response = shared_session().get(url, params=params, timeout=self.timeout_s)
        if response.status_code >= 400:
            try:  # Open-Meteo explains a refusal as {"error": true, "reason": "..."}
                reason = response.json()["reason"]
            except (ValueError, KeyError, TypeError):
                reason = response.text[:200]
            raise SourceUnavailable(f"{url}: HTTP {response.status_code}: {reason}")
        return response.json()

    def window(self, site: dict, start: datetime, end: datetime, kind: str = "reanalysis") -> pl.DataFrame:
        """Weather of [start, end) at ``site``: the past per ``basis``, or (``kind="forecast"``)
        the forecast issued at ``start - 1 h`` for the hours ahead."""
        if self.basis not in ("forecast", "reanalysis"):
            raise ValueError(f"unknown weather basis {self.basis!r}: use forecast or reanalysis")
        site_id = site["site_id"]
        ahead = kind == "forecast"
        if self.kind == "demo":
            network = _demo_network(self.folder, (site_id,), self.demo_shift)
            if ahead:
                payload = network.forecast_ahead(site_id, start - timedelta(hours=1), end)
                return openmeteo_to_weather(payload, site_id=site_id, kind="forecast", source="demo:forecast")
            frames = []
            for year in year_span(start, end):
                network.ensure_site_year(site_id, year)
                path = network.weather_path(site_id, year)
                reanalysis = openmeteo_to_weather(json.loads(path.read_text()), site_id=site_id, kind="reanalysis", source=f"demo:{path.name}")
                if self.basis == "forecast":
                    runs = network.previous_runs_path(site_id, year)
                    archived = openmeteo_to_weather(
                        json.loads(runs.read_text()), site_id=site_id, kind="forecast", source=f"demo:previous-runs:{runs.name}",
                        days_before=FORECAST_DAYS_BEFORE,
                    )
                    reanalysis = forecast_where_archived(archived, reanalysis)
                frames.append(reanalysis)
            weather = pl.concat(frames)
        elif self.kind == "open-meteo":
            def ask(url: str, days_before: int = 0) -> dict:
                return self._get(url, request_params(site["latitude"], site["longitude"], start.date(), end.date(), days_before))

            if ahead:
                weather = openmeteo_to_weather(ask(self.forecast_url), site_id=site_id, kind="forecast", source=self.forecast_url)
            else:
                weather = openmeteo_to_weather(ask(self.archive_url), site_id=site_id, kind="reanalysis", source=self.archive_url)
                if self.basis == "forecast":
                    archived = openmeteo_to_weather(
                        ask(self.previous_runs_url, FORECAST_DAYS_BEFORE), site_id=site_id, kind="forecast",
                        source=self.previous_runs_url, days_before=FORECAST_DAYS_BEFORE,
                    )
                    weather = forecast_where_archived(archived, weather)
        elif self.kind == "local":
            if ahead:
                return pl.DataFrame(schema=WEATHER)  # a folder of tables holds no forecast
            # No table for the site in the folder is no data (its stored weather stays).
            weather = local_weather(Path(self.folder), site_id)
            if weather is None:
                weather = pl.DataFrame(schema=WEATHER)
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


class Lake(dg.ConfigurableResource):
    """The lake's contract for files that are not tables (reports, plots, monitoring records).

    Keys are relative, ``/``-separated names (``reports/drift/no2/2025-08-01T12.json``); every
    method takes and returns keys, and ``uri`` turns one into an address a person or tool can
    open. Two implementations, chosen by the environment mapping: ``LocalLake`` (a folder) and
    ``storage.S3Lake`` (objects under a bucket prefix). ``tests/test_lake_contract.py`` runs the
    same tests against both."""

    def uri(self, key: str = "") -> str:
        """Where ``key`` lives (a folder path, or ``s3://bucket/prefix/key``); '' for the root."""
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` at ``key`` atomically (a reader sees the old or the new file); returns its URI."""
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes | None:
        """The file at ``key``, or None if there is none."""
        raise NotImplementedError

    def list_keys(self, prefix: str, suffix: str = "") -> list[str]:
        """Keys directly under the folder ``prefix`` (not in its sub-folders) ending with
        ``suffix``, in name order."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a key that is not there is not an error."""
        raise NotImplementedError


class LocalLake(Lake):
    """The lake as a local folder (the embedded default)."""

    root: str

    def uri(self, key: str = "") -> str:
        return str(Path(self.root) / key) if key else str(Path(self.root))

    def write_bytes(self, key: str, data: bytes) -> str:
        return str(write_atomically(Path(self.root) / key, data))

    def read_bytes(self, key: str) -> bytes | None:
        path = Path(self.root) / key
        return path.read_bytes() if path.is_file() else None

    def list_keys(self, prefix: str, suffix: str = "") -> list[str]:
        folder = Path(self.root) / prefix
        return sorted(f"{prefix}/{p.name}" for p in folder.glob(f"*{suffix}") if p.is_file()) if folder.exists() else []

    def delete(self, key: str) -> None:
        (Path(self.root) / key).unlink(missing_ok=True)


class OnlineStore(dg.ConfigurableResource):
    """Where the service reads site history: recent hours from ``target`` (a Parquet file when
    embedded, ``redis://...`` in production) and older hours from yearly Parquet files."""

    target: str
    history_folder: str

    def publish(self, panel: pl.DataFrame) -> str:
        return online_store(self.target).publish(panel)

    def publish_interval_factors(self, factors: pl.DataFrame) -> str:
        return interval_factor_store(self.target).publish(factors)

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


def source_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The observation and weather sources: the same in every environment."""
    weather_kind = {"demo": "demo", "local": "local"}.get(settings.source, "open-meteo")
    return {
        "observations": ObservationSource(
            kind=settings.source,
            folder=_source_folder(settings),
            sites=list(settings.sites),
            live=settings.live,
            live_hours=settings.live_hours,
            live_url=settings.live_url,
            demo_shift=settings.demo_shift,
        ),
        "weather": WeatherSource(kind=weather_kind, folder=_source_folder(settings), demo_shift=settings.demo_shift),
    }


def local_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        **source_resources(settings),
        "warehouse": Warehouse(path=str(settings.warehouse_path)),
        "model_store": ModelStore(
            tracking_uri=settings.mlflow_tracking_uri, artifact_root=str(settings.home / "mlflow" / "artifacts"), prefix=settings.model_prefix
        ),
        "lake": LocalLake(root=str(settings.lake_root)),
        "online_store": OnlineStore(target=settings.online_store_target, history_folder=str(settings.history_dir)),
    }


def production_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    # Imported here: the production parts (dagster-aws, boto3, dagster-mlflow) load only in production.
    from routeaq_assets.production import production_resources as build

    return build(settings)


RESOURCES_BY_ENVIRONMENT = {"local": local_resources, "production": production_resources}


def get_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources of the environment ``ROUTEAQ_ENV`` names. In production this checks that every
    service answers, so a deployment with a missing or unreachable service fails at start-up."""
    settings = settings or load_settings()
    require_writable_home(settings.home)
    return RESOURCES_BY_ENVIRONMENT[settings.environment](settings)
