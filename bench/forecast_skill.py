"""Forecast skill and training speed on the demo network.

    python bench/forecast_skill.py [--sites 6] [--year 2024] [--train-sites 50]

1. Backtest: the demo network's sites over one year, rolling-origin folds of 30 days over the
   last four months, every pollutant; prints the metrics table (persistence beside the model).
2. Training speed: one pollutant, one year of ``--train-sites`` sites, the production settings.
Figures go in bench/RESULTS.md with the command, machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from routeaq_assets.core.backtest import format_table, metrics_table, rolling_origin_backtest
from routeaq_assets.core.environment import DEFAULT_DEMO_SITES
from routeaq_assets.core.features import build_features, hourly_panel
from routeaq_assets.core.models import train_forecaster
from routeaq_assets.core.sites import load_packaged_registry, site_attributes
from routeaq_assets.sources.demo_network import DemoNetwork, DemoSite
from routeaq_assets.sources.openair import openair_to_observations, read_rdata_table
from routeaq_assets.sources.openmeteo import openmeteo_to_weather


def demo_panel(site_ids: tuple[str, ...], year: int, root: Path) -> pl.DataFrame:
    attrs = site_attributes(load_packaged_registry(site_ids))
    network = DemoNetwork(root, [DemoSite(r["site_id"], r["site_name"], r["location_type"], r["latitude"], r["longitude"]) for r in attrs.iter_rows(named=True)])
    observations, weather = [], []
    for site in site_ids:
        network.ensure_site_year(site, year)
        observations.append(openair_to_observations(read_rdata_table(network.openair_path(site, year)), site_id=site, network="aurn", source="bench"))
        weather.append(openmeteo_to_weather(json.loads(network.weather_path(site, year).read_text()), site_id=site, kind="reanalysis", source="bench"))
    start, end = datetime(year, 1, 1, tzinfo=timezone.utc), datetime(year + 1, 1, 1, tzinfo=timezone.utc)
    return hourly_panel(pl.concat(observations), pl.concat(weather), attrs, start, end)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=6)
    parser.add_argument("--year", type=int, default=2024)
    parser.add_argument("--train-sites", type=int, default=50)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sites = DEFAULT_DEMO_SITES[: args.sites]
        panel = demo_panel(sites, args.year, root)
        predictions = pl.concat(
            [rolling_origin_backtest(build_features(panel, p), folds=4, test_days=30) for p in ("pm25", "no2", "o3")]
        )
        print(f"\nBacktest: demo network, {len(sites)} sites, {args.year}, 4 rolling-origin folds of 30 days, 1 h ahead\n")
        print(format_table(metrics_table(predictions)))

        measured = load_packaged_registry().filter((pl.col("pollutant") == "pm25") & pl.col("end_date").is_null())
        many = tuple(sorted(measured["site_id"].unique())[: args.train_sites])
        started = time.perf_counter()
        big = demo_panel(many, args.year, root)
        features = build_features(big, "pm25")
        prepared = time.perf_counter() - started
        started = time.perf_counter()
        forecaster = train_forecaster(features)
        trained = time.perf_counter() - started
        rows = features["target"].drop_nulls().len()
        print(f"\nTraining pm25 on {len(many)} sites x {args.year}: {rows:,} rows with a target, "
              f"{len(forecaster.feature_names)} features, {forecaster.params['num_boost_round']} rounds: "
              f"{trained:.1f} s to train (plus {prepared:.1f} s to simulate, parse and build features)")


if __name__ == "__main__":
    main()
