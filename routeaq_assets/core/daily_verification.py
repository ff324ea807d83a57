"""Verifying daily index forecasts as people judge them: was the band right, was the warning given.

Input rows are site-days with the forecast ``index`` and its ``p_at_least_{k}`` (k = 1..10), the
``observed`` index of that day, and ``persistence`` (yesterday's observed index at the site).
Scores, pooled over sites, each with the number of site-days and events it rests on:
- the share of days with the exact band, and with the index within one;
- for "index >= k" (k = 4, Moderate or above, and k = 3, rarer days being few): hit rate, false
  alarm ratio and critical success index of the point forecast, and the Brier score of the
  probability beside climatology (the share of such days in ``climatology``) and persistence;
- the ranked probability score over the ten indices, beside the same two references;
- the probabilities' reliability: per decile of the stated probability, the site-days, the mean
  stated and the share observed; a decile of at least ``MIN_DECILE_DAYS`` is calibrated when the
  two lie within ``CALIBRATION_TOLERANCE``. Beside it, the chance that a perfectly calibrated
  forecast would miss that tolerance on the same number of days (binomial): at 30 site-days and a
  stated 0.3 it is about one in six, so a count of misses is read beside the count expected by chance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone

import numpy as np
import polars as pl

from routeaq_assets.core.daily_daqi import (
    DAILY_ERROR_DAYS,
    DAILY_ERRORS,
    HOURLY_DRAWS,
    MIN_HOURS_SHARE,
    MODERATE,
    O3_WINDOW_HOURS,
    UK,
    daily_index,
    day_hours,
    error_column,
    index_of,
    odds_from_errors,
    uk_day_bounds,
)
from routeaq_assets.core.daqi import BANDS
from routeaq_assets.core.features import build_features, lookback_start
from routeaq_assets.core.intervals import factors_for, widen

THRESHOLDS = (MODERATE, 3)
INDICES = range(1, 11)
MIN_DECILE_DAYS = 30
CALIBRATION_TOLERANCE = 0.10


def chance_of_miss(days: int, stated: float, tolerance: float = CALIBRATION_TOLERANCE) -> float:
    """The probability that ``days`` site-days, each with the event at probability ``stated``,
    show an observed share farther than ``tolerance`` from ``stated`` (binomial)."""
    if days == 0:
        return 0.0
    p = min(max(stated, 1e-12), 1 - 1e-12)
    inside = [k for k in range(days + 1) if abs(k / days - stated) <= tolerance + 1e-12]
    log_pmf = lambda k: math.lgamma(days + 1) - math.lgamma(k + 1) - math.lgamma(days - k + 1) + k * math.log(p) + (days - k) * math.log1p(-p)  # noqa: E731
    return max(0.0, 1.0 - sum(math.exp(log_pmf(k)) for k in inside))


def reliability(stated: np.ndarray, happened: np.ndarray) -> list[dict]:
    """Per decile of the stated probability (0-0.1, ..., 0.9-1.0, 1.0 in the last) that holds a
    site-day: ``low``, ``days``, ``stated`` (their mean), ``observed`` (the share of them with the
    event), ``calibrated`` (None below ``MIN_DECILE_DAYS``) and ``chance_of_miss`` (the chance that a
    perfectly calibrated forecast would not be, on as many days)."""
    deciles = np.minimum((np.asarray(stated) * 10).astype(int), 9)
    rows = []
    for k in range(10):
        inside = deciles == k
        if inside.any():
            days, mean_stated, observed = int(inside.sum()), float(np.mean(stated[inside])), float(np.mean(happened[inside]))
            rows.append({
                "low": k / 10, "days": days, "stated": mean_stated, "observed": observed,
                "calibrated": abs(observed - mean_stated) <= CALIBRATION_TOLERANCE if days >= MIN_DECILE_DAYS else None,
                "chance_of_miss": chance_of_miss(days, mean_stated),
            })
    return rows


def p_columns() -> list[str]:
    return [f"p_at_least_{k}" for k in INDICES]


def _band(index: pl.Expr) -> pl.Expr:
    return index.cast(pl.Int64).replace_strict(list(INDICES), list(BANDS), default=None)


def climatology_rates(observed: pl.Series) -> dict[int, float]:
    """The share of site-days whose observed index reached each k: the climatological probability."""
    values = observed.drop_nulls().to_numpy()
    return {k: float(np.mean(values >= k)) if values.size else float("nan") for k in INDICES}


def _contingency(forecast: np.ndarray, event: np.ndarray) -> dict:
    hits, misses = int(np.sum(forecast & event)), int(np.sum(~forecast & event))
    false_alarms = int(np.sum(forecast & ~event))
    ratio = lambda a, b: a / b if b else None  # noqa: E731
    return {
        "events": int(event.sum()), "warnings": int(forecast.sum()), "hits": hits, "misses": misses, "false_alarms": false_alarms,
        "hit_rate": ratio(hits, hits + misses), "false_alarm_ratio": ratio(false_alarms, hits + false_alarms),
        "critical_success_index": ratio(hits, hits + misses + false_alarms),
    }


def verification_scores(rows: pl.DataFrame, climatology: dict[int, float]) -> dict:
    """The scores of ``rows`` (see the module docstring); rows without an observed or a forecast
    index are left out and counted."""
    scored = rows.filter(pl.col("observed").is_not_null() & pl.col("index").is_not_null())
    result: dict = {"site_days": scored.height, "left_out": rows.height - scored.height}
    if "odds_from" in scored.columns:
        result["odds_from"] = dict(sorted(scored["odds_from"].fill_null(HOURLY_DRAWS).value_counts().iter_rows()))
    if scored.is_empty():
        return result
    index, observed = scored["index"].to_numpy(), scored["observed"].to_numpy()
    bands = scored.select(_band(pl.col("index")).alias("f"), _band(pl.col("observed")).alias("o"))
    result["exact_band"] = float((bands["f"] == bands["o"]).mean())
    result["index_within_one"] = float(np.mean(np.abs(index - observed) <= 1))
    persistence = scored["persistence"].to_numpy().astype(float)
    has_persistence = ~np.isnan(persistence)
    for k in THRESHOLDS:
        event = observed >= k
        p = scored[f"p_at_least_{k}"].to_numpy()
        brier = lambda q, mask=slice(None): float(np.mean((q[mask] - event[mask]) ** 2))  # noqa: E731
        result[f"index_{k}_or_above"] = {
            **_contingency(index >= k, event),
            "brier": brier(p),
            "brier_climatology": brier(np.full(len(p), climatology[k])),
            "brier_persistence": brier((persistence >= k).astype(float), has_persistence) if has_persistence.any() else None,
            "brier_on_persistence_days": brier(p, has_persistence) if has_persistence.any() else None,
            "persistence_days": int(has_persistence.sum()),
            "reliability": reliability(p, event),
        }
    cumulative = scored.select(p_columns()).to_numpy()[:, 1:]  # P(index >= k), k = 2..10 (k = 1 is always 1)
    outcome = np.stack([observed >= k for k in range(2, 11)], axis=1).astype(float)
    rps = lambda q, mask=slice(None): float(np.mean(np.sum((q[mask] - outcome[mask]) ** 2, axis=1) / 9))  # noqa: E731
    result["rps"] = rps(cumulative)
    result["rps_climatology"] = rps(np.tile([climatology[k] for k in range(2, 11)], (len(observed), 1)))
    if has_persistence.any():
        result["rps_persistence"] = rps(np.stack([persistence >= k for k in range(2, 11)], axis=1).astype(float), has_persistence)
        result["rps_on_persistence_days"] = rps(cumulative, has_persistence)
    return result


def format_scores(scores: dict, title: str) -> str:
    """The scores as a Markdown table, with the counts each figure rests on."""
    if not scores.get("site_days"):
        return f"{title}: no site-day with both a forecast and an observed index"
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        f"**{title}**: {scores['site_days']} site-days ({scores['left_out']} left out); exact band {scores['exact_band']:.1%}, "
        f"index within one {scores['index_within_one']:.1%}; RPS {scores['rps']:.4f} (climatology {scores['rps_climatology']:.4f}"
        + (f", persistence {scores['rps_persistence']:.4f} on its days, model {scores['rps_on_persistence_days']:.4f}" if "rps_persistence" in scores else "")
        + ")"
        + ("; odds from " + ", ".join(f"{source.replace('_', ' ')} on {n} site-days" for source, n in scores["odds_from"].items()) if scores.get("odds_from") else ""),
        "",
        "| event | events | warnings | hit rate | false alarm ratio | CSI | Brier | Brier climatology | Brier persistence (model, same days) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in THRESHOLDS:
        s = scores[f"index_{k}_or_above"]
        lines.append(
            f"| index >= {k} | {s['events']} | {s['warnings']} | {fmt(s['hit_rate'])} | {fmt(s['false_alarm_ratio'])} | {fmt(s['critical_success_index'])} | "
            f"{s['brier']:.4f} | {s['brier_climatology']:.4f} | {fmt(s['brier_persistence'])} ({fmt(s['brier_on_persistence_days'])}) |"
        )
    lines += ["", f"Reliability (a decile of {MIN_DECILE_DAYS}+ site-days is calibrated within {CALIBRATION_TOLERANCE:.2f}):", "",
              "| event | stated probability | site-days | mean stated | observed | calibrated | chance a calibrated forecast misses |",
              "|---|---|---|---|---|---|---|"]
    for k in THRESHOLDS:
        rows = scores[f"index_{k}_or_above"]["reliability"]
        for r in rows:
            said = "too few days" if r["calibrated"] is None else ("yes" if r["calibrated"] else "no")
            lines.append(f"| index >= {k} | {r['low']:.1f}-{r['low'] + 0.1:.1f} | {r['days']} | {r['stated']:.3f} | {r['observed']:.3f} | {said} | {r['chance_of_miss']:.2f} |")
        judged = [r for r in rows if r["calibrated"] is not None]
        if judged:
            lines.append(f"| index >= {k} | judged deciles | {len(judged)} | | | missed: {sum(not r['calibrated'] for r in judged)} | "
                         f"expected by chance: {sum(r['chance_of_miss'] for r in judged):.2f} |")
    return "\n".join(lines)


# When a daily forecast is issued: the UK day before (offset -1) or the day itself (0), and the
# UK local hour of the newest observation it starts from. Noon the day before is when Defra's
# forecast for tomorrow is read; 06:00 is the morning's look at the day.
ISSUES = {"day_before": (-1, 12), "same_day": (0, 6)}


def issue_origin(day: date, issue: str) -> datetime:
    """The UTC hour of the newest observation a forecast of ``day`` issued ``issue`` starts from."""
    offset, hour = ISSUES[issue]
    return datetime.combine(day + timedelta(days=offset), time(hour), tzinfo=UK).astimezone(timezone.utc)


def observed_daily_index(panel: pl.DataFrame, pollutants: tuple[str, ...]) -> pl.DataFrame:
    """``site_id, day, observed``: each UK day's observed index (``core.daily_daqi``'s averaging and
    data capture, computed for every site-day of the panel at once; null without enough hours)."""
    local = panel.sort("site_id", "time").with_columns(day=pl.col("time").dt.convert_time_zone("Europe/London").dt.date())
    frames = []
    for p in pollutants:
        if p not in local.columns:
            continue
        if p == "o3":
            window = pl.col(p).rolling_mean(O3_WINDOW_HOURS, min_samples=6).over("site_id")
            started_same_day = pl.col("day").shift(O3_WINDOW_HOURS - 1).over("site_id") == pl.col("day")
            hourly = pl.when(started_same_day).then(window).otherwise(None)
            daily = hourly.max()
        else:
            hourly = pl.col(p)
            daily = hourly.mean() if p in ("pm25", "pm10") else hourly.max()
        hours = pl.len()
        per_day = local.group_by("site_id", "day").agg(daily.alias("value"), pl.col(p).is_not_null().sum().alias("seen"), hours.alias("hours"))
        per_day = per_day.with_columns(pl.when(pl.col("seen") >= MIN_HOURS_SHARE * pl.col("hours")).then(pl.col("value")).otherwise(None).alias("value"))
        frames.append(per_day.select("site_id", "day", pl.lit(p).alias("pollutant"), pl.col("value").cast(pl.Float64),
                                     pl.Series("index", index_of(p, per_day["value"].cast(pl.Float64).fill_null(np.nan).to_numpy()))))
    long = pl.concat(frames)
    joined = long.group_by("site_id", "day").agg(pl.col("index").fill_nan(None).max().cast(pl.Int64).alias("observed"))
    values = long.pivot(on="pollutant", index=["site_id", "day"], values="value").rename({p: f"observed_{p}" for p in long["pollutant"].unique()})
    return joined.join(values, on=["site_id", "day"], how="left").sort("site_id", "day")


def daily_forecast_rows(
    panel: pl.DataFrame,
    models: dict,
    days: list[date],
    issue: str,
    coverage: float = 0.8,
    factors_at: Callable[[datetime], pl.DataFrame] | None = None,
) -> pl.DataFrame:
    """The daily index forecast of every site and day of ``days`` issued ``issue``, from ``panel``
    (observations and weather; complete hourly grid with the features' lookback) and a forecaster
    per pollutant (``models``: each serves 1 to ``max_hours_ahead`` hours): the hours up to the
    origin are observed, those after it forecast at the lead they are from it. ``factors_at``
    gives the interval factors (``core.intervals``) as of an origin: each forecast hour's interval
    is stretched by them as the service stretches what it serves; without it, the models' own."""
    if not days:
        return pl.DataFrame()
    first, last = issue_origin(min(days), issue), uk_day_bounds(max(days))[1]
    panel = panel.filter((pl.col("time") >= lookback_start(min(first, uk_day_bounds(min(days))[0]))) & (pl.col("time") < last))
    # What the service had published an hour after each origin: one table per day, for every pollutant.
    factors = {day: factors_at(issue_origin(day, issue) + timedelta(hours=1)) for day in days} if factors_at is not None else {}
    hours = []
    for pollutant, forecaster in models.items():
        wanted = []
        for day in days:
            origin = issue_origin(day, issue)
            start, end = uk_day_bounds(day)
            for k in range(int((end - start) / timedelta(hours=1))):
                lead = int((start + timedelta(hours=k) - origin) / timedelta(hours=1))
                if 1 <= lead <= forecaster.max_hours_ahead:
                    wanted.append((start + timedelta(hours=k), lead, day))
        if not wanted:
            continue
        keys = pl.DataFrame(wanted, schema={"time": pl.Datetime("us", "UTC"), "hours_ahead": pl.Int64, "day": pl.Date}, orient="row")
        features = pl.concat(
            [build_features(panel, pollutant, h).join(keys.filter(pl.col("hours_ahead") == h), on=["time", "hours_ahead"], how="inner")
             for h in keys["hours_ahead"].unique().sort().to_list()]
        )
        pred, lower, upper = forecaster.predict(features)
        if factors:
            keys = features.select("site_id", pl.lit(pollutant).alias("pollutant"), "hours_ahead", pl.Series("pred", pred))
            factor = np.ones(features.height)
            for day, published in factors.items():
                rows = (features["day"] == day).to_numpy()
                if rows.any():
                    factor[rows] = factors_for(published, keys.filter(pl.Series(rows)))
            lower, upper = widen(pred, lower, factor), widen(pred, upper, factor)
        hours.append(features.select("site_id", "time", "day", pl.lit(pollutant).alias("pollutant"),
                                     pl.Series("pred", pred), pl.Series("lower", lower), pl.Series("upper", upper)))
    forecast = pl.concat(hours) if hours else pl.DataFrame()
    rows = []
    for day in days:
        origin = issue_origin(day, issue)
        start, end = uk_day_bounds(day)
        seen = panel.filter((pl.col("time") >= start) & (pl.col("time") < end) & (pl.col("time") <= origin))
        for site_id in panel["site_id"].unique().sort().to_list():
            ahead = forecast.filter((pl.col("site_id") == site_id) & (pl.col("day") == day)) if forecast.height else None
            result = daily_index(day_hours(seen.filter(pl.col("site_id") == site_id), ahead, list(models)), day, coverage=coverage)
            values = {p.pollutant: p.value for p in result.pollutants}
            rows.append({"site_id": site_id, "day": day, "issue": issue, "origin": origin, "index": result.index, "set_by": result.set_by,
                         "hours_observed": sum(p.observed_hours for p in result.pollutants),
                         **{f"forecast_{p}": values.get(p) for p in models},
                         **{f"p_at_least_{k}": result.p_at_least.get(k) for k in INDICES}, "odds_from": result.odds_from})
    return pl.DataFrame(rows, schema_overrides={"origin": pl.Datetime("us", "UTC"), "index": pl.Int64, "hours_observed": pl.Int64,
                                                **{f"forecast_{p}": pl.Float64 for p in models}, **{c: pl.Float64 for c in p_columns()}})


def daily_errors(verified: pl.DataFrame, as_of: datetime, days: int = DAILY_ERROR_DAYS) -> pl.DataFrame:
    """The verified daily errors known at ``as_of``: for each site-day of ``verified`` (forecast
    rows with their outcomes, ``with_outcomes``) forecast wholly ahead (no hour observed), whose UK
    day ended by ``as_of`` and at most ``days`` days before it, ``error_{pollutant}`` = log(1 +
    observed value) - log(1 + forecast value) of the day's value (null where either is missing)."""
    pollutants = [c.removeprefix("forecast_") for c in verified.columns if c.startswith("forecast_") and f"observed_{c.removeprefix('forecast_')}" in verified.columns]
    if verified.is_empty() or not pollutants or "hours_observed" not in verified.columns:
        return pl.DataFrame(schema={"site_id": pl.Utf8, "day": pl.Date})
    last_day = as_of.astimezone(UK).date() - timedelta(days=1)  # the newest UK day over by as_of
    log_value = lambda c: pl.col(c).clip(lower_bound=0.0).log1p()  # noqa: E731
    return (
        verified.filter((pl.col("hours_observed") == 0) & (pl.col("day") <= last_day) & (pl.col("day") > last_day - timedelta(days=days)))
        .unique(["site_id", "day"], keep="first")
        .select("site_id", "day", *(log_value(f"observed_{p}").sub(log_value(f"forecast_{p}")).alias(error_column(p)) for p in pollutants))
        .sort("site_id", "day")
    )


def with_verified_odds(rows: pl.DataFrame, verified: pl.DataFrame) -> pl.DataFrame:
    """``rows`` (``daily_forecast_rows``) with the odds of each day forecast wholly ahead taken
    from the daily errors verified by its origin (``daily_errors`` of ``verified``), as the
    service takes them (``core.daily_daqi``); the others, and days with too few verified
    site-days, keep the odds drawn from the hourly intervals."""
    if rows.is_empty():
        return rows
    pollutants = [c.removeprefix("forecast_") for c in rows.columns if c.startswith("forecast_")]
    out = []
    for (origin,), group in rows.group_by("origin", maintain_order=True):
        errors = daily_errors(verified, origin)
        for row in group.iter_rows(named=True):
            values = {p: row[f"forecast_{p}"] for p in pollutants if row[f"forecast_{p}"] is not None}
            odds = odds_from_errors(values, errors) if row["hours_observed"] == 0 and row["index"] is not None else None
            if odds is not None:
                row = {**row, **{f"p_at_least_{k}": odds[0][k] for k in INDICES}, "odds_from": DAILY_ERRORS}
            out.append(row)
    return pl.DataFrame(out, schema=rows.schema)


def with_outcomes(forecasts: pl.DataFrame, observed: pl.DataFrame) -> pl.DataFrame:
    """Forecast rows with the day's ``observed`` index and yesterday's (``persistence``)."""
    yesterday = observed.select("site_id", (pl.col("day") + timedelta(days=1)).alias("day"), pl.col("observed").alias("persistence"))
    return forecasts.join(observed, on=["site_id", "day"], how="left").join(yesterday, on=["site_id", "day"], how="left")
