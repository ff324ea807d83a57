"""Assets through Dagster: materialize on small real-format data, idempotency, atomic failure,
the promotion gate."""

import shutil
from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl
import duckdb
import pytest

from conftest import FIXTURES, TRAIN_CONFIG, WINDOW_END, copy_home, make_definitions, partition_key, register_candidate, run_pipeline
from routeaq_assets.adapters.registry import ForecastRegistry
from routeaq_assets.core.environment import load_settings
from routeaq_assets.observation_sources import OpenairObservations, UkairObservations

UTC = timezone.utc


def count(home, sql: str) -> int:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchone()[0]


def materialize_range(defs, selection, start: datetime, end: datetime, instance=None, raise_on_error=True, run_config=None):
    return dg.materialize(
        [defs.get_assets_def(key) for key in selection],
        resources=defs.resources,
        instance=instance or dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": partition_key(start), "dagster/asset_partition_range_end": partition_key(end - timedelta(hours=1))},
        raise_on_error=raise_on_error,
        run_config=run_config,
    )


def test_definitions_resolve_every_job_and_asset(home):
    defs = make_definitions(home)
    repository = defs.get_repository_def()
    assert {"ingest_job", "train_job", "publish_job"} <= {job.name for job in repository.get_all_jobs()}
    assert {s.name for s in repository.schedule_defs} == {"ingest_job_schedule", "publish_schedule", "ratify_schedule", "monitoring_schedule", "daily_verification_schedule", "lake_maintenance_schedule"}
    assert {s.name for s in repository.sensor_defs} == {"retraining_policy", "monitoring_alerts", "platform_metrics", "subscription_alerts_sensor"}
    keys = {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()}
    assert {"raw_aurn", "raw_weather", "silver_features", "pm25_candidate", "pm25_champion", "online_features", "pm25_drift_report", "forecast_performance", "pm10_champion", "daqi_verification", "subscription_alerts", "lake_maintenance"} <= keys


def test_ingest_twice_leaves_the_same_rows(home):
    end = WINDOW_END
    start = end - timedelta(days=2)
    run_pipeline(home, start, end, train=False)
    first = [count(home, f"SELECT count(*) FROM {t}") for t in ("observations", "weather", "silver_features")]
    run_pipeline(home, start, end, train=False)
    assert [count(home, f"SELECT count(*) FROM {t}") for t in ("observations", "weather", "silver_features")] == first
    assert first[0] == 2 * 24 * 3 * 5  # hours x sites x pollutants measured (pm25, pm10, no2, o3, nox)
    assert count(home, "SELECT count(*) FROM (SELECT site_id, time, pollutant FROM silver_features GROUP BY ALL HAVING count(*) > 1)") == 0


def test_corrupt_source_file_fails_the_partition_and_keeps_stored_rows(home):
    end = WINDOW_END
    start = end - timedelta(days=1)
    defs = run_pipeline(home, start, end, train=False)
    before = count(home, "SELECT sum(hash(site_id, time, pollutant, value)) FROM observations")
    damaged = home / "demo_network" / "openair" / "MY1_2025.RData"
    damaged.write_bytes(damaged.read_bytes()[:4000])
    result = materialize_range(defs, ["raw_aurn"], start, end, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "site MY1, year 2025" in message and "not a readable RData file" in message
    assert count(home, "SELECT sum(hash(site_id, time, pollutant, value)) FROM observations") == before


def test_raw_aurn_from_an_http_server_serving_real_openair_files(home, httpserver):
    """Real ABD and AH 2017 files over HTTP: values land on the published hour, NaN stays null."""
    httpserver.expect_request("/R_data/ABD_2017.RData").respond_with_data((FIXTURES / "ABD_2017.RData").read_bytes())
    httpserver.expect_request("/R_data/AH_2017.RData").respond_with_data((FIXTURES / "AH_2017.RData").read_bytes())
    httpserver.expect_request("/R_data/AURN_metadata.RData").respond_with_data((FIXTURES / "AURN_metadata.RData").read_bytes())
    source = OpenairObservations(folder=str(home / "sources"), base_url=httpserver.url_for("/R_data/"))
    defs = make_definitions(home, observations=source)
    sites = {"ops": {"site_registry": {"config": {"sites": ["ABD", "AH"]}}}}
    assert dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, run_config=sites).success
    start, end = datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 1, 8, tzinfo=UTC)
    assert materialize_range(defs, ["raw_aurn"], start, end).success
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        value = lambda site, hour, p: con.execute(  # noqa: E731
            "SELECT value FROM observations WHERE site_id = ? AND time = ? AND pollutant = ?", [site, hour, p]
        ).fetchall()
        assert value("ABD", datetime(2017, 1, 1, 0, tzinfo=UTC), "pm25") == [(pytest.approx(9.9),)]
        assert value("ABD", datetime(2017, 1, 1, 1, tzinfo=UTC), "no2") == [(pytest.approx(5.31739),)]
        assert value("AH", datetime(2017, 1, 1, 0, tzinfo=UTC), "pm25") == []  # AH does not measure PM2.5
        (sites_seen,) = con.execute("SELECT count(DISTINCT site_id) FROM observations").fetchone()
        assert sites_seen == 2
        assert value("ABD", datetime(2017, 1, 6, 14, tzinfo=UTC), "pm25") == [(None,)]  # NaN in the file: null
        (nans,) = con.execute("SELECT count(*) FROM observations WHERE isnan(value)").fetchone()
        assert nans == 0


def test_failing_source_mid_backfill_names_site_year_and_cause_and_keeps_earlier_partitions(home, httpserver):
    httpserver.expect_request("/R_data/ABD_2017.RData").respond_with_data((FIXTURES / "ABD_2017.RData").read_bytes())
    httpserver.expect_request("/R_data/ABD_2018.RData").respond_with_data("upstream down", status=500)
    httpserver.expect_request("/R_data/AURN_metadata.RData").respond_with_data((FIXTURES / "AURN_metadata.RData").read_bytes())
    source = OpenairObservations(folder=str(home / "sources"), base_url=httpserver.url_for("/R_data/"), timeout_s=5, retries_when_down=1, retry_wait_s=0
    )
    defs = make_definitions(home, observations=source)
    assert dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, run_config={"ops": {"site_registry": {"config": {"sites": ["ABD"]}}}}).success
    assert materialize_range(defs, ["raw_aurn"], datetime(2017, 12, 30, tzinfo=UTC), datetime(2018, 1, 1, tzinfo=UTC)).success
    stored = count(home, "SELECT count(*) FROM observations")
    result = materialize_range(defs, ["raw_aurn"], datetime(2017, 12, 31, tzinfo=UTC), datetime(2018, 1, 2, tzinfo=UTC), raise_on_error=False)
    assert not result.success
    message = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error.message
    assert "site ABD, year 2018" in message and "HTTP 500" in message
    # A source that is down is asked again (once here) before the partition fails.
    assert sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events) == 1
    assert count(home, "SELECT count(*) FROM observations") == stored


def test_training_promotes_a_champion_that_beats_persistence(trained_home, monkeypatch):
    monkeypatch.setenv("ROUTEAQ_HOME", str(trained_home))
    registry = ForecastRegistry(load_settings().mlflow_tracking_uri)
    for pollutant in ("pm25", "pm10", "no2", "o3"):
        champion = registry.load(f"routeaq-{pollutant}")
        assert champion is not None
        for metrics in champion.metadata["holdout_metrics"].values():  # every gate lead
            assert metrics["model_rmse"] < metrics["persistence_rmse"]
        assert set(champion.forecaster.direct) == {1} and champion.metadata["direct_leads"] == [1]  # the one-hour booster came back from the registry
        tags = registry.client.get_model_version(f"routeaq-{pollutant}", champion.version).tags
        assert tags["promotion"] == "promoted"


def test_a_degraded_challenger_is_blocked_and_the_champion_stays(trained_home, tmp_path, monkeypatch):
    home = copy_home(trained_home, tmp_path)
    monkeypatch.setenv("ROUTEAQ_HOME", str(home))
    defs = make_definitions(home)
    registry = ForecastRegistry(load_settings().mlflow_tracking_uri)
    assert registry.champion_version("routeaq-pm25") == "1"
    # Corrupt the training hours (not the held-out week): the next candidate learns noise. The
    # candidate builds its rows of every lead from the stored observations.
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute("SELECT setseed(0.5)")
        con.execute("UPDATE observations SET value = 300 * random() WHERE pollutant = 'pm25' AND time < ?", [WINDOW_END - timedelta(days=8)])
    result = dg.materialize(
        [defs.get_assets_def(k) for k in ("pm25_candidate", "pm25_champion")] + [*defs.asset_checks],
        selection=["pm25_candidate", "pm25_champion"],
        resources=defs.resources,
        raise_on_error=False,
    )
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "beats_persistence")
    assert not check.passed and "does not beat persistence" in check.description
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "pm25_candidate" in materialized and "pm25_champion" not in materialized
    assert registry.champion_version("routeaq-pm25") == "1"
    assert registry.client.get_model_version("routeaq-pm25", "2").tags.get("promotion") is None


def test_a_challenger_no_better_than_the_champion_is_not_promoted(trained_home, tmp_path, monkeypatch):
    home = copy_home(trained_home, tmp_path)  # the refusal is recorded on the candidate's version
    monkeypatch.setenv("ROUTEAQ_HOME", str(home))
    defs = make_definitions(home)
    registry = ForecastRegistry(load_settings().mlflow_tracking_uri)
    before = registry.champion_version("routeaq-no2")
    instance = dg.DagsterInstance.ephemeral()
    version = register_candidate(defs, instance, "no2", {
        "champion_version": before, "champion_refused": None, "interval_coverage": 0.8,
        "by_lead": {str(h): {"model_rmse": 5.0, "persistence_rmse": 8.0, "champion_rmse": 4.0, "skill_vs_persistence": 0.375} for h in (1, 24)},
        "config": {"coverage": 0.8, "coverage_tolerance": 0.05, "margin": 0.01},
    })
    result = dg.materialize([defs.get_assets_def("no2_champion")], resources=defs.resources, instance=instance)
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("no2_champion")[0].metadata.items()}
    assert metadata["promoted"] is False and metadata["candidate_version"] == version and metadata["champion_version"] == before
    assert "RMSE is 125.0% of the champion's over 1, 24 h ahead" in metadata["reason"]
    assert registry.champion_version("routeaq-no2") == before
    assert registry.client.get_model_version("routeaq-no2", version).tags["promotion"] == "rejected"


def test_no_asset_or_check_takes_a_python_object_from_another(home):
    """Assets hand over through the warehouse, the lake and MLflow, never through an IO manager
    (the run's local disk, a pod's in production): every input of every asset and check is Nothing."""
    defs = make_definitions(home)
    inputs = {(node.op.name, name): i.dagster_type.display_name for node in [*defs.assets, *defs.asset_checks] for name, i in node.op.ins.items()}
    assert ("no2_champion", "no2_candidate") in inputs  # a dependency, read from MLflow
    assert {k: t for k, t in inputs.items() if t != "Nothing"} == {}


def test_a_run_decides_on_its_own_candidate_and_a_champion_alone_on_the_latest():
    """Another run's newer candidate does not replace this run's; a run without one takes the latest."""
    from routeaq_assets.defs.training import candidate_materialization

    @dg.asset(name="no2_candidate")
    def stand_in() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"model_name": "routeaq-no2", "model_version": "1"})

    @dg.asset(name="no2_champion", deps=[stand_in])
    def champion_alone() -> dg.MaterializeResult:
        return dg.MaterializeResult()

    instance = dg.DagsterInstance.ephemeral()
    own = dg.materialize([stand_in], instance=instance).run_id
    instance.report_runless_asset_event(dg.AssetMaterialization("no2_candidate", metadata={"model_name": "routeaq-no2", "model_version": "2"}))
    alone = dg.materialize([champion_alone], instance=instance).run_id
    version = lambda run_id: candidate_materialization(instance, dg.AssetKey("no2_candidate"), run_id).asset_materialization.metadata["model_version"].value  # noqa: E731
    assert (version(own), version(alone)) == ("1", "2")


def test_the_champion_decides_again_alone_from_the_candidate_in_mlflow(trained_home, tmp_path, monkeypatch):
    """Train NO2 once (nothing lands in the IO manager's folder), then, with that folder gone (a new
    pod), materialize ``no2_champion`` alone in a new run: it reads the version the candidate
    registered from MLflow and makes the same decision."""
    home = copy_home(trained_home, tmp_path)
    monkeypatch.setenv("ROUTEAQ_HOME", str(home))
    defs = make_definitions(home)
    registry = defs.resources["model_store"].registry()
    before = registry.champion_version("routeaq-no2")
    (tmp_path / "instance").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "instance"))
    storage = tmp_path / "instance" / "storage"  # where the default IO manager keeps its pickles
    training = [defs.get_assets_def(k) for k in ("no2_candidate", "no2_champion")] + [*defs.asset_checks]
    trained = dg.materialize(training, selection=["no2_candidate", "no2_champion"], resources=defs.resources, instance=instance,
                             run_config={"ops": {"no2_candidate": TRAIN_CONFIG["ops"]["no2_candidate"]}})
    assert [e.passed for e in trained.get_asset_check_evaluations()] == [True]
    assert not (storage / "no2_candidate").exists() and not (storage / "no2_champion").exists()
    shutil.rmtree(storage, ignore_errors=True)

    alone = dg.materialize([defs.get_assets_def("no2_champion")], resources=defs.resources, instance=instance)
    assert {e.asset_key.to_user_string() for e in alone.get_asset_materialization_events()} == {"no2_champion"}
    first, again = ({k: v.value for k, v in r.asset_materializations_for_node("no2_champion")[0].metadata.items()} for r in (trained, alone))
    version = trained.asset_materializations_for_node("no2_candidate")[0].metadata["model_version"].value
    assert again == first and again["candidate_version"] == version != before
    # The same data and settings train the same booster: no better than the champion by the margin.
    assert first["promoted"] is False and "RMSE is 100.0% of the champion's" in first["reason"]
    assert registry.champion_version("routeaq-no2") == before == again["champion_version"]
    assert registry.client.get_model_version("routeaq-no2", version).tags["promotion"] == "rejected"


def test_site_registry_from_the_networks_published_metadata_file(home, httpserver):
    httpserver.expect_request("/R_data/AURN_metadata.RData").respond_with_data((FIXTURES / "AURN_metadata.RData").read_bytes())
    source = OpenairObservations(folder=str(home / "sources"), base_url=httpserver.url_for("/R_data/"))
    defs = make_definitions(home, observations=source)
    config = {"ops": {"site_registry": {"config": {"sites": ["ABD", "AH"]}}}}
    assert dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, run_config=config).success
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        measured = dict(con.execute("SELECT site_id, list(DISTINCT pollutant ORDER BY pollutant) FROM sites GROUP BY site_id").fetchall())
    assert measured == {"ABD": ["no2", "nox", "o3", "pm10", "pm25"], "AH": ["no2", "nox", "o3"]}
    bad = {"ops": {"site_registry": {"config": {"sites": ["ABD", "NOPE1"]}}}}
    result = dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, run_config=bad, raise_on_error=False)
    message = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error.message
    assert "['NOPE1'] are not in the aurn metadata" in message


def test_ratified_values_replace_provisional_ones_and_are_counted(home, httpserver):
    """UK-AIR CSV for two sites, first provisional, then ratified with one corrected value: the
    same rows, hour-ending times on the right hour, and the changes counted."""
    from routeaq_assets.sources.openair import openair_to_observations, read_rdata_table
    from routeaq_assets.sources.ukair_csv import format_ukair_csv

    def first_day(site):
        obs = openair_to_observations(read_rdata_table(FIXTURES / f"{site}_2017.RData"), site_id=site, network="aurn", source="t")
        return obs.filter((pl.col("time") < datetime(2017, 1, 2, tzinfo=UTC)) & pl.col("pollutant").is_in(["no2", "pm25", "o3"]))

    abd, ah = first_day("ABD"), first_day("AH")
    corrected = abd.with_columns(
        pl.when((pl.col("time") == datetime(2017, 1, 1, 5, tzinfo=UTC)) & (pl.col("pollutant") == "no2")).then(99.0).otherwise(pl.col("value")).alias("value")
    )
    httpserver.expect_request("/site_data/AH_2017.csv").respond_with_data(format_ukair_csv("Aston Hill", ah, status="R"))
    source = UkairObservations(folder=str(home / "sources"), base_url=httpserver.url_for("/site_data/"))
    defs = make_definitions(home, observations=source)
    assert dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, run_config={"ops": {"site_registry": {"config": {"sites": ["ABD", "AH"]}}}}).success
    start, end = datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 1, 2, tzinfo=UTC)
    changes = []
    for text in (format_ukair_csv("Aberdeen", abd, status="P"), format_ukair_csv("Aberdeen", corrected, status="R")):
        httpserver.expect_request("/site_data/ABD_2017.csv").respond_with_data(text)
        result = materialize_range(defs, ["raw_aurn"], start, end)
        changes.append(result.asset_materializations_for_node("raw_aurn")[0].metadata["rows_changed"].value)
        httpserver.handlers.pop()  # the next answer for ABD replaces this one
    assert changes == [0, 72]  # every ABD status P -> R; the corrected value is one of those rows
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        assert con.execute("SELECT site_id, count(*), count(*) FILTER (status = 'R') FROM observations GROUP BY ALL ORDER BY 1").fetchall() == [("ABD", 72, 72), ("AH", 48, 48)]
        value = lambda site, hour, p: con.execute("SELECT value FROM observations WHERE site_id = ? AND time = ? AND pollutant = ?", [site, hour, p]).fetchone()  # noqa: E731
        assert value("ABD", datetime(2017, 1, 1, 5, tzinfo=UTC), "no2") == (99.0,)
        assert value("AH", datetime(2017, 1, 1, 0, tzinfo=UTC), "o3") == (pytest.approx(ah.filter((pl.col("time") == start) & (pl.col("pollutant") == "o3"))["value"][0]),)
        assert value("ABD", datetime(2017, 1, 1, 23, tzinfo=UTC), "pm25") == (pytest.approx(abd.filter((pl.col("time") == datetime(2017, 1, 1, 23, tzinfo=UTC)) & (pl.col("pollutant") == "pm25"))["value"][0]),)


def test_one_candidate_forecasts_every_hour_to_48_ahead_and_is_gated_at_each_lead(trained_home):
    """The training job registers one model per pollutant that serves leads 1 to 48; the gate
    scores it at every lead of GATE_LEADS on the same held-out hours, beside persistence."""
    from routeaq_assets.core.models import GATE_LEADS

    registry = ForecastRegistry(f"sqlite:///{trained_home / 'mlflow' / 'mlflow.db'}")
    champion = registry.load("routeaq-no2")
    assert champion.forecaster.max_hours_ahead == 48 and champion.metadata["max_hours_ahead"] == 48
    held_out = champion.metadata["holdout_metrics"]
    assert sorted(int(h) for h in held_out) == list(GATE_LEADS)
    for h, m in held_out.items():
        assert m["model_rmse"] < m["persistence_rmse"], h
    persistence = [held_out[str(h)]["persistence_rmse"] for h in (1, 6)]
    assert persistence[1] > persistence[0]  # the value six hours old is a worse forecast than the newest
    assert not [m.name for m in registry.client.search_registered_models() if m.name.endswith("h")]  # no model per horizon

