"""The demo network: a deterministic simulator of AURN sites and their weather.

It writes what the real sources publish, so the demo runs the real parsing code:
- ``openair/{SITE}_{YEAR}.RData``: the openair site-year table (``date`` GMT hour beginning,
  ``NO2``, ``O3``, ``PM2.5``, ``PM10``, ``NOXasNO2``, modelled ``ws``/``wd``/``temp``, ``site``, ``code``);
- ``open-meteo/{SITE}_{YEAR}.json``: an Open-Meteo archive answer for the site's coordinates;
- ``open-meteo-previous-runs/{SITE}_{YEAR}.json``: an Open-Meteo Previous Runs answer, the
  forecasts as issued (``temperature_2m`` from the newest run, ``temperature_2m_previous_day1``
  from the run a day earlier ...).

Forecast weather is the simulated weather plus an error that grows with lead time (see
``forecast_error``): a run every six hours, each forecasting the next ``MAX_LEAD_HOURS``.

Each site-year is generated from a seed of (site, year), so any hour can be produced and the same
hour is always the same value. A file for the current year stops at ``until`` (the newest complete
hour), like the real feeds, and is regenerated when a later hour is asked for.

The signals carry the structure a forecaster must learn: diurnal and weekly traffic cycles, an
annual cycle, dependence on wind, boundary layer and rain, autocorrelated noise, multi-day
regional PM2.5 episodes, photochemical ozone titrated by NO2, and instrument outages.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from routeaq_assets.core.files import write_atomically
from routeaq_assets.core.sites import load_packaged_registry, site_attributes
from routeaq_assets.core.windows import year_span
from routeaq_assets.sources.openair import site_year_filename
from routeaq_assets.sources.openmeteo import NOT_KEPT_BY_PREVIOUS_RUNS, PRECEDING_HOUR_VARIABLES, UNITS
from routeaq_assets.sources.rdata_writer import write_rdata


@dataclass(frozen=True)
class DemoSite:
    site_id: str
    site_name: str
    location_type: str
    latitude: float
    longitude: float


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) noise with marginal standard deviation ``sd``."""
    shocks = rng.normal(0.0, sd * np.sqrt(1 - phi**2), n)
    shocks[0] = rng.normal(0.0, sd)
    return lfilter([1.0], [1.0, -phi], shocks)


def simulate_site_year(site: DemoSite, year: int) -> pd.DataFrame:
    """One site-year of hourly weather and pollutant values (GMT, hour beginning)."""
    rng = np.random.default_rng(zlib.crc32(f"{site.site_id}:{year}".encode()))
    times = pd.date_range(f"{year}-01-01", f"{year + 1}-01-01", freq="h", tz="UTC", inclusive="left")
    n = len(times)
    hour = times.hour.to_numpy()
    doy = times.dayofyear.to_numpy()
    weekday = times.dayofweek.to_numpy()
    season = np.cos(2 * np.pi * (doy - 200) / 365.25)  # +1 in mid July, -1 in mid January
    lat_cool = (site.latitude - 51.5) * 0.6
    traffic = site.location_type == "Urban Traffic"

    # Weather: synoptic variability is slow (phi close to 1), diurnal cycles on top.
    temp = 10.5 + 6.5 * season - lat_cool + 3.5 * np.sin(2 * np.pi * (hour - 9) / 24) + _ar1(rng, n, 0.985, 3.0)
    wind = np.exp(np.log(4.0) + _ar1(rng, n, 0.97, 0.45)) * (1 + 0.15 * np.sin(2 * np.pi * (hour - 8) / 24))
    wind_dir = np.mod(230 + np.cumsum(rng.normal(0, 6, n)) + 40 * _ar1(rng, n, 0.99, 1.0), 360)
    rain_driver = _ar1(rng, n, 0.9, 1.0)
    precipitation = np.where(rain_driver > 1.1, np.round((rain_driver - 1.1) * 1.8, 1), 0.0)
    humidity = np.clip(78 - 2.2 * (temp - 10) + 8 * (precipitation > 0) + _ar1(rng, n, 0.9, 5.0), 25, 100)
    daylight = np.clip(np.sin(np.pi * (hour - 6) / 14), 0, None) * (0.6 + 0.4 * season)
    blh = np.clip(250 + 1100 * daylight + 90 * wind + _ar1(rng, n, 0.9, 120.0), 50, 3000)

    # Dispersion: low wind and a shallow boundary layer trap local emissions.
    dispersion = (4.0 / np.maximum(wind, 0.5)) ** 0.6 * (700 / blh) ** 0.35
    rush = np.exp(-((hour - 8) ** 2) / 4.0) + 0.9 * np.exp(-((hour - 18) ** 2) / 5.0) + 0.25
    weekly = np.where(weekday >= 5, 0.65, 1.0)
    washout = np.where(precipitation > 0, 0.7, 1.0)

    local = (45.0 if traffic else 24.0) * rush * weekly * dispersion
    no2 = np.clip(local * np.exp(_ar1(rng, n, 0.8, 0.25)) * washout + 4.0, 0.5, None)

    # Regional PM2.5: slow background with multi-day episodes (easterly, anticyclonic spells).
    episodes = np.zeros(n)
    for start in rng.choice(n - 120, size=9, replace=False):
        length = int(rng.integers(36, 110))
        shape = np.sin(np.linspace(0, np.pi, length)) ** 2
        episodes[start : start + length] += rng.uniform(12, 35) * shape[: n - start]
    background = np.exp(np.log(6.0) + 0.25 * season * -1 + _ar1(rng, n, 0.985, 0.35))
    pm25 = np.clip((background + episodes) * washout + 0.22 * local * np.exp(_ar1(rng, n, 0.7, 0.2)), 0.3, None)

    # Ozone: photochemistry with sunlight and warmth, titrated by local NO2.
    o3 = np.clip(
        48 + 14 * season + 28 * daylight * (0.6 + 0.05 * np.clip(temp, 0, 30)) - 0.55 * no2 + 3 * wind + _ar1(rng, n, 0.9, 6.0),
        0.5,
        None,
    )
    nox = no2 * (1.6 if traffic else 1.3) + _ar1(rng, n, 0.6, 2.0).clip(0)
    pm10 = pm25 * 1.45 + np.abs(_ar1(rng, n, 0.7, 3.0))

    frame = pd.DataFrame(
        {
            "date": times,
            "NO2": np.round(no2, 5),
            "O3": np.round(o3, 5),
            "NOXasNO2": np.round(nox, 5),
            "PM10": np.round(pm10, 1),
            "PM2.5": np.round(pm25, 1),
            "temp": np.round(temp, 1),
            "ws": np.round(wind, 1),
            "wd": np.round(wind_dir, 1),
            "rh": np.round(humidity, 0),
            "precip": precipitation,
            "blh": np.round(blh, 0),
        }
    )
    for column in ("NO2", "O3", "NOXasNO2", "PM10", "PM2.5"):
        frame[column] = frame[column].mask(_outages(rng, n))
    frame["site"] = np.array([site.site_name] * n, dtype=object)
    frame["code"] = pd.Categorical([site.site_id] * n)
    return frame


def _outages(rng: np.random.Generator, n: int) -> np.ndarray:
    """Instrument gaps: a few multi-hour outages and scattered single missing hours (about 3 %)."""
    missing = rng.random(n) < 0.01
    for start in rng.choice(n - 48, size=6, replace=False):
        missing[start : start + int(rng.integers(3, 40))] = True
    return missing


RUN_EVERY_HOURS = 6  # a forecast run every six hours, published as it is issued
MAX_LEAD_HOURS = 48 + 2 * RUN_EVERY_HOURS  # any run reaches 48 h past the newest hour it was issued for
# Forecast error per simulated column: (sd at lead 0, sd added by 24 h of lead), growing as the
# square root of lead time like a random walk; day-ahead errors about those of a regional model.
FORECAST_ERROR = {"temp": (0.4, 1.3), "ws": (0.3, 1.0), "wd": (8.0, 25.0), "rh": (3.0, 8.0), "precip": (0.1, 0.5), "blh": (50.0, 160.0)}
PREVIOUS_DAYS = (0, 1)


def forecast_error(site: DemoSite, year: int, n: int) -> dict[str, np.ndarray]:
    """Per column, an array (lead hour 0..MAX_LEAD_HOURS, hour of year) of forecast errors.

    error(t, L) = a * e0(t) + b * sum_{k<=L} e_k(t) / sqrt(24): forecasts of one hour at nearby
    leads share most of their error, and its spread grows as sqrt(L); each e is smooth in time."""
    rng = np.random.default_rng(zlib.crc32(f"{site.site_id}:{year}:forecast".encode()))
    errors = {}
    for column, (at_zero, per_day) in FORECAST_ERROR.items():
        steps = np.stack([_ar1(rng, n, 0.9, 1.0) for _ in range(MAX_LEAD_HOURS)])
        walk = np.vstack([np.zeros(n), np.cumsum(steps, axis=0)]) / np.sqrt(24.0)
        errors[column] = at_zero * _ar1(rng, n, 0.9, 1.0)[None, :] + per_day * walk
    return errors


def forecast_weather(frame: pd.DataFrame, errors: dict[str, np.ndarray], lead: np.ndarray) -> pd.DataFrame:
    """The weather columns of ``frame`` as forecast ``lead`` hours ahead (one lead per row)."""
    rows = np.arange(len(frame))
    value = {c: frame[c].to_numpy(float) + errors[c][lead, rows] for c in FORECAST_ERROR}
    return pd.DataFrame(
        {
            "date": frame["date"].to_numpy(),
            "temp": np.round(value["temp"], 1),
            "ws": np.round(np.clip(value["ws"], 0.0, None), 1),
            "wd": np.round(np.mod(value["wd"], 360.0), 1),
            "rh": np.round(np.clip(value["rh"], 1.0, 100.0), 0),
            "precip": np.round(np.clip(value["precip"], 0.0, None), 1),
            "blh": np.round(np.clip(value["blh"], 50.0, None), 0),
        }
    )


def run_lead(times: pd.DatetimeIndex, days_before: int) -> np.ndarray:
    """Lead of the newest run issued at least ``days_before`` days before each hour."""
    return 24 * days_before + times.hour.to_numpy() % RUN_EVERY_HOURS


OPENAIR_COLUMNS = ["date", "NO2", "O3", "NOXasNO2", "PM10", "PM2.5", "temp", "ws", "wd", "site", "code"]


def _openmeteo_payload(site: DemoSite, frame: pd.DataFrame, previous: dict[int, pd.DataFrame] | None = None) -> dict:
    """An Open-Meteo answer: the archive's (``previous`` None) or the Previous Runs API's, whose
    variables carry ``_previous_day{N}`` for the run N days earlier (none for day 0)."""

    def values(column: str, table: pd.DataFrame = frame) -> list:
        series = table[column].to_numpy(float)
        return [None if v != v else v for v in series.tolist()]

    names = {"temperature_2m": "temp", "relative_humidity_2m": "rh", "wind_speed_10m": "ws", "wind_direction_10m": "wd", "precipitation": "precip", "boundary_layer_height": "blh"}

    def stamped(name: str, column: str, table: pd.DataFrame) -> list:
        """Open-Meteo stamps precipitation at the end of the hour it sums (the value at 10:00
        fell from 09:00 to 10:00); the simulated frame holds it on the hour it began."""
        series = values(column, table)
        return [None, *series[:-1]] if name in PRECEDING_HOUR_VARIABLES else series

    if previous is None:
        hourly = {name: stamped(name, column, frame) for name, column in names.items()}
    else:
        # As the real Previous Runs API: boundary_layer_height_previous_dayN answers all null.
        hourly = {
            f"{name}{f'_previous_day{day}' if day else ''}": [None] * len(table) if day and name in NOT_KEPT_BY_PREVIOUS_RUNS else stamped(name, column, table)
            for day, table in previous.items()
            for name, column in names.items()
        }
    return {
        "latitude": round(site.latitude, 4),
        "longitude": round(site.longitude, 4),
        "elevation": 30.0,
        "utc_offset_seconds": 0,
        "timezone": "GMT",
        "timezone_abbreviation": "GMT",
        "hourly_units": {"time": "iso8601", **{name: UNITS[name.split("_previous_day")[0]] for name in hourly}},
        "hourly": {"time": frame["date"].dt.strftime("%Y-%m-%dT%H:%M").tolist(), **hourly},
    }


SHIFT_COLUMNS = {"no2": "NO2", "o3": "O3", "pm25": "PM2.5", "pm10": "PM10", "nox": "NOXasNO2"}


@dataclass(frozen=True)
class Shift:
    """A change injected into the simulated measurements from ``start`` on, to watch the
    monitoring loop react: ``scale`` multiplies a pollutant's values by ``size`` (an emissions
    change), ``offset`` adds ``size`` ug/m3 (a sensor reading high). ``site`` None is every site.

    Written ``pollutant:kind:size@start[@site]``, e.g. ``no2:scale:2@2025-08-03T00:00Z`` or
    ``pm25:offset:15@2025-08-03T00:00Z@MY1`` (``ROUTEAQ_DEMO_SHIFT``)."""

    start: datetime
    pollutant: str = "no2"
    kind: str = "scale"
    size: float = 2.0
    site: str | None = None

    def __post_init__(self):
        if self.pollutant not in SHIFT_COLUMNS or self.kind not in ("scale", "offset"):
            raise ValueError(f"shift {self}: pollutant must be one of {sorted(SHIFT_COLUMNS)}, kind 'scale' or 'offset'")
        if self.start.tzinfo is None:
            raise ValueError(f"shift start {self.start} needs a time zone")

    @classmethod
    def parse(cls, text: str) -> "Shift | None":
        if not text:
            return None
        try:
            spec, start, *site = text.split("@")
            pollutant, kind, size = spec.split(":")
            return cls(datetime.fromisoformat(start.replace("Z", "+00:00")), pollutant.lower(), kind.lower(), float(size), site[0].upper() if site else None)
        except ValueError as exc:
            raise ValueError(f"ROUTEAQ_DEMO_SHIFT={text!r}: expected pollutant:scale|offset:size@ISO-start[@SITE] ({exc})") from exc

    def __str__(self) -> str:
        return f"{self.pollutant}:{self.kind}:{self.size:g}@{self.start.isoformat()}" + (f"@{self.site}" if self.site else "")

    def apply(self, site_id: str, frame: pd.DataFrame) -> pd.DataFrame:
        if self.site not in (None, site_id):
            return frame
        column, after = SHIFT_COLUMNS[self.pollutant], frame["date"] >= pd.Timestamp(self.start)
        shifted = frame[column] * self.size if self.kind == "scale" else frame[column] + self.size
        return frame.assign(**{column: frame[column].where(~after, shifted.round(5))})


class DemoNetwork:
    """Writes demo site-year files under ``root`` on demand (with ``shift`` applied, if any)."""

    def __init__(self, root: Path, sites: list[DemoSite], shift: Shift | None = None):
        self.root = Path(root)
        self.sites = {s.site_id: s for s in sites}
        self.shift = shift

    def openair_path(self, site_id: str, year: int) -> Path:
        return self.root / "openair" / site_year_filename(site_id, year)

    def weather_path(self, site_id: str, year: int) -> Path:
        return self.root / "open-meteo" / f"{site_id}_{year}.json"

    def previous_runs_path(self, site_id: str, year: int) -> Path:
        return self.root / "open-meteo-previous-runs" / f"{site_id}_{year}.json"

    def forecast_ahead(self, site_id: str, origin: datetime, end: datetime) -> dict:
        """The forecast for the hours after ``origin`` up to ``end`` from the newest run issued by
        ``origin``, as an Open-Meteo forecast answer (what the service fetches ahead)."""
        if end - origin > timedelta(hours=MAX_LEAD_HOURS - RUN_EVERY_HOURS):
            raise ValueError(f"the demo forecasts at most {MAX_LEAD_HOURS - RUN_EVERY_HOURS} h ahead")
        site = self.sites[site_id]
        run = origin.replace(hour=origin.hour - origin.hour % RUN_EVERY_HOURS)
        parts = []
        for year in year_span(origin + timedelta(hours=1), end):
            frame = simulate_site_year(site, year)
            lead = ((frame["date"] - pd.Timestamp(run)) / pd.Timedelta(hours=1)).to_numpy().astype(int)
            wanted = (frame["date"] > pd.Timestamp(origin)) & (frame["date"] < pd.Timestamp(end))
            errors = forecast_error(site, year, len(frame))
            parts.append(forecast_weather(frame[wanted].reset_index(drop=True), {c: e[:, wanted.to_numpy()] for c, e in errors.items()}, lead[wanted.to_numpy()]))
        return _openmeteo_payload(site, pd.concat(parts, ignore_index=True))

    def ensure_site_year(self, site_id: str, year: int) -> None:
        """Write the site-year files unless they exist and reach the newest published hour.

        Past years are complete; the current year stops at the current (incomplete) hour.
        """
        if site_id not in self.sites:
            raise KeyError(f"{site_id} is not a demo network site ({sorted(self.sites)})")
        now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        cutoff = min(datetime(year + 1, 1, 1, tzinfo=timezone.utc), now)
        marker = self.root / "openair" / f".{site_id}_{year}.until"
        stamp = f"{cutoff.isoformat()} {self.shift or ''}".strip()
        if self.openair_path(site_id, year).exists() and marker.exists():
            until, _, shift = marker.read_text().partition(" ")
            if datetime.fromisoformat(until) >= cutoff and shift == str(self.shift or ""):
                return
        full = simulate_site_year(self.sites[site_id], year)
        if self.shift is not None:
            full = self.shift.apply(site_id, full)
        frame = full[full["date"] < pd.Timestamp(cutoff)].reset_index(drop=True)
        write_rdata(self.openair_path(site_id, year), f"{site_id}_{year}", frame[OPENAIR_COLUMNS])
        write_atomically(self.weather_path(site_id, year), json.dumps(_openmeteo_payload(self.sites[site_id], frame)).encode())
        errors = forecast_error(self.sites[site_id], year, len(full))
        times = pd.DatetimeIndex(full["date"])
        kept = len(frame)
        previous = {
            day: forecast_weather(full, errors, run_lead(times, day)).iloc[:kept] for day in PREVIOUS_DAYS
        }
        write_atomically(self.previous_runs_path(site_id, year), json.dumps(_openmeteo_payload(self.sites[site_id], frame, previous)).encode())
        write_atomically(marker, stamp.encode())  # a run reading it at the same moment sees the old stamp or the new, never an empty file


def packaged_network(folder: str, site_ids: tuple[str, ...] | None = None, shift: str = "") -> DemoNetwork:
    """The demo network of the packaged site registry (or of ``site_ids`` in it), kept in ``folder``."""
    sites = site_attributes(load_packaged_registry(site_ids))
    return DemoNetwork(
        Path(folder),
        [DemoSite(r["site_id"], r["site_name"], r["location_type"], r["latitude"], r["longitude"]) for r in sites.iter_rows(named=True)],
        shift=Shift.parse(shift),
    )
