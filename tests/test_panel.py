"""One row per site and hour where the sources meet: stored weather beside forecast weather."""

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from routeaq_assets.core.features import build_features, hourly_panel
from routeaq_assets.core.schema import OBSERVATIONS, TIME, WEATHER, WEATHER_VARIABLES
from routeaq_assets.warehouse import Warehouse

UTC = timezone.utc
START = datetime(2025, 3, 1, tzinfo=UTC)
LATE_HOUR = START + timedelta(hours=60)  # raw_weather stored it; raw_aurn has nothing for it yet
END = LATE_HOUR + timedelta(hours=24)  # the panel runs on into the forecast hours, as the service's does
SITES = ("AAA", "BBB")


def _observations(until: datetime) -> pl.DataFrame:
    """NO2 equal to the hour's index since START, so a lag says which hour it came from."""
    hours = int((until - START) / timedelta(hours=1))
    rows = [
        {"site_id": s, "time": START + timedelta(hours=h), "pollutant": "no2", "value": float(h), "unit": "ugm-3", "status": None,
         "network": "aurn", "source": "t", "ingested_at": START}
        for s in SITES
        for h in range(hours)
    ]
    return pl.DataFrame(rows, schema=OBSERVATIONS)


def _weather(start: datetime, end: datetime, kind: str, temperature: float, ingested_at: datetime) -> pl.DataFrame:
    times = pl.datetime_range(start, end, "1h", closed="left", time_unit="us", time_zone="UTC", eager=True)
    frames = [
        pl.DataFrame({"site_id": s, "time": times}).with_columns(
            *(pl.lit(temperature if v == "temperature_2m" else 1.0).alias(v) for v in WEATHER_VARIABLES),
            pl.lit(kind).alias("kind"),
            pl.lit(f"{kind}-source").alias("source"),
            pl.lit(ingested_at).cast(TIME).alias("ingested_at"),
        )
        for s in SITES
    ]
    return pl.concat(frames).select(list(WEATHER)).cast(WEATHER)


def _sites() -> pl.DataFrame:
    return pl.DataFrame(
        {"site_id": list(SITES), "site_name": ["A", "B"], "location_type": ["Urban Background"] * 2, "location_type_code": [2, 2],
         "latitude": [51.5, 53.4], "longitude": [-0.1, -2.2], "network": ["aurn"] * 2, "pollutant": ["no2"] * 2}
    )


def test_the_late_aurn_hour_gives_one_row_per_site_hour_and_lags_on_the_right_hours(tmp_path):
    """raw_weather stored LATE_HOUR while raw_aurn had no data for it; the service's panel adds the
    forecast weather from LATE_HOUR on. The panel keeps one row per site and hour (the stored
    reanalysis over the forecast) and every lag points at the hour it names."""
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"))
    warehouse.replace_table("observations", _observations(LATE_HOUR))
    warehouse.replace_table("weather", _weather(START, LATE_HOUR + timedelta(hours=1), "reanalysis", 10.0, START))
    warehouse.replace_table("sites", _sites())
    forecast = _weather(LATE_HOUR, END, "forecast", 99.0, START)

    panel = warehouse.stored_panel(START, END, weather_ahead=forecast)

    hours = int((END - START) / timedelta(hours=1))
    assert panel.height == len(SITES) * hours
    assert panel.select("site_id", "time").is_unique().all()
    at = lambda frame, hour: frame.filter((pl.col("site_id") == "AAA") & (pl.col("time") == hour)).row(0, named=True)  # noqa: E731
    assert at(panel, LATE_HOUR)["temperature_2m"] == 10.0  # the stored reanalysis, not the forecast
    assert at(panel, LATE_HOUR + timedelta(hours=1))["temperature_2m"] == 99.0  # only a forecast there

    features = build_features(panel, "no2")
    assert features.select("site_id", "time").is_unique().all()
    late = int((LATE_HOUR - START) / timedelta(hours=1))
    assert at(features, LATE_HOUR)["target_lag_1"] == late - 1
    for k in range(1, 24):  # every hour after the late one: yesterday's same hour, not a row earlier
        assert at(features, LATE_HOUR + timedelta(hours=k))["target_lag_24"] == late + k - 24


def test_the_newest_issue_of_a_forecast_wins():
    hour = START + timedelta(hours=3)
    older = _weather(START, hour, "forecast", 5.0, START)
    newer = _weather(START, hour, "forecast", 7.0, START + timedelta(hours=1))
    panel = hourly_panel(_observations(hour), pl.concat([newer, older]), _sites(), START, hour)
    assert panel["temperature_2m"].to_list() == [7.0] * panel.height
    panel = hourly_panel(_observations(hour), pl.concat([older, newer]), _sites(), START, hour)
    assert panel["temperature_2m"].to_list() == [7.0] * panel.height


def test_a_key_given_twice_fails_naming_it():
    observations = _observations(START + timedelta(hours=4))
    twice = pl.concat([observations, observations.filter(pl.col("time") == START + timedelta(hours=2))])
    weather = _weather(START, START + timedelta(hours=4), "reanalysis", 1.0, START)
    with pytest.raises(ValueError, match=r"observations: 2 keys \(site_id, time, pollutant\) appear more than once, e.g. \('AAA', datetime"):
        hourly_panel(twice, weather, _sites(), START, START + timedelta(hours=4))
    with pytest.raises(ValueError, match=r"site attributes: 1 keys \(site_id\) appear more than once, e.g. \('BBB',\)"):
        hourly_panel(observations, weather, pl.concat([_sites(), _sites().tail(1)]), START, START + timedelta(hours=4))
    with pytest.raises(ValueError, match=r"weather kinds \['nowcast'\] have no precedence"):
        hourly_panel(observations, weather.with_columns(pl.lit("nowcast").alias("kind")), _sites(), START, START + timedelta(hours=4))


# -- stored features follow a re-ingested observation -----------------------------------------

CHANGED_HOUR = START + timedelta(hours=36)


def _write_site_table(folder, no2_at_changed_hour: float) -> None:
    """Three days of MY1 as an openair export; NO2 is the hour's index except at CHANGED_HOUR."""
    import numpy as np

    hours = 72
    times = [START + timedelta(hours=h) for h in range(hours)]
    no2 = np.arange(hours, dtype=float)
    no2[int((CHANGED_HOUR - START) / timedelta(hours=1))] = no2_at_changed_hour
    pl.DataFrame(
        {"date": [t.replace(tzinfo=None) for t in times], "no2": no2, "pm2.5": np.full(hours, 8.0), "o3": np.full(hours, 40.0),
         "ws": np.full(hours, 3.0), "wd": np.full(hours, 200.0), "air_temp": np.full(hours, 9.0)}
    ).write_csv(folder / "MY1_2025.csv")


class MY1Home:
    """A home fed three days of MY1 from an openair export (``_write_site_table``), ingested and
    featurised; ``materialize`` runs assets over a range of hourly partitions."""

    def __init__(self, home, tmp_path):
        import dagster as dg

        from conftest import make_definitions
        from routeaq_assets.observation_sources import LocalObservations
        from routeaq_assets.weather_sources import LocalWeather

        self.folder = tmp_path / "tables"
        self.folder.mkdir()
        _write_site_table(self.folder, no2_at_changed_hour=36.0)
        local = {"observations": LocalObservations(folder=str(self.folder)), "weather": LocalWeather(folder=str(self.folder))}
        self.defs = make_definitions(home, **local)
        self.instance = dg.DagsterInstance.ephemeral()
        assert dg.materialize([self.defs.get_assets_def("site_registry")], resources=self.defs.resources, instance=self.instance,
                              run_config={"ops": {"site_registry": {"config": {"sites": ["MY1"]}}}}).success
        self.materialize(["raw_aurn", "raw_weather", "silver_features"], START, START + timedelta(hours=71))

    def materialize(self, selection: list[str], first: datetime, last: datetime, resources: dict | None = None):
        import dagster as dg

        from conftest import partition_key

        tags = {"dagster/asset_partition_range_start": partition_key(first), "dagster/asset_partition_range_end": partition_key(last)}
        assets = [self.defs.get_assets_def(key) for key in selection]
        result = dg.materialize(assets, resources=resources or self.defs.resources, instance=self.instance, tags=tags, selection=selection)
        assert result.success
        return result


def test_re_ingesting_one_hour_rebuilds_the_stored_features_that_read_it(home, tmp_path):
    my1 = MY1Home(home, tmp_path)
    folder, materialize = my1.folder, my1.materialize

    _write_site_table(folder, no2_at_changed_hour=500.0)  # the source restates one hour
    materialize(["raw_aurn", "silver_features"], CHANGED_HOUR, CHANGED_HOUR)  # only that hour is re-ingested

    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    stored = lambda pollutant, hour, column: warehouse.query(  # noqa: E731
        f"SELECT {column} FROM silver_features WHERE site_id = 'MY1' AND pollutant = ? AND time = ?", [pollutant, hour]
    )[column].to_list()
    assert stored("no2", CHANGED_HOUR, "target") == [500.0]
    assert stored("no2", CHANGED_HOUR + timedelta(hours=1), "target_lag_1") == [500.0]
    assert stored("no2", CHANGED_HOUR + timedelta(hours=24), "target_lag_24") == [500.0]
    assert stored("pm25", CHANGED_HOUR + timedelta(hours=1), "no2_lag_1") == [500.0]
    assert stored("no2", CHANGED_HOUR + timedelta(hours=2), "target_lag_1") == [float((CHANGED_HOUR - START) / timedelta(hours=1)) + 1]
    rows = warehouse.query("SELECT count(*) AS n, count(DISTINCT (site_id, time, pollutant)) AS keys FROM silver_features").row(0)
    assert rows == (72 * 4, 72 * 4)


SLIPPED_IN = {"writes": 0}


class RacedWarehouse(Warehouse):
    """The embedded warehouse with another run's write slipped in once, between this run's read of
    the panel and its write of the features: CHANGED_HOUR's NO2 at MY1 restated as 500. It is the
    interleaving of runs that write neighbouring partitions at once (production's lake lets them)."""

    def panel_with_lookback(self, start: datetime, end: datetime) -> pl.DataFrame:
        panel = super().panel_with_lookback(start, end)
        if SLIPPED_IN["writes"] == 0:
            SLIPPED_IN["writes"] += 1
            hour = self.query("SELECT * FROM observations WHERE site_id = 'MY1' AND time = ?", [CHANGED_HOUR])
            restated = hour.with_columns(
                pl.when(pl.col("pollutant") == "no2").then(500.0).otherwise(pl.col("value")).alias("value"),
                pl.lit(datetime.now(UTC)).cast(TIME).alias("ingested_at"),
            )
            self.replace_window("observations", restated, CHANGED_HOUR, CHANGED_HOUR + timedelta(hours=1), site_ids=["MY1"])
        return panel


def test_features_built_while_another_run_replaces_their_observations_are_built_again(home, tmp_path):
    my1 = MY1Home(home, tmp_path)
    # The last day's features are built again; CHANGED_HOUR (in their lookback) is restated mid-build.
    SLIPPED_IN["writes"] = 0
    raced = {**my1.defs.resources, "warehouse": RacedWarehouse(path=str(home / "warehouse.duckdb"))}
    result = my1.materialize(["silver_features"], START + timedelta(hours=48), START + timedelta(hours=71), raced)
    assert SLIPPED_IN["writes"] == 1

    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    lag_24 = warehouse.query(
        "SELECT target_lag_24 FROM silver_features WHERE site_id = 'MY1' AND pollutant = 'no2' AND time = ?", [CHANGED_HOUR + timedelta(hours=24)]
    )["target_lag_24"].to_list()
    assert lag_24 == [500.0]  # built from the observation as stored now, not as read before the other write
    assert result.asset_materializations_for_node("silver_features")[-1].metadata["builds"].value == 2
