"""Hourly weather per site: one resource class per source, chosen by the environment mapping
(``environments.WEATHER_SOURCES``) from ``ROUTEAQ_SOURCE``. Assets take the contract,
``WeatherSource``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from routeaq_assets.core.schema import WEATHER
from routeaq_assets.core.windows import year_span
from routeaq_assets.sources.http import SourceUnavailable, shared_session
from routeaq_assets.sources.local_tables import local_weather
from routeaq_assets.sources.openmeteo import (
    ARCHIVE_URL,
    FORECAST_DAYS_BEFORE,
    FORECAST_URL,
    PREVIOUS_RUNS_URL,
    forecast_where_archived,
    openmeteo_to_weather,
    request_params,
)

class WeatherSource(dg.ConfigurableResource):
    """Hourly weather per site, for the past (``past``) and ahead (``ahead``), one subclass per source.

    ``basis`` says what is stored for past hours: ``forecast`` (the default) the forecast as
    issued the day before each hour (kind ``forecast``), with the reanalysis where no archived
    forecast exists (kind ``reanalysis``, which the features use only at the forecast's origin);
    ``reanalysis`` the weather as it happened: an upper bound on skill, not what the service has."""

    basis: str = "forecast"
    folder: str
    timeout_s: float = 30.0
    retries_when_down: int = 3  # as ObservationSource: a run whose source is down asks again
    retry_wait_s: float = 120.0

    def window(self, site: dict, start: datetime, end: datetime, kind: str = "reanalysis") -> pl.DataFrame:
        """Weather of [start, end) at ``site``: the past per ``basis``, or (``kind="forecast"``)
        the forecast issued at ``start - 1 h`` for the hours ahead."""
        if self.basis not in ("forecast", "reanalysis"):
            raise ValueError(f"unknown weather basis {self.basis!r}: use forecast or reanalysis")
        weather = self.ahead(site, start, end) if kind == "forecast" else self.past(site, start, end)
        return weather.filter((pl.col("time") >= start) & (pl.col("time") < end))

    def past(self, site: dict, start: datetime, end: datetime) -> pl.DataFrame:
        """The stored weather of the days [start, end) touches, per ``basis``."""
        raise NotImplementedError

    def ahead(self, site: dict, start: datetime, end: datetime) -> pl.DataFrame:
        """The forecast issued at ``start - 1 h`` for the hours up to ``end``."""
        raise NotImplementedError


class DemoWeather(WeatherSource):
    """The demo network's Open-Meteo answers."""

    demo_shift: str = ""  # the demo network writes weather and measurements together: same shift

    def past(self, site: dict, start: datetime, end: datetime) -> pl.DataFrame:
        from routeaq_assets.sources.demo_network import packaged_network  # pandas and SciPy: loaded only when the demo runs

        site_id = site["site_id"]
        network = packaged_network(self.folder, (site_id,), self.demo_shift)
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
        return pl.concat(frames)

    def ahead(self, site: dict, start: datetime, end: datetime) -> pl.DataFrame:
        from routeaq_assets.sources.demo_network import packaged_network  # pandas and SciPy: loaded only when the demo runs

        site_id = site["site_id"]
        payload = packaged_network(self.folder, (site_id,), self.demo_shift).forecast_ahead(site_id, start - timedelta(hours=1), end)
        return openmeteo_to_weather(payload, site_id=site_id, kind="forecast", source="demo:forecast")


class OpenMeteoWeather(WeatherSource):
    """Open-Meteo: the archive and Previous Runs APIs for the past, the forecast API ahead."""

    archive_url: str = ARCHIVE_URL
    previous_runs_url: str = PREVIOUS_RUNS_URL
    forecast_url: str = FORECAST_URL

    def _get(self, url: str, params: dict) -> dict:
        response = shared_session().get(url, params=params, timeout=self.timeout_s)
        if response.status_code >= 400:
            try:  # Open-Meteo explains a refusal as {"error": true, "reason": "..."}
                reason = response.json()["reason"]
            except (ValueError, KeyError, TypeError):
                reason = response.text[:200]
            raise SourceUnavailable(f"{url}: HTTP {response.status_code}: {reason}")
        return response.json()

    def _ask(self, url: str, site: dict, start: datetime, end: datetime, days_before: int = 0) -> dict:
        return self._get(url, request_params(site["latitude"], site["longitude"], start.date(), end.date(), days_before))

    def past(self, site: dict, start: datetime, end: datetime) -> pl.DataFrame:
        site_id = site["site_id"]
        weather = openmeteo_to_weather(self._ask(self.archive_url, site, start, end), site_id=site_id, kind="reanalysis", source=self.archive_url)
        if self.basis == "forecast":
            archived = openmeteo_to_weather(
                self._ask(self.previous_runs_url, site, start, end, FORECAST_DAYS_BEFORE), site_id=site_id, kind="forecast",
                source=self.previous_runs_url, days_before=FORECAST_DAYS_BEFORE,
            )
            weather = forecast_where_archived(archived, weather)
        return weather

    def ahead(self, site: dict, start: datetime, end: datetime) -> pl.DataFrame:
        return openmeteo_to_weather(self._ask(self.forecast_url, site, start, end), site_id=site["site_id"], kind="forecast", source=self.forecast_url)


class LocalWeather(WeatherSource):
    """The met columns of a folder of openair-format tables, which hold no forecast."""

    def past(self, site: dict, start: datetime, end: datetime) -> pl.DataFrame:
        # No table for the site in the folder is no data (its stored weather stays).
        weather = local_weather(Path(self.folder), site["site_id"])
        return pl.DataFrame(schema=WEATHER) if weather is None else weather

    def ahead(self, site: dict, start: datetime, end: datetime) -> pl.DataFrame:
        return pl.DataFrame(schema=WEATHER)  # a folder of tables holds no forecast
