"""Monitoring assets on a trained home: forecast_performance against an independent
recomputation from the prediction log and the observations, and the drift report's records."""

import json
import shutil
from datetime import datetime, timedelta, timezone

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from conftest import TEST_SITES, make_definitions, partition_key
from routeaq_assets.core.models import GATE_LEADS
from routeaq_assets.core.drift import CURRENT_WINDOW_HOURS, DRIFT_FEATURES, reference_sample_sql
from routeaq_serving.prediction_log import PredictionLog

UTC = timezone.utc
HOURS = [datetime(2025, 8, 1, 6, tzinfo=UTC) + timedelta(hours=k) for k in range(6)]


@pytest.fixture
def monitored_home(trained_home, tmp_path, monkeypatch):
    """A private copy of the trained home: these tests write scores and reports into it."""
    home = tmp_path / "routeaq"
    shutil.copytree(trained_home, home, symlinks=True)
    (home / "dagster" / "dagster.yaml").unlink()
    for served_before in (home / "predictions").glob("predictions-*.jsonl"):
        served_before.unlink()  # what other tests served from the shared trained home: each test logs its own
    monkeypatch.setenv("ROUTEAQ_HOME", str(home))
    return home


def materialize(defs, asset: str, hours: list[datetime]):
    return dg.materialize(
        [defs.get_assets_def(asset)],
        resources=defs.resources,
        tags={"dagster/asset_partition_range_start": partition_key(hours[0]), "dagster/asset_partition_range_end": partition_key(hours[-1])},
    )


def served(site: str, hour: datetime, pollutant: str, pred: float) -> dict:
    """A forecast answer in the service's shape (what routeaq_serving appends to the log)."""
    return {
        "site_id": site, "timestamp": f"{hour:%Y-%m-%dT%H:%M:%SZ}", "pollutant": pollutant, "pred": pred, "lower": pred - 4.0, "upper": pred + 4.0,
        "interval": 0.8, "interval_factor": 1.0, "hours_ahead": 1, "origin": f"{hour - timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}",
        "model_name": f"routeaq-{pollutant}", "model_version": "1",
    }


def test_forecast_performance_equals_a_recomputation_from_the_log_and_the_observations(monitored_home):
    rng = np.random.default_rng(3)
    log = PredictionLog(monitored_home / "predictions")
    answers = [served(s, h, p, float(rng.uniform(2, 40))) for h in HOURS for s in TEST_SITES for p in ("pm25", "no2", "o3")]
    log.append([{**a, "pred": a["pred"] + 100.0} for a in answers[:5]])  # asked again later: the newer answer counts
    log.append(answers)
    defs = make_definitions(monitored_home)
    metadata = materialize(defs, "forecast_performance", HOURS).asset_materializations_for_node("forecast_performance")[-1].metadata

    with duckdb.connect(str(monitored_home / "warehouse.duckdb"), read_only=True) as con:
        observed = {(s, t, p): v for s, t, p, v in con.execute("SELECT site_id, time, pollutant, value FROM observations").fetchall()}
    for pollutant in ("pm25", "no2", "o3"):
        rows = []
        for a in (a for a in answers if a["pollutant"] == pollutant):
            hour = datetime.fromisoformat(a["timestamp"].replace("Z", "+00:00"))
            y, base = observed.get((a["site_id"], hour, pollutant)), observed.get((a["site_id"], hour - timedelta(hours=1), pollutant))
            if y is not None and base is not None:
                rows.append((a["pred"], a["lower"], a["upper"], y, base))
        pred, lower, upper, y, base = map(np.array, zip(*rows))
        rmse, persistence = np.sqrt(np.mean((pred - y) ** 2)), np.sqrt(np.mean((base - y) ** 2))
        assert metadata[f"{pollutant}_rmse"].value == pytest.approx(rmse, abs=1e-4)
        assert metadata[f"{pollutant}_mae"].value == pytest.approx(np.mean(np.abs(pred - y)), abs=1e-4)
        assert metadata[f"{pollutant}_bias"].value == pytest.approx(np.mean(pred - y), abs=1e-4)
        assert metadata[f"{pollutant}_coverage"].value == pytest.approx(np.mean((y >= lower) & (y <= upper)), abs=1e-4)
        assert metadata[f"{pollutant}_persistence_rmse"].value == pytest.approx(persistence, abs=1e-4)
        assert metadata[f"{pollutant}_skill"].value == pytest.approx(1 - rmse / persistence, abs=1e-4)
    assert metadata["forecasts_logged"].value == len(answers)
    # Only one-hour forecasts were served: the other gate leads are computed as of then.
    as_of_leads = [h for h in GATE_LEADS if h != 1]
    assert metadata["forecasts_as_of_champion"].value == len(HOURS) * len(TEST_SITES) * (3 * len(as_of_leads) + len(GATE_LEADS))  # pm10 was never served
    assert "no2_6h_skill" in metadata and "| no2 | 48 |" in metadata["scores"].value
    with duckdb.connect(str(monitored_home / "warehouse.duckdb"), read_only=True) as con:  # each hour's rolling scores, as the retraining policy reads them
        stored = con.execute("SELECT pollutant, hours_ahead, skill FROM rolling_scores WHERE time = ?", [HOURS[-1]]).fetchall()
    assert {(p, h) for p, h, _ in stored} == {(p, h) for p in ("pm25", "pm10", "no2", "o3") for h in GATE_LEADS}
    assert {p: skill for p, h, skill in stored if h == 1 and p != "pm10"} == pytest.approx({p: metadata[f"{p}_skill"].value for p in ("pm25", "no2", "o3")}, abs=1e-4)
    # One plot per partition, linked from the UI through the service's /reports route.
    assert metadata["plot_no2"].value == "http://localhost:8000/reports/performance/plots/2025-08-01T11-no2.png"
    assert (monitored_home / "lake" / "reports" / "performance" / "plots" / "2025-08-01T11-no2.png").read_bytes()[:4] == b"\x89PNG"


def test_forecast_performance_scores_the_champion_as_of_each_hour_when_nothing_was_served(monitored_home):
    defs = make_definitions(monitored_home)
    metadata = materialize(defs, "forecast_performance", HOURS[:2]).asset_materializations_for_node("forecast_performance")[-1].metadata
    assert metadata["forecasts_logged"].value == 0
    assert metadata["forecasts_as_of_champion"].value == 2 * len(TEST_SITES) * 4 * len(GATE_LEADS)  # every pollutant at every gate lead
    for pollutant in ("pm25", "no2", "o3"):
        assert np.isfinite(metadata[f"{pollutant}_skill"].value)


def test_reference_sample_is_drawn_after_the_filter():
    with duckdb.connect() as con:
        con.execute("CREATE TABLE silver_features AS SELECT range AS i, CASE WHEN range % 10 = 0 THEN 'no2' ELSE 'o3' END AS pollutant, "
                    "TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_hours(range // 10) AS time FROM range(100000)")
        rows = con.execute(reference_sample_sql(5000), ["no2", datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)]).fetchall()
    assert len(rows) == 5000 and {r[1] for r in rows} == {"no2"}


def test_drift_report_records_each_hour_small_and_readable(monitored_home):
    defs = make_definitions(monitored_home)
    result = materialize(defs, "pm25_drift_report", HOURS[-1:])
    metadata = result.asset_materializations_for_node("pm25_drift_report")[-1].metadata
    with duckdb.connect(str(monitored_home / "warehouse.duckdb"), read_only=True) as con:
        train_start, train_end = "2025-07-08 12:00:00+00", "2025-07-25 12:00:00+00"
        (training_rows,) = con.execute("SELECT count(*) FROM silver_features WHERE pollutant = 'pm25' AND time >= ? AND time < ?", [train_start, train_end]).fetchone()
    assert metadata["reference_rows"].value == training_rows  # fewer than 5000: all of them, none lost to the filter
    assert metadata["current_rows"].value == CURRENT_WINDOW_HOURS * len(TEST_SITES)
    assert metadata["window_hours"].value == CURRENT_WINDOW_HOURS == 24
    assert metadata["method"].value == "wasserstein_distance_norm"
    assert isinstance(metadata["drifted"].value, bool) and metadata["drifted_share"].value == round(metadata["drifted_share"].value, 3)
    distances = [r.data["distance"] for r in metadata["columns"].records if r.data["distance"] is not None]
    assert distances == sorted(distances, reverse=True) and len(distances) == 10
    assert "| feature | distance | threshold | drifted |" in metadata["summary"].value
    folder = monitored_home / "lake" / "reports" / "drift" / "pm25"
    for hour in HOURS[-1:]:
        record = json.loads((folder / f"{hour:%Y-%m-%dT%H}.json").read_text())
        assert record["hour"] == hour.isoformat() and len(record["columns"]) == len(DRIFT_FEATURES)
        assert all({"column", "method", "threshold", "value", "drifted"} <= set(c) for c in record["columns"])
        assert (folder / f"{hour:%Y-%m-%dT%H}.json").stat().st_size < 20_000
    # Evidently's page (MBs) only for an hour that drifted.
    assert len(list(folder.glob("*.html"))) == int(metadata["hours_fired"].value > 0)


def test_interval_calibration_publishes_the_factor_that_would_have_covered_the_scored_forecasts(monitored_home):
    """Scores from forecast_performance, factors beside the online panel: the pooled factor of each
    pollutant is the percentile of how many half-widths of the model's interval each observation
    fell from its forecast that covers 80 % plus what the served intervals fell short of it
    (within 5 points), recomputed here from the stored scores."""
    from routeaq_assets.adapters.stores import interval_factor_store
    from routeaq_assets.core.environment import load_settings
    from routeaq_assets.core.intervals import ALL_SITES

    hours = [datetime(2025, 7, 30, 0, tzinfo=UTC) + timedelta(hours=k) for k in range(36)]
    defs = make_definitions(monitored_home)
    materialize(defs, "forecast_performance", hours)
    metadata = materialize(defs, "interval_calibration", hours[-1:]).asset_materializations_for_node("interval_calibration")[-1].metadata
    published = interval_factor_store(load_settings().online_store_target).read()
    with duckdb.connect(str(monitored_home / "warehouse.duckdb"), read_only=True) as con:
        scores = con.execute(
            "SELECT pollutant, hours_ahead, pred, lower, upper, observed, interval_factor FROM forecast_scores WHERE observed IS NOT NULL AND time <= ?", [hours[-1]]
        ).fetchall()
    assert metadata["forecasts_in_window"].value >= len(scores) > 0
    compared = 0
    for (pollutant, horizon), rows in _group(scores).items():
        pred, lower, upper, observed, served = map(np.array, zip(*rows))
        score = np.maximum((pred - observed) / (pred - lower), (observed - pred) / (upper - pred)) * served  # in the model's half-widths
        level = float(np.clip(0.8 + (0.8 - np.mean((observed >= lower) & (observed <= upper))), 0.75, 0.85))
        pooled = published.filter(
            (published["pollutant"] == pollutant) & (published["hours_ahead"] == horizon) & (published["site_id"] == ALL_SITES) & published["level_low"].is_null()
        )
        if len(rows) < 100:
            assert pooled.is_empty()
            continue
        assert pooled["level"].item() == pytest.approx(level, abs=1e-9)
        assert pooled["factor"].item() == pytest.approx(np.quantile(score, level, method="higher"), rel=1e-9)
        assert metadata[f"factor_{pollutant}_{horizon}h"].value == pytest.approx(pooled["factor"].item(), abs=1e-4)
        assert f"| {pollutant} | {horizon} | {pooled['factor'].item():.3f} | {level:.3f} |" in metadata["pooled_factors"].value
        compared += 1
    assert compared == 4 * len(GATE_LEADS)  # every pollutant at every gate lead


def test_forecasts_scored_as_of_the_champion_carry_the_interval_the_service_serves(monitored_home):
    """Nothing served: the gate leads are forecast as of the champion. Once interval factors are
    published, those forecasts are stored with the interval stretched by them (and the factor), as
    the service would have served it: their coverage is what ``interval_calibration`` answers for."""
    from routeaq_assets.adapters.stores import interval_factor_store
    from routeaq_assets.core.environment import load_settings
    from routeaq_assets.core.intervals import ALL_SITES, FACTORS

    def stored() -> pl.DataFrame:
        with duckdb.connect(str(monitored_home / "warehouse.duckdb"), read_only=True) as con:
            return con.execute(
                "SELECT site_id, time, pollutant, hours_ahead, pred, lower, upper, interval_factor FROM forecast_scores WHERE source = 'as_of_champion'"
            ).pl().sort("site_id", "time", "pollutant", "hours_ahead")

    defs = make_definitions(monitored_home)
    interval_factor_store(load_settings().online_store_target).path.unlink(missing_ok=True)  # none published: the model's interval
    materialize(defs, "forecast_performance", HOURS[:2])
    plain = stored()
    assert plain.height > 0 and (plain["interval_factor"] == 1.0).all()
    factors = pl.DataFrame(
        {"pollutant": "no2", "hours_ahead": list(GATE_LEADS), "site_id": ALL_SITES, "factor": 1.5, "forecasts": 500,
         "as_of": HOURS[0], "level": 0.8, "level_low": None, "level_high": None},
        schema=FACTORS,
    )
    interval_factor_store(load_settings().online_store_target).publish(factors)
    materialize(defs, "forecast_performance", HOURS[:2])
    stretched = stored()
    assert stretched.select("site_id", "time", "pollutant", "hours_ahead", "pred").equals(plain.select("site_id", "time", "pollutant", "hours_ahead", "pred"))
    no2 = (stretched["pollutant"] == "no2").to_numpy()
    assert stretched["interval_factor"].to_numpy()[no2] == pytest.approx(1.5) and (stretched["interval_factor"].to_numpy()[~no2] == 1.0).all()
    pred = plain["pred"].to_numpy()
    assert stretched["upper"].to_numpy()[no2] == pytest.approx(pred[no2] + 1.5 * (plain["upper"].to_numpy()[no2] - pred[no2]))
    assert stretched["lower"].to_numpy()[no2] == pytest.approx(np.clip(pred[no2] + 1.5 * (plain["lower"].to_numpy()[no2] - pred[no2]), 0.0, None))
    assert stretched["upper"].to_numpy()[~no2] == pytest.approx(plain["upper"].to_numpy()[~no2])


def _group(rows: list[tuple]) -> dict[tuple[str, int], list[tuple]]:
    groups: dict[tuple[str, int], list[tuple]] = {}
    for pollutant, horizon, *values in rows:
        groups.setdefault((pollutant, horizon), []).append(tuple(values))
    return groups


def test_daqi_verification_scores_each_days_forecasts_against_the_observed_index(monitored_home):
    """Two UK days of the held-out week: each day's index forecast twice (noon the day before,
    06:00 on the day) for every site, stored beside the observed index, and scored pooled."""
    from datetime import date

    from routeaq_assets.core.daily_daqi import daily_index, uk_day_bounds

    defs = make_definitions(monitored_home)
    days = [date(2025, 7, 30) + timedelta(days=k) for k in range(2)]
    for day in days:
        result = dg.materialize([defs.get_assets_def("daqi_verification")], resources=defs.resources, partition_key=day.isoformat())
    metadata = result.asset_materializations_for_node("daqi_verification")[0].metadata
    with duckdb.connect(str(monitored_home / "warehouse.duckdb"), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        stored = pl.from_arrow(con.execute("SELECT * FROM daqi_forecasts ORDER BY day, issue, site_id").to_arrow_table())
        start, end = uk_day_bounds(days[-1])
        hours = pl.from_arrow(con.execute(
            "SELECT time, pollutant, value AS observed FROM observations WHERE site_id = 'MY1' AND time >= ? AND time < ? AND pollutant IN ('pm25', 'pm10', 'no2', 'o3')",
            [start, end]).to_arrow_table())
    assert stored.height == len(days) * 2 * len(TEST_SITES)  # no day twice, whichever order they ran in
    assert not stored["champion_trained_on_it"].any()
    expected = daily_index(hours.with_columns(pred=pl.lit(None, pl.Float64), lower=pl.lit(None, pl.Float64), upper=pl.lit(None, pl.Float64)), days[-1])
    last = stored.filter((pl.col("day") == days[-1]) & (pl.col("site_id") == "MY1"))
    assert last["observed"].unique().to_list() == [expected.index]
    assert last.filter(pl.col("issue") == "day_before")["persistence"].item() == stored.filter((pl.col("day") == days[-2]) & (pl.col("site_id") == "MY1"))["observed"][0]
    for row in stored.iter_rows(named=True):
        odds = [row[f"p_at_least_{k}"] for k in range(1, 11)]
        assert odds == sorted(odds, reverse=True) and odds[0] == 1.0
    assert metadata["day_before_site_days"].value == metadata["same_day_site_days"].value == len(days) * len(TEST_SITES)
    assert "index >= 4" in metadata["scores"].value and "hit rate" in metadata["scores"].value
    # Too few verified days for the daily errors yet: every day's odds come from the hourly draws.
    assert set(stored["odds_from"]) == {"hourly_intervals"}
    assert (stored.filter(pl.col("issue") == "day_before")["hours_observed"] == 0).all() and (stored.filter(pl.col("issue") == "same_day")["hours_observed"] > 0).all()
    # The errors of the days forecast wholly ahead, published beside the online panel for the service.
    from routeaq_assets.adapters.stores import daily_error_store

    published = daily_error_store(defs.resources["online_store"].target).read().sort("site_id", "day")
    ahead = stored.filter(pl.col("issue") == "day_before").sort("site_id", "day")
    assert published.select("site_id", "day").equals(ahead.select("site_id", "day")) and metadata["daily_errors_site_days"].value == ahead.height
    for p in ("pm25", "no2"):
        expected = (ahead[f"observed_{p}"].log1p() - ahead[f"forecast_{p}"].log1p()).to_numpy()
        assert published[f"error_{p}"].to_numpy() == pytest.approx(expected, nan_ok=True)
