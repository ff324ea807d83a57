"""The daily Air Quality Index of a UK day, from observed and forecast hours, with its odds.

Defra's daily index (https://uk-air.defra.gov.uk/air-pollution/daqi) covers a UK local day,
midnight to midnight (23, 24 or 25 hours at the clock changes), and averages each pollutant
its own way:
- PM2.5 and PM10: the day's 24-hour mean;
- O3: the day's highest running 8-hour mean (here: the 8-hour windows that start and end within
  the day);
- NO2: the day's highest hourly mean.
The site's index is the highest of its pollutants' (``core.daqi`` holds the bands).

Today's index combines the hours already observed with the forecast for the rest. A pollutant
counts for the day when at least ``MIN_HOURS_SHARE`` of its hours are observed or forecast.

The odds of a day wholly forecast (no hour of it observed yet: tomorrow) come from the verified
daily errors (``errors``): the error of each pollutant's day value, log(1 + observed) - log(1 +
forecast), of the site-days forecast wholly ahead in the last ``DAILY_ERROR_DAYS`` days (pooled
over sites, ``core.daily_verification.daily_errors``). Each verified site-day is one draw: every
pollutant's forecast value moved by that day's error for it (so pollutants that erred together
move together), and the probability of an index at or above k is the share of draws whose site
index reaches k. Fewer than ``MIN_DAILY_ERRORS`` verified site-days with an error for each of the
site's pollutants, and the hourly draws below give the odds.

The odds of a day partly observed (today), or without enough verified days, come from
``SAMPLES`` joint draws of the day's hours: each forecast hour is its point forecast plus an
error drawn from the two halves of its interval (a normal whose 10th and 90th percentiles are the
80 % interval's bounds, one scale below the forecast and another above), with errors correlated
from hour to hour (AR(1), ``ERROR_CORRELATION`` per hour: a forecast that is high at 09:00 is high
at 10:00 too, which is what makes a day's mean uncertain). Observed hours are fixed, so the draws
narrow as the day is observed. The draws are seeded, so the same forecasts give the same odds.

Why two: verified on the real files and AQEval (bench/RESULTS.md), the hourly draws state a
wholly forecast day's odds too high where they are middling (the day's value is not the sum of
24 hourly intervals), while the daily errors cannot tell a day with 17 hours left from one with
3; the hourly draws are calibrated on the day itself.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from statistics import NormalDist
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from routeaq_assets.core.daqi import AVERAGING, BANDS, UPPER_BOUNDS

UK = ZoneInfo("Europe/London")
SAMPLES = 1000
ERROR_CORRELATION = 0.95
SEED = 20
MIN_HOURS_SHARE = 0.75  # Defra's data capture for a daily statistic: 18 of 24 hours
O3_WINDOW_HOURS = 8
MODERATE, HIGH = 4, 7  # the first index of the Moderate and the High band
DAILY_ERROR_DAYS = 90  # the verified days whose daily errors give a wholly forecast day's odds
MIN_DAILY_ERRORS = 30  # verified site-days needed (with an error for each of the site's pollutants)
HOURLY_DRAWS, DAILY_ERRORS = "hourly_intervals", "verified_daily_errors"  # where a day's odds come from


def uk_day(moment: datetime) -> date:
    """The UK local day a UTC moment falls in."""
    return moment.astimezone(UK).date()


def uk_day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC hours [start, end) of a UK local day: midnight to midnight in Europe/London."""
    start = datetime.combine(day, time(0), tzinfo=UK).astimezone(timezone.utc)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=UK).astimezone(timezone.utc)
    return start, end


def index_of(pollutant: str, values: np.ndarray) -> np.ndarray:
    """DAQI index 1-10 of each value (µg/m³, rounded to the whole number, halves up, as the
    published boundaries are whole); NaN stays NaN."""
    whole = np.floor(np.asarray(values, dtype=float) + 0.5)
    index = 1.0 + np.searchsorted(np.array(UPPER_BOUNDS[pollutant], dtype=float), whole, side="left")
    return np.where(np.isnan(whole), np.nan, index)


def daily_value(pollutant: str, hours: np.ndarray) -> np.ndarray:
    """The day's value of ``pollutant`` by Defra's averaging, per row of ``hours`` (draws x hours
    of the day, NaN where an hour has neither observation nor forecast)."""
    hours = np.atleast_2d(np.asarray(hours, dtype=float))
    enough = np.isfinite(hours).sum(axis=1) >= MIN_HOURS_SHARE * hours.shape[1]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a day with no hour: NaN, refused just below
        if pollutant in ("pm25", "pm10"):
            value = np.nanmean(hours, axis=1)
        elif pollutant == "no2":
            value = np.nanmax(np.where(np.isfinite(hours), hours, -np.inf), axis=1)
        elif pollutant == "o3":
            windows = np.lib.stride_tricks.sliding_window_view(hours, O3_WINDOW_HOURS, axis=1)
            filled = np.isfinite(windows).sum(axis=2) >= 6  # 75 % of a window's hours
            means = np.where(filled, np.nanmean(windows, axis=2), -np.inf)
            value = means.max(axis=1)
        else:
            raise ValueError(f"no daily averaging for pollutant {pollutant!r}; known: {sorted(AVERAGING)}")
    return np.where(enough & np.isfinite(value), value, np.nan)


def error_draws(samples: int, hours: int, rho: float = ERROR_CORRELATION, seed: int = SEED) -> np.ndarray:
    """Standard normal draws (samples x hours), AR(1)-correlated along the hours."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((samples, max(hours, 1)))
    out = np.empty_like(z)
    out[:, 0] = z[:, 0]
    scale = math.sqrt(1.0 - rho * rho)
    for k in range(1, z.shape[1]):
        out[:, k] = rho * out[:, k - 1] + scale * z[:, k]
    return out[:, :hours]


@dataclass(frozen=True)
class PollutantDay:
    pollutant: str
    value: float | None  # the day's value by Defra's averaging, from the point forecasts and observations
    index: int | None
    averaging: str
    observed_hours: int
    forecast_hours: int

    def as_dict(self) -> dict:
        return {
            "pollutant": self.pollutant, "value": None if self.value is None else round(self.value, 1), "index": self.index,
            "averaging": self.averaging, "observed_hours": self.observed_hours, "forecast_hours": self.forecast_hours,
        }


@dataclass(frozen=True)
class DailyIndex:
    """A site's daily index for one UK day: the point index, the pollutant that sets it, and the
    probabilities of each index or above (``p_at_least[k]``, k = 1..10)."""

    day: date
    index: int | None
    band: str | None
    set_by: str | None
    p_at_least: dict[int, float]
    pollutants: list[PollutantDay] = field(default_factory=list)
    odds_from: str = HOURLY_DRAWS
    odds_site_days: int | None = None  # the verified site-days the odds rest on (daily errors only)

    @property
    def p_moderate(self) -> float | None:
        return self.p_at_least.get(MODERATE)

    @property
    def p_high(self) -> float | None:
        return self.p_at_least.get(HIGH)

    def as_dict(self) -> dict:
        return {
            "day": self.day.isoformat(),
            "index": self.index,
            "band": self.band,
            "set_by": self.set_by,
            "p_moderate_or_above": None if self.p_moderate is None else round(self.p_moderate, 3),
            "p_high_or_above": None if self.p_high is None else round(self.p_high, 3),
            "p_index_at_least": {str(k): round(p, 3) for k, p in self.p_at_least.items()},
            "pollutants": [p.as_dict() for p in self.pollutants],
            "odds_from": self.odds_from,
            "odds_site_days": self.odds_site_days,
        }


FORECAST_HOURS = {"time": pl.Datetime("us", "UTC"), "pollutant": pl.Utf8, "pred": pl.Float64, "lower": pl.Float64, "upper": pl.Float64}


def day_hours(observed: pl.DataFrame, forecast: pl.DataFrame | None, pollutants: list[str]) -> pl.DataFrame:
    """The ``hours`` ``daily_index`` takes: ``observed`` wide (``time`` and a column per pollutant,
    one site) beside ``forecast`` long (``FORECAST_HOURS``; None for none), one row per pollutant
    and hour of either."""
    seen = observed.unpivot(index="time", on=[p for p in pollutants if p in observed.columns], variable_name="pollutant", value_name="observed")
    ahead = pl.DataFrame(schema=FORECAST_HOURS) if forecast is None else forecast.select(list(FORECAST_HOURS))
    return seen.join(ahead, on=["time", "pollutant"], how="full", coalesce=True)


def error_column(pollutant: str) -> str:
    return f"error_{pollutant}"


def odds_from_errors(values: dict[str, float], errors: pl.DataFrame, min_days: int = MIN_DAILY_ERRORS) -> tuple[dict[int, float], int] | None:
    """P(site index >= k), k = 1..10, of a day whose pollutants' forecast values are ``values``,
    each verified site-day of ``errors`` (``error_{pollutant}`` columns) one draw; and the number
    of site-days used. None when fewer than ``min_days`` have an error for every pollutant."""
    columns = [error_column(p) for p in values]
    if not values or any(c not in errors.columns for c in columns):
        return None
    usable = errors.select(columns).filter(pl.all_horizontal(pl.col(c).is_not_null() & pl.col(c).is_not_nan() for c in columns))
    if usable.height < min_days:
        return None
    drawn = [index_of(p, np.expm1(np.log1p(max(v, 0.0)) + usable[error_column(p)].to_numpy())) for p, v in values.items()]
    site = np.max(np.vstack(drawn), axis=0)
    return {k: float(np.mean(site >= k)) for k in range(1, 11)}, usable.height


def daily_index(hours: pl.DataFrame, day: date, coverage: float = 0.8, samples: int = SAMPLES, errors: pl.DataFrame | None = None) -> DailyIndex:
    """The daily index of ``day`` at one site from ``hours``: one row per pollutant and UTC hour,
    with ``observed`` (null where not yet observed) and the forecast ``pred``, ``lower``, ``upper``
    (its ``coverage`` interval; null where there is none). An hour with an observation uses it.
    ``errors``: the verified daily errors that give a wholly forecast day's odds (see the module
    docstring); None or too few, and the odds are drawn from the hourly intervals."""
    start, end = uk_day_bounds(day)
    grid = pl.datetime_range(start, end, "1h", closed="left", time_unit="us", time_zone="UTC", eager=True).alias("time")
    per_pollutant, pollutant_hours = [], {}  # each pollutant with a day value: its hours, for the hourly draws
    for pollutant in sorted(hours["pollutant"].unique().to_list()):
        if pollutant not in UPPER_BOUNDS:
            continue
        rows = pl.DataFrame({"time": grid}).join(hours.filter(pl.col("pollutant") == pollutant), on="time", how="left").sort("time")
        observed, pred, lower, upper = (rows[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in ("observed", "pred", "lower", "upper"))
        is_observed = np.isfinite(observed)
        is_forecast = ~is_observed & np.isfinite(pred)
        point = np.where(is_observed, observed, np.where(is_forecast, pred, np.nan))
        value = float(daily_value(pollutant, point)[0])
        index = None if math.isnan(value) else int(index_of(pollutant, np.array([value]))[0])
        per_pollutant.append(PollutantDay(pollutant, None if math.isnan(value) else value, index, AVERAGING[pollutant], int(is_observed.sum()), int(is_forecast.sum())))
        if index is not None:
            pollutant_hours[pollutant] = (observed, pred, lower, upper)
    known = [p for p in per_pollutant if p.index is not None]
    if not known:
        return DailyIndex(day, None, None, None, {}, per_pollutant)
    top = max(known, key=lambda p: p.index)
    wholly_forecast = sum(p.observed_hours for p in per_pollutant) == 0
    verified = odds_from_errors({p.pollutant: p.value for p in known}, errors) if wholly_forecast and errors is not None else None
    if verified is not None:
        return DailyIndex(day, top.index, BANDS[top.index - 1], top.pollutant, verified[0], per_pollutant, DAILY_ERRORS, verified[1])
    p_at_least = odds_from_hours(pollutant_hours, coverage, samples)
    return DailyIndex(day, top.index, BANDS[top.index - 1], top.pollutant, p_at_least, per_pollutant)


def odds_from_hours(pollutant_hours: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], coverage: float, samples: int) -> dict[int, float]:
    """P(site index >= k), k = 1..10, from ``samples`` joint draws of the day's hours (see the
    module docstring). ``pollutant_hours``: per pollutant, its hours' observed, pred, lower and upper
    (NaN where none); an observed hour is fixed, a forecast one drawn from its interval."""
    z_scale = NormalDist().inv_cdf(0.5 + coverage / 2.0)  # 1.28 for 80 %: the bounds' distance in standard deviations
    draws = error_draws(samples, len(next(iter(pollutant_hours.values()))[0]))
    sampled = []
    for pollutant, (observed, pred, lower, upper) in pollutant_hours.items():
        is_observed = np.isfinite(observed)
        is_forecast = ~is_observed & np.isfinite(pred)
        below = np.nan_to_num((pred - lower) / z_scale)
        above = np.nan_to_num((upper - pred) / z_scale)
        draw = pred + np.where(draws < 0, draws * below, draws * above)
        values = np.where(is_observed, observed, np.where(is_forecast, np.clip(draw, 0.0, None), np.nan))
        sampled.append(index_of(pollutant, daily_value(pollutant, values)))
    site = np.nanmax(np.vstack(sampled), axis=0)
    return {k: float(np.mean(site >= k)) for k in range(1, 11)}
