"""Where hourly observations come from: one resource class per source, chosen by the environment
mapping (``environments.OBSERVATION_SOURCES``) from ``ROUTEAQ_SOURCE``. Assets take the
contract, ``ObservationSource``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import polars as pl

from routeaq_assets.core.schema import POLLUTANTS, SourceDataError
from routeaq_assets.core.sites import packaged_metadata_csv
from routeaq_assets.sources.demo_sos import DEMO_SOS_URL, DemoSosView
from routeaq_assets.sources.http import fetch_to_cache, shared_session
from routeaq_assets.sources.local_tables import local_observations
from routeaq_assets.sources.openair import NETWORK_BASE_URLS, openair_to_observations, read_rdata_table, site_year_filename
from routeaq_assets.sources.sos import SOS_URL, SosClient
from routeaq_assets.sources.ukair_csv import UKAIR_BASE_URL, parse_ukair_csv, ukair_csv_url


class ObservationSource(dg.ConfigurableResource):
    """Where hourly observations come from: the archive of one site-year at a time
    (``site_year``, one subclass per source), and the live feed for the newest hours.
    Downloads are cached in ``folder`` and revalidated.

    ``live``: ``sos`` reads the hours of the last ``live_hours`` from the UK-AIR Sensor
    Observation Service at ``live_url`` (provisional values; the demo network answers through
    the same SOS shapes), every older hour from the archive files. Re-ingesting an hour
    once it is older than the live window replaces its provisional value with the archive's."""

    network: str = "aurn"
    folder: str
    # The deployment's sites (ROUTEAQ_SITES): what site_registry holds unless its config names others.
    sites: list[str] = []
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
        """The SOS client of the live feed: the UK-AIR service."""
        return SosClient(self.live_url or SOS_URL, cache_folder=Path(self.folder) / "sos", timeout_s=self.timeout_s)

    def network_metadata(self) -> pl.DataFrame:
        """The network's site metadata (``AURN_metadata.RData`` layout): the packaged AURN metadata."""
        return pl.read_csv(packaged_metadata_csv(), infer_schema_length=0)

    def site_year(self, site_id: str, year: int) -> pl.DataFrame | None:
        """Observations of one site-year, or None when the source has no such file."""
        raise NotImplementedError


class DemoObservations(ObservationSource):
    """The demo network's openair files, and its values in the SOS shapes for the live hours."""

    demo_shift: str = ""  # an injected change (``sources.demo_network.Shift``)

    def live_client(self) -> SosClient:
        from routeaq_assets.sources.demo_network import packaged_network  # pandas and SciPy: loaded only when the demo runs

        return SosClient(DEMO_SOS_URL, cache_folder=Path(self.folder) / "sos", transport=DemoSosView(packaged_network(self.folder, shift=self.demo_shift)))

    def site_year(self, site_id: str, year: int) -> pl.DataFrame | None:
        from routeaq_assets.sources.demo_network import packaged_network  # pandas and SciPy: loaded only when the demo runs

        network = packaged_network(self.folder, (site_id,), self.demo_shift)
        network.ensure_site_year(site_id, year)
        path = network.openair_path(site_id, year)
        return openair_to_observations(read_rdata_table(path), site_id=site_id, network=self.network, source=f"demo:{path.name}")


class OpenairObservations(ObservationSource):
    """Per-site-year RData over HTTP from ``base_url`` (default: the ``network``'s published
    address), with the network's published site metadata."""

    base_url: str = ""

    def network_metadata(self) -> pl.DataFrame:
        """The network's published site metadata (``{base}AURN_metadata.RData`` layout)."""
        base = self.base_url or NETWORK_BASE_URLS[self.network]
        name = f"{self.network.upper()}_metadata.RData"
        path = fetch_to_cache(shared_session(), f"{base}{name}", Path(self.folder) / self.network / name, self.timeout_s)
        if path is None:
            raise SourceDataError(f"{base}{name}: the network publishes no metadata file there")
        return read_rdata_table(path)

    def site_year(self, site_id: str, year: int) -> pl.DataFrame | None:
        base = self.base_url or NETWORK_BASE_URLS[self.network]
        url = f"{base}{site_year_filename(site_id, year)}"
        path = fetch_to_cache(shared_session(), url, Path(self.folder) / self.network / site_year_filename(site_id, year), self.timeout_s)
        if path is None:
            return None
        return openair_to_observations(read_rdata_table(path), site_id=site_id, network=self.network, source=url)


class UkairObservations(ObservationSource):
    """UK-AIR's per-site-year CSV over HTTP from ``base_url`` (default: UK-AIR's address)."""

    base_url: str = ""

    def site_year(self, site_id: str, year: int) -> pl.DataFrame | None:
        url = ukair_csv_url(site_id, year, self.base_url or UKAIR_BASE_URL)
        path = fetch_to_cache(shared_session(), url, Path(self.folder) / "uk-air" / f"{site_id}_{year}.csv", self.timeout_s)
        if path is None:
            return None
        return parse_ukair_csv(path.read_text(encoding="utf-8", errors="replace"), site_id=site_id, network=self.network, source=url)


class LocalObservations(ObservationSource):
    """A folder of openair-format tables a user brings (``sources.local_tables``)."""

    def site_year(self, site_id: str, year: int) -> pl.DataFrame | None:
        observations = local_observations(Path(self.folder), site_id, self.network)
        return None if observations is None else observations.filter(pl.col("time").dt.year() == year)
