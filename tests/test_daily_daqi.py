"""The daily index of a UK day (Defra's averaging per pollutant, the highest pollutant sets the
site's index) and its odds from the hourly forecasts' intervals."""

from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from routeaq_assets.core.daily_daqi import daily_index, daily_value, error_draws, index_of, uk_day_bounds
from routeaq_assets.core.daily_verification import reliability

UTC = timezone.utc


def test_a_uk_day_is_local_midnight_to_midnight_with_23_or_25_hours_at_the_clock_changes():
    assert uk_day_bounds(date(2025, 7, 14)) == (datetime(2025, 7, 13, 23, tzinfo=UTC), datetime(2025, 7, 14, 23, tzinfo=UTC))
    assert uk_day_bounds(date(2025, 1, 14)) == (datetime(2025, 1, 14, 0, tzinfo=UTC), datetime(2025, 1, 15, 0, tzinfo=UTC))
    for day, hours in ((date(2025, 3, 30), 23), (date(2025, 10, 26), 25)):
        start, end = uk_day_bounds(day)
        assert (end - start) == timedelta(hours=hours)


def test_each_pollutant_is_averaged_as_defra_averages_it():
    rng = np.random.default_rng(1)
    hours = rng.uniform(5, 120, 24)
    assert daily_value("pm25", hours)[0] == pytest.approx(hours.mean())
    assert daily_value("pm10", hours)[0] == pytest.approx(hours.mean())
    assert daily_value("no2", hours)[0] == pytest.approx(hours.max())
    assert daily_value("o3", hours)[0] == pytest.approx(max(hours[k:k + 8].mean() for k in range(17)))
    sparse = hours.copy()
    sparse[:7] = np.nan  # 17 of 24 hours: under Defra's 75 % capture
    assert np.isnan(daily_value("pm25", sparse)[0])
    sparse[0] = 50.0  # 18 of 24
    assert daily_value("pm25", sparse)[0] == pytest.approx(np.nanmean(sparse))
    assert index_of("pm10", np.array([50.4, 50.5, 101.0])).tolist() == [3.0, 4.0, 10.0]


def _day(day: date, values: dict[str, float], observed_until: int = 0, width: float = 0.0) -> pl.DataFrame:
    start, end = uk_day_bounds(day)
    times = pl.datetime_range(start, end, "1h", closed="left", time_unit="us", time_zone="UTC", eager=True).to_list()
    rows = []
    for pollutant, value in values.items():
        for k, t in enumerate(times):
            seen = k < observed_until
            rows.append({"time": t, "pollutant": pollutant, "observed": value if seen else None,
                         "pred": None if seen else value, "lower": None if seen else max(value - width, 0.0), "upper": None if seen else value + width})
    return pl.DataFrame(rows, schema_overrides={"time": pl.Datetime("us", "UTC")})


def test_the_site_index_is_its_highest_pollutant_and_observed_hours_are_certain():
    day = date(2025, 7, 14)
    result = daily_index(_day(day, {"pm25": 40.0, "pm10": 30.0, "no2": 80.0, "o3": 70.0}, observed_until=24), day)
    by = {p.pollutant: p.index for p in result.pollutants}
    assert by == {"pm25": 4, "pm10": 2, "no2": 2, "o3": 3}
    assert (result.index, result.band, result.set_by) == (4, "Moderate", "pm25")
    assert result.p_moderate == 1.0 and result.p_high == 0.0
    assert [result.p_at_least[k] for k in range(1, 11)] == [1.0] * 4 + [0.0] * 6


def test_today_combines_the_hours_observed_with_the_forecast_for_the_rest():
    day = date(2025, 7, 14)
    hours = _day(day, {"pm25": 20.0}, observed_until=12)
    hours = hours.with_columns(pl.when(pl.col("observed").is_not_null()).then(60.0).otherwise(pl.col("observed")).alias("observed"))
    result = daily_index(hours, day)
    (pm25,) = result.pollutants
    assert (pm25.observed_hours, pm25.forecast_hours) == (12, 12)
    assert pm25.value == pytest.approx(40.0) and result.index == 4  # (12 x 60 + 12 x 20) / 24


def test_the_odds_follow_the_interval_and_sit_near_one_half_at_a_boundary():
    day = date(2025, 7, 14)
    at_boundary = daily_index(_day(day, {"pm25": 35.5}, width=10.0), day)  # 35.5 rounds to 36: index 4
    assert at_boundary.index == 4 and 0.35 < at_boundary.p_moderate < 0.65
    far = daily_index(_day(day, {"pm25": 15.0}, width=10.0), day)
    assert far.index == 2 and far.p_moderate < 0.01
    ps = [at_boundary.p_at_least[k] for k in range(1, 11)]
    assert ps == sorted(ps, reverse=True) and ps[0] == 1.0
    assert daily_index(_day(day, {"pm25": 35.5}, width=20.0), day).p_high > at_boundary.p_high  # wider, more chance of High


def test_the_odds_are_calibrated_when_the_truth_follows_the_intervals():
    """Days whose truth is drawn from the forecast's own error model (the intervals' scales, the
    same hour-to-hour correlation): in every decile of the stated probability holding at least 30
    days, the share of days that reached Moderate is within 0.10 of it (the issue's criterion)."""
    rng = np.random.default_rng(4)
    day = date(2025, 7, 14)
    stated, happened = [], []
    truth_errors = error_draws(800, 24, seed=99)
    for k in range(800):
        level, width = rng.uniform(20, 50), rng.uniform(5, 20)
        hours = _day(day, {"pm25": level}, width=width)
        result = daily_index(hours, day, samples=400)
        truth = np.clip(level + truth_errors[k] * width / 1.2815515655446004, 0.0, None)
        stated.append(result.p_moderate)
        happened.append(index_of("pm25", daily_value("pm25", truth))[0] >= 4)
    deciles = reliability(np.array(stated), np.array(happened))
    judged = [d for d in deciles if d["calibrated"] is not None]
    assert len(judged) >= 3 and all(d["calibrated"] for d in judged), deciles
    assert sum(d["days"] for d in deciles) == 800


def test_the_observed_index_of_every_site_day_at_once_equals_the_daily_index_of_its_hours():
    from routeaq_assets.core.daily_verification import observed_daily_index

    rng = np.random.default_rng(8)
    start = datetime(2025, 10, 24, 23, tzinfo=UTC)  # three UK days around the clock change (25 h on the 26th)
    times = [start + timedelta(hours=k) for k in range(24 * 3 + 1)]
    panel = pl.DataFrame({
        "site_id": ["A"] * len(times) + ["B"] * len(times), "time": times * 2,
        **{p: np.where(rng.random(2 * len(times)) < 0.15, np.nan, rng.uniform(5, 140, 2 * len(times))) for p in ("pm25", "pm10", "no2", "o3")},
    }, schema_overrides={"time": pl.Datetime("us", "UTC")}).with_columns(pl.col(p).fill_nan(None) for p in ("pm25", "pm10", "no2", "o3"))
    observed = observed_daily_index(panel, ("pm25", "pm10", "no2", "o3"))
    for row in observed.iter_rows(named=True):
        site, day = row["site_id"], row["day"]
        hours = panel.filter(pl.col("site_id") == site).unpivot(index="time", on=["pm25", "pm10", "no2", "o3"], variable_name="pollutant", value_name="observed")
        hours = hours.with_columns(pred=pl.lit(None, pl.Float64), lower=pl.lit(None, pl.Float64), upper=pl.lit(None, pl.Float64))
        result = daily_index(hours, day)
        assert result.index == row["observed"], (site, day)
        for p in result.pollutants:  # each pollutant's day value beside the index, as the daily errors need it
            assert row[f"observed_{p.pollutant}"] == (None if p.value is None else pytest.approx(p.value)), (site, day, p.pollutant)
    assert observed.height == 2 * 3


def test_verification_counts_hits_false_alarms_and_scores_the_odds_beside_climatology_and_persistence():
    from routeaq_assets.core.daily_verification import issue_origin, verification_scores

    assert issue_origin(date(2025, 7, 14), "day_before") == datetime(2025, 7, 13, 11, tzinfo=UTC)  # noon BST the day before
    assert issue_origin(date(2025, 1, 14), "same_day") == datetime(2025, 1, 14, 6, tzinfo=UTC)
    # forecast index, P(>= 3), P(>= 4), observed, yesterday's observed
    days = [(4, 0.9, 0.8, 4, 3), (4, 0.9, 0.6, 2, 4), (2, 0.2, 0.1, 5, 2), (1, 0.0, 0.0, 1, 5), (3, 0.7, 0.3, 3, 1)]
    rows = pl.DataFrame([
        {"index": f, "observed": o, "persistence": y, **{f"p_at_least_{k}": (1.0 if k <= 2 else p3 if k == 3 else p4 if k == 4 else 0.0) for k in range(1, 11)}}
        for f, p3, p4, o, y in days
    ])
    scores = verification_scores(rows, climatology={k: 0.4 if k <= 4 else 0.1 for k in range(1, 11)})
    moderate = scores["index_4_or_above"]
    assert (moderate["events"], moderate["hits"], moderate["misses"], moderate["false_alarms"]) == (2, 1, 1, 1)
    assert (moderate["hit_rate"], moderate["false_alarm_ratio"], moderate["critical_success_index"]) == (0.5, 0.5, pytest.approx(1 / 3))
    observed_4 = np.array([1, 0, 1, 0, 0])
    assert moderate["brier"] == pytest.approx(np.mean((np.array([0.8, 0.6, 0.1, 0.0, 0.3]) - observed_4) ** 2))
    assert moderate["brier_climatology"] == pytest.approx(np.mean((0.4 - observed_4) ** 2))
    assert moderate["brier_persistence"] == pytest.approx(np.mean((np.array([0, 1, 0, 1, 0]) - observed_4) ** 2))
    assert scores["exact_band"] == pytest.approx(3 / 5) and scores["index_within_one"] == pytest.approx(3 / 5)
    perfect = rows.with_columns(pl.col("observed").alias("index"), *(pl.when(pl.col("observed") >= k).then(1.0).otherwise(0.0).alias(f"p_at_least_{k}") for k in range(1, 11)))
    best = verification_scores(perfect, climatology={k: 0.4 for k in range(1, 11)})
    assert best["rps"] == 0.0 and best["index_4_or_above"]["brier"] == 0.0 and best["index_4_or_above"]["false_alarm_ratio"] == 0.0


def test_reliability_judges_each_decile_of_30_days_or_more():
    stated = np.array([0.05] * 40 + [0.55] * 10 + [1.0] * 30)
    happened = np.array([True] * 40 + [False] * 10 + [True] * 27 + [False] * 3)
    rows = {r["low"]: r for r in reliability(stated, happened)}
    assert set(rows) == {0.0, 0.5, 0.9}  # 1.0 falls in the last decile
    assert rows[0.0]["days"] == 40 and rows[0.0]["observed"] == 1.0 and rows[0.0]["calibrated"] is False  # said 5 %, happened every time
    assert rows[0.5]["calibrated"] is None  # ten days: too few to judge
    assert rows[0.9]["stated"] == 1.0 and rows[0.9]["observed"] == 0.9 and rows[0.9]["calibrated"] is True


def test_the_chance_of_a_miss_is_how_often_a_calibrated_forecast_misses_the_tolerance():
    """A decile's ``chance_of_miss`` is the share of simulated calibrated deciles (events drawn at
    the stated probability) whose observed share lies farther than 0.10 from it."""
    from routeaq_assets.core.daily_verification import chance_of_miss

    rng = np.random.default_rng(12)
    for days, stated in ((30, 0.3), (48, 0.145), (200, 0.5)):
        shares = rng.binomial(days, stated, size=20000) / days
        simulated = float(np.mean(np.abs(shares - stated) > 0.10 + 1e-12))
        assert chance_of_miss(days, stated) == pytest.approx(simulated, abs=0.01), (days, stated)
    assert chance_of_miss(30, 0.3) > 0.1  # 30 days cannot tell a calibrated forecast from one 0.10 off
    assert chance_of_miss(1000, 0.5) < 1e-6
    rows = reliability(np.array([0.3] * 30), np.array([True] * 9 + [False] * 21))
    assert rows[0]["chance_of_miss"] == pytest.approx(chance_of_miss(30, 0.3))


def test_verified_daily_odds_use_the_intervals_as_served_with_the_factors_of_each_origin():
    """``daily_forecast_rows`` with ``factors_at`` stretches each forecast hour's interval by the
    factors as of the hour after the issue's origin (what the service had published then): the
    point index stays, the odds spread out."""
    from test_features import START, _panel

    from routeaq_assets.core.daily_verification import daily_forecast_rows, issue_origin
    from routeaq_assets.core.features import build_features
    from routeaq_assets.core.intervals import ALL_SITES, FACTORS
    from routeaq_assets.core.models import TRAINING_LEADS, TrainingSettings

    panel = _panel(hours=24 * 20)
    features = pl.concat([build_features(panel, "pm25", h) for h in TRAINING_LEADS])
    days = [date(2025, 3, 17), date(2025, 3, 18)]
    model = TrainingSettings(num_boost_round=30).train(features, START + timedelta(days=15))
    asked = []

    def stretched(as_of: datetime) -> pl.DataFrame:
        asked.append(as_of)
        return pl.DataFrame(
            {"pollutant": "pm25", "hours_ahead": list(range(1, 49)), "site_id": ALL_SITES, "factor": 3.0, "forecasts": 500, "as_of": as_of},
            schema_overrides={"as_of": FACTORS["as_of"]},
        )

    plain = daily_forecast_rows(panel, {"pm25": model}, days, "day_before")
    served = daily_forecast_rows(panel, {"pm25": model}, days, "day_before", factors_at=stretched)
    assert asked == [issue_origin(d, "day_before") + timedelta(hours=1) for d in days]
    assert served["index"].to_list() == plain["index"].to_list()

    def spread(rows: pl.DataFrame) -> float:  # how far the odds are from a certain index
        p = rows.select([f"p_at_least_{k}" for k in range(2, 11)]).to_numpy()
        return float(np.mean(np.sum(p * (1 - p), axis=1)))

    assert spread(served) > spread(plain) + 0.05, (spread(served), spread(plain))


def _errors(**columns: list[float]) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    return pl.DataFrame({"site_id": ["A"] * n, "day": [date(2025, 6, 1) + timedelta(days=k) for k in range(n)], **{f"error_{p}": v for p, v in columns.items()}})


def test_a_day_wholly_forecast_takes_its_odds_from_the_verified_daily_errors():
    """Each verified site-day moves the day's forecast value by its error (in log(1 + value)): the
    odds are the share of those that reach each index. A day partly observed, or too few verified
    days, and the odds come from the hourly intervals."""
    from routeaq_assets.core.daily_daqi import DAILY_ERRORS, HOURLY_DRAWS, MIN_DAILY_ERRORS

    day = date(2025, 7, 14)
    # pm25 forecast 30 (index 3); 40 % of the verified days erred by +25 % (37.5: index 4), the rest by -10 %
    errors = _errors(pm25=[float(np.log1p(37.5) - np.log1p(30.0))] * 20 + [float(np.log1p(27.0) - np.log1p(30.0))] * 30)
    ahead = daily_index(_day(day, {"pm25": 30.0}, width=1.0), day, errors=errors)
    assert (ahead.index, ahead.odds_from, ahead.odds_site_days) == (3, DAILY_ERRORS, 50)
    assert ahead.p_moderate == pytest.approx(0.4) and ahead.p_at_least[3] == 1.0 and ahead.p_at_least[5] == 0.0
    assert ahead.as_dict()["odds_from"] == DAILY_ERRORS
    narrow = daily_index(_day(day, {"pm25": 30.0}, width=1.0), day)  # the hourly intervals say it cannot reach 36
    assert narrow.odds_from == HOURLY_DRAWS and narrow.p_moderate == 0.0
    today = daily_index(_day(day, {"pm25": 30.0}, observed_until=1, width=1.0), day, errors=errors)
    assert today.odds_from == HOURLY_DRAWS and today.p_moderate == 0.0
    few = daily_index(_day(day, {"pm25": 30.0}, width=1.0), day, errors=errors.head(MIN_DAILY_ERRORS - 1))
    assert few.odds_from == HOURLY_DRAWS
    other = daily_index(_day(day, {"no2": 100.0}, width=1.0), day, errors=errors)  # no verified NO2 errors
    assert other.odds_from == HOURLY_DRAWS


def test_pollutants_that_erred_together_move_together_in_the_odds():
    """The site's odds draw each verified site-day's errors of all its pollutants at once: when
    PM2.5 and NO2 ran high on the same days, P(index >= 4) is the share of those days (0.5), not
    the 0.75 that independent errors would give."""
    from routeaq_assets.core.daily_daqi import odds_from_errors

    high_pm, low_pm = float(np.log1p(40.0) - np.log1p(30.0)), float(np.log1p(20.0) - np.log1p(30.0))
    high_no2, low_no2 = float(np.log1p(210.0) - np.log1p(150.0)), float(np.log1p(120.0) - np.log1p(150.0))
    together = _errors(pm25=[high_pm, low_pm] * 20, no2=[high_no2, low_no2] * 20)
    odds, days = odds_from_errors({"pm25": 30.0, "no2": 150.0}, together)
    assert days == 40 and odds[4] == pytest.approx(0.5)
    apart = _errors(pm25=[high_pm, low_pm] * 20, no2=[high_no2, high_no2, low_no2, low_no2] * 10)
    assert odds_from_errors({"pm25": 30.0, "no2": 150.0}, apart)[0][4] == pytest.approx(0.75)
    gaps = together.with_columns(pl.when(pl.col("day") < date(2025, 6, 12)).then(None).otherwise(pl.col("error_no2")).alias("error_no2"))
    assert odds_from_errors({"pm25": 30.0, "no2": 150.0}, gaps) is None  # 29 site-days with both errors: too few


def _verified(days: list[date], forecast: float, observed: float | None, hours_observed: int = 0, site: str = "A") -> pl.DataFrame:
    from routeaq_assets.core.daily_verification import issue_origin

    return pl.DataFrame(
        {"site_id": site, "day": days, "issue": "day_before", "origin": [issue_origin(d, "day_before") for d in days], "index": 3,
         "hours_observed": hours_observed, "forecast_pm25": forecast, "observed_pm25": observed,
         **{f"p_at_least_{k}": 1.0 if k <= 3 else 0.0 for k in range(1, 11)}, "odds_from": "hourly_intervals"},
        schema_overrides={"origin": pl.Datetime("us", "UTC"), "observed_pm25": pl.Float64, "hours_observed": pl.Int64},
    )


def test_daily_errors_are_those_of_days_over_by_the_origin_forecast_wholly_ahead_in_the_window():
    from routeaq_assets.core.daily_daqi import DAILY_ERROR_DAYS
    from routeaq_assets.core.daily_verification import daily_errors, issue_origin

    target = date(2025, 7, 14)
    as_of = issue_origin(target, "day_before")  # noon on the 13th: the 12th is the newest day over
    days = [target - timedelta(days=k) for k in range(0, DAILY_ERROR_DAYS + 5)]
    verified = pl.concat([
        _verified(days, forecast=30.0, observed=37.5),
        _verified(days, forecast=30.0, observed=10.0, hours_observed=7, site="B"),  # issued on the day: not wholly ahead
    ])
    errors = daily_errors(verified, as_of)
    assert errors["day"].max() == target - timedelta(days=2) and errors["day"].min() == target - timedelta(days=DAILY_ERROR_DAYS + 1)
    assert errors.height == DAILY_ERROR_DAYS and set(errors["site_id"]) == {"A"}
    assert errors["error_pm25"].to_numpy() == pytest.approx(np.log1p(37.5) - np.log1p(30.0))


def test_verified_odds_use_only_the_days_verified_by_each_origin():
    """``with_verified_odds`` gives a day forecast wholly ahead the odds of the errors verified by
    its origin: a later day's outcome, however wrong, does not change them."""
    from routeaq_assets.core.daily_daqi import DAILY_ERRORS, HOURLY_DRAWS
    from routeaq_assets.core.daily_verification import with_verified_odds

    target = date(2025, 7, 14)
    history = _verified([target - timedelta(days=k) for k in range(2, 42)], forecast=30.0, observed=37.5)  # every day +25 %: index 4
    rows = pl.concat([_verified([target], forecast=30.0, observed=None), _verified([target], forecast=30.0, observed=None, hours_observed=7, site="B")])
    later = _verified([target + timedelta(days=k) for k in range(-1, 30)], forecast=30.0, observed=5.0, site="C")
    scored = with_verified_odds(rows, pl.concat([history, later]))
    ahead, today = scored.row(0, named=True), scored.row(1, named=True)
    assert (ahead["odds_from"], ahead["p_at_least_4"]) == (DAILY_ERRORS, 1.0)
    assert (today["odds_from"], today["p_at_least_4"]) == (HOURLY_DRAWS, 0.0)
    assert with_verified_odds(rows, later).equals(rows)  # nothing verified by the origin yet
