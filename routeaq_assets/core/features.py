"""Features for forecasts ``horizon`` hours ahead (1 to 48), used by training and serving alike.

A forecast for hour ``t`` at horizon ``h`` is made when hour ``t - h`` is the newest observation,
so a feature row for ``t`` sees observations up to ``t - h`` only. The recent features count back
from that hour (``target_lag_1`` is hour ``t - h``, the persistence forecast). The same-hour
features stay on the clock hour of ``t`` and count back from the newest day whose same hour was
seen: ``target_lag_24`` is the same hour yesterday up to 24 h ahead and the same hour two days
before from 25 to 48 h (``same_hour_days(h)`` days back), ``target_lag_168`` last week. Every row
carries ``hours_ahead`` = ``h``, so one model can learn every lead time. Missing hours stay null
and LightGBM handles them.

Weather at ``t`` is what the service would have known at ``t - h`` (``weather="forecast"``, the
default): the panel's weather for ``t`` where it is a forecast (``weather_kind`` "forecast": an
archived forecast as issued, or the service's forecast ahead), and elsewhere the weather at the
origin ``t - h`` (persistence of the weather: the stand-in for hours with no archived forecast,
such as user files and the distant past; never better than a real forecast). ``weather=
"reanalysis"`` uses the weather at ``t`` as it happened: an upper bound, for comparison only.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np
import polars as pl

from routeaq_assets.core.schema import FORECAST_POLLUTANTS, TIME, WEATHER_VARIABLES

RECENT_LAGS = (1, 2, 3, 6, 12)  # the newest value seen, the one before it ...
SAME_HOUR_LAGS = (24, 168)  # the same hour yesterday and last week
TARGET_LAGS = (*RECENT_LAGS, *SAME_HOUR_LAGS)
MAX_HORIZON = 48  # today and tomorrow from any hour of today
TYPICAL_DAYS = 7  # days averaged for the typical level and change at the same hour
PANEL_POLLUTANTS = (*FORECAST_POLLUTANTS, "nox")
ROLLING_MEANS = (3, 6, 24)
WEATHER_BASES = ("forecast", "reanalysis")
FORECAST_KIND = "forecast"  # the weather contract's ``kind`` of a forecast known before its hour
ROLLING_STDS = (6, 24)


def same_hour_days(horizon: int) -> int:
    """How many days back the newest same clock hour is that a forecast ``horizon`` hours ahead
    has seen: 1 (yesterday) up to 24 h, 2 from 25 to 48 h."""
    return -(-horizon // 24)


MAX_LOOKBACK_HOURS = 24 * (same_hour_days(MAX_HORIZON) + TYPICAL_DAYS - 1) + MAX_HORIZON
SITE_ATTRIBUTES = ("latitude", "longitude", "location_type_code")

# The features computed from the weather at the forecast hour: all missing together when the
# service has no forecast for that hour, so training masks them together too.
WEATHER_FEATURES = (
    "temperature_2m",
    "temperature_2m_change_1",
    "relative_humidity_2m",
    "wind_speed_10m",
    "wind_u",
    "wind_v",
    "precipitation",
    "boundary_layer_height",
    "boundary_layer_height_change_1",
    "wind_speed_10m_change_1",
)
FEATURE_COLUMNS: tuple[str, ...] = (
    *(f"target_lag_{k}" for k in TARGET_LAGS),
    *(f"target_mean_{w}" for w in ROLLING_MEANS),
    *(f"target_std_{w}" for w in ROLLING_STDS),
    "target_change_1",
    "target_change_2",
    "target_change_yesterday",
    "target_change_last_week",
    "target_typical_change",
    "target_typical_level",
    "target_anomaly_1",
    *(f"{p}_lag_1" for p in PANEL_POLLUTANTS),
    *(f"{p}_change_1" for p in PANEL_POLLUTANTS),
    *WEATHER_FEATURES,
    "hour",
    "weekday",
    "month",
    "is_holiday",
    *SITE_ATTRIBUTES,
    "hours_ahead",
)
KEY_COLUMNS = ("site_id", "time", "pollutant")
SILVER_COLUMNS = (*KEY_COLUMNS, "target", *FEATURE_COLUMNS)
# Where a forecast starts from: the newest value seen, else a recent mean. Models learn the change
# from this base, which keeps them right when the level moves outside the training range.
BASE_COLUMNS = ("target_lag_1", "target_lag_2", "target_mean_3", "target_mean_24", "target_typical_level")


def hour_grid(site_ids: list[str], start: datetime, end: datetime) -> pl.DataFrame:
    """Every site for every hour of the half-open window [start, end)."""
    times = pl.datetime_range(start, end, "1h", closed="left", time_unit="us", time_zone="UTC", eager=True)
    return pl.DataFrame({"site_id": sorted(site_ids)}).join(pl.DataFrame({"time": times}), how="cross")


# Where two sources give the weather of the same site and hour, the first kind here wins: what
# was observed (or reanalysed) over what was forecast. Among rows of one kind the newest issue
# (the latest ``ingested_at``) wins.
WEATHER_PRECEDENCE = ("observed", "reanalysis", "forecast")


def one_weather_row_per_hour(weather: pl.DataFrame) -> pl.DataFrame:
    """``weather`` with one row per site and hour, chosen by ``WEATHER_PRECEDENCE`` and then the
    newest issue. A kind outside the precedence is an error naming it."""
    unknown = sorted(set(weather["kind"].drop_nulls().unique().to_list()) - set(WEATHER_PRECEDENCE)) if "kind" in weather.columns else []
    if unknown:
        raise ValueError(f"weather kinds {unknown} have no precedence; known kinds are {WEATHER_PRECEDENCE}")
    if "kind" not in weather.columns:  # nothing to rank by: an hour given twice is an error
        require_unique(weather, ["site_id", "time"], "weather")
        return weather
    rank = pl.col("kind").replace_strict(list(WEATHER_PRECEDENCE), list(range(len(WEATHER_PRECEDENCE))), default=len(WEATHER_PRECEDENCE))
    order = [rank]
    descending = [False]
    if "ingested_at" in weather.columns:
        order.append(pl.col("ingested_at"))
        descending.append(True)
    return weather.sort(order, descending=descending, nulls_last=True, maintain_order=True).unique(["site_id", "time"], keep="first").sort("site_id", "time")


def require_unique(frame: pl.DataFrame, keys: list[str], what: str) -> None:
    """Raise naming the keys that ``frame`` holds more than once."""
    repeated = frame.group_by(keys).len().filter(pl.col("len") > 1)
    if repeated.height:
        examples = ", ".join(str(tuple(r)) for r in repeated.sort(keys).head(5).select(keys).rows())
        raise ValueError(f"{what}: {repeated.height} keys ({', '.join(keys)}) appear more than once, e.g. {examples}")


def hourly_panel(
    observations: pl.DataFrame, weather: pl.DataFrame, sites: pl.DataFrame, start: datetime, end: datetime
) -> pl.DataFrame:
    """One row per site and hour of [start, end): pollutants, weather, site attributes.

    ``observations`` follow the long contract, ``weather`` the wide one, ``sites`` has one row per
    site with ``SITE_ATTRIBUTES``. Hours with no data are present with nulls. Weather given twice
    for an hour (stored reanalysis beside a forecast) keeps one row by ``WEATHER_PRECEDENCE``;
    an observation or site given twice is an error: the lags count rows, so a repeated hour
    would shift every lag after it.
    """
    grid = hour_grid(sites["site_id"].to_list(), start, end)
    long = observations.filter(pl.col("pollutant").is_in(PANEL_POLLUTANTS)).select("site_id", "time", "pollutant", "value")
    require_unique(long, ["site_id", "time", "pollutant"], "observations")
    require_unique(sites.select("site_id"), ["site_id"], "site attributes")
    wide = (
        long.pivot(on="pollutant", index=["site_id", "time"], values="value")
        if long.height
        else pl.DataFrame(schema={"site_id": pl.Utf8, "time": TIME})
    )
    for p in PANEL_POLLUTANTS:
        if p not in wide.columns:
            wide = wide.with_columns(pl.lit(None, pl.Float64).alias(p))
    panel = (
        grid.join(wide.select("site_id", "time", *PANEL_POLLUTANTS), on=["site_id", "time"], how="left")
        .join(_weather_with_kind(one_weather_row_per_hour(weather)), on=["site_id", "time"], how="left")
        .join(sites.select("site_id", *SITE_ATTRIBUTES), on="site_id", how="left")
        .sort("site_id", "time")
    )
    require_unique(panel, ["site_id", "time"], "hourly panel")
    return panel


def _weather_with_kind(weather: pl.DataFrame) -> pl.DataFrame:
    """The weather columns and ``weather_kind`` (null where the table has no ``kind``)."""
    kind = pl.col("kind").cast(pl.Utf8) if "kind" in weather.columns else pl.lit(None, pl.Utf8)
    return weather.select("site_id", "time", *WEATHER_VARIABLES, kind.alias("weather_kind"))


def weather_as_known(panel: pl.DataFrame, horizon: int, weather: str = "forecast") -> pl.DataFrame:
    """``panel`` (sorted by site and hour, a full hourly grid) with each hour's weather replaced
    by what a forecast made ``horizon`` hours earlier could know (see the module docstring)."""
    if weather not in WEATHER_BASES:
        raise ValueError(f"unknown weather basis {weather!r}; expected one of {WEATHER_BASES}")
    if weather == "reanalysis":
        return panel
    kind = pl.col("weather_kind") if "weather_kind" in panel.columns else pl.lit(None, pl.Utf8)
    forecast = kind.fill_null("") == FORECAST_KIND
    return panel.with_columns(
        pl.when(forecast).then(pl.col(v)).otherwise(pl.col(v).shift(horizon).over("site_id")).alias(v) for v in WEATHER_VARIABLES
    )


def weather_summary(kinds: pl.Series, weather: str = "forecast") -> str:
    """What weather feature rows use, in words (for reports and the CLI), from the weather kind
    of each site-hour (a panel's ``weather_kind``, or the stored weather's ``kind``)."""
    if weather == "reanalysis":
        return "reanalysis at the forecast hour (what actually happened): an upper bound, not what the service has"
    share = float((kinds.cast(pl.Utf8).fill_null("") == FORECAST_KIND).mean() or 0.0) if len(kinds) else 0.0
    return (
        f"forecast as issued for {share:.0%} of site-hours; the rest use the weather at the forecast's origin "
        "(t - h, persistence of the weather) as the stand-in for a forecast"
    )


@lru_cache(maxsize=64)
def _uk_holidays(year: int) -> frozenset:
    import holidays

    return frozenset(holidays.country_holidays("GB", years=year))


def _is_holiday(times: pl.Series) -> pl.Series:
    dates = times.dt.date()
    years = dates.dt.year().unique().to_list()
    days = set().union(*(_uk_holidays(y) for y in years)) if years else set()
    return dates.is_in(list(days)).cast(pl.Int8)


def check_horizon(horizon: int) -> None:
    """Refuse a horizon outside the product's 1 to ``MAX_HORIZON`` hours."""
    if not 1 <= horizon <= MAX_HORIZON:
        raise ValueError(f"horizon {horizon} h is outside 1 to {MAX_HORIZON} h")


def build_features(panel: pl.DataFrame, pollutant: str, horizon: int = 1, weather: str = "forecast") -> pl.DataFrame:
    """Feature rows for every site-hour of ``panel`` with ``pollutant`` as the target, for a
    forecast made ``horizon`` hours before the row's hour, with the weather ``weather`` says.

    ``panel`` must be a complete hourly grid per site (see ``hourly_panel``) that starts
    ``MAX_LOOKBACK_HOURS`` before the first row whose lags should be complete.
    """
    if pollutant not in FORECAST_POLLUTANTS:
        raise ValueError(f"unknown pollutant {pollutant!r}; expected one of {FORECAST_POLLUTANTS}")
    check_horizon(horizon)
    by_site = "site_id"
    target = pl.col(pollutant)

    def lag(column: str | pl.Expr, hours: int) -> pl.Expr:
        expr = pl.col(column) if isinstance(column, str) else column
        return expr.shift(hours).over(by_site)

    def seen(column: str | pl.Expr, k: int = 1) -> pl.Expr:
        """The k-th newest value a forecast made at hour t - horizon can see."""
        return lag(column, horizon + k - 1)

    def change(column: str | pl.Expr, k: int) -> pl.Expr:
        """The change from the (k+1)-th newest value seen to the k-th."""
        return seen(column, k) - seen(column, k + 1)

    def change_to(hours_before: int) -> pl.Expr:
        """The change over the ``horizon`` hours that ended ``hours_before`` hours before t."""
        return lag(target, hours_before) - lag(target, hours_before + horizon)

    days = same_hour_days(horizon)
    newest = seen(target)
    same_hour = [lag(target, 24 * d) for d in range(days, days + TYPICAL_DAYS)]
    newest_hour = [lag(target, 24 * d + horizon) for d in range(days, days + TYPICAL_DAYS)]
    direction = pl.col("wind_direction_10m").radians()
    panel = weather_as_known(panel.sort(by_site, "time"), horizon, weather)
    return panel.select(
        pl.col("site_id"),
        pl.col("time"),
        pl.lit(pollutant).alias("pollutant"),
        target.alias("target"),
        *(seen(target, k).alias(f"target_lag_{k}") for k in RECENT_LAGS),
        *(lag(target, max(k, 24 * days)).alias(f"target_lag_{k}") for k in SAME_HOUR_LAGS),
        *(newest.rolling_mean(w, min_samples=1).over(by_site).alias(f"target_mean_{w}") for w in ROLLING_MEANS),
        *(newest.rolling_std(w, min_samples=2).over(by_site).alias(f"target_std_{w}") for w in ROLLING_STDS),
        change(target, 1).alias("target_change_1"),
        change(target, 2).alias("target_change_2"),
        change_to(24 * days).alias("target_change_yesterday"),  # how the same hours went on the newest day seen
        change_to(168).alias("target_change_last_week"),
        (pl.mean_horizontal(same_hour) - pl.mean_horizontal(newest_hour)).alias("target_typical_change"),
        pl.mean_horizontal(same_hour).alias("target_typical_level"),
        (newest - pl.mean_horizontal(newest_hour)).alias("target_anomaly_1"),
        *(seen(p).alias(f"{p}_lag_1") for p in PANEL_POLLUTANTS),
        *(change(p, 1).alias(f"{p}_change_1") for p in PANEL_POLLUTANTS),
        pl.col("temperature_2m"),
        pl.col("temperature_2m").diff().over(by_site).alias("temperature_2m_change_1"),
        pl.col("relative_humidity_2m"),
        pl.col("wind_speed_10m"),
        (-pl.col("wind_speed_10m") * direction.sin()).alias("wind_u"),
        (-pl.col("wind_speed_10m") * direction.cos()).alias("wind_v"),
        pl.col("precipitation"),
        pl.col("boundary_layer_height"),
        pl.col("boundary_layer_height").diff().over(by_site).alias("boundary_layer_height_change_1"),
        pl.col("wind_speed_10m").diff().over(by_site).alias("wind_speed_10m_change_1"),
        pl.col("time").dt.hour().cast(pl.Int8).alias("hour"),
        pl.col("time").dt.weekday().cast(pl.Int8).alias("weekday"),
        pl.col("time").dt.month().cast(pl.Int8).alias("month"),
        _is_holiday(panel["time"]).alias("is_holiday"),
        *(pl.col(a) for a in SITE_ATTRIBUTES),
        pl.lit(horizon, pl.Int64).alias("hours_ahead"),  # a key of scored forecasts too: kept whole
    ).with_columns(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS if c != "hours_ahead")


def feature_matrix(features: pl.DataFrame, columns: tuple[str, ...] | list[str] = FEATURE_COLUMNS) -> np.ndarray:
    """The float64 matrix LightGBM takes, nulls as NaN, columns in the model's order."""
    return features.select(pl.col(c).cast(pl.Float64).fill_null(np.nan) for c in columns).to_numpy()


def lookback_start(start: datetime) -> datetime:
    """Where a panel must begin so rows from ``start`` have their full lag history."""
    return start - timedelta(hours=MAX_LOOKBACK_HOURS)
