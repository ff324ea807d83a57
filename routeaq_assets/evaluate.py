"""Evaluate RouteAQ on data you bring: a folder of openair-format tables.

    python -m routeaq_assets.evaluate FOLDER [--pollutants no2,o3,pm25,pm10] [--folds 4] [--test-days 0] [--horizon 1] [--daily]
                                             [--weather forecast|reanalysis]
    make evaluate DATA=FOLDER

The weather is the service's by default: files hold what happened, not what was forecast, so
each forecast sees the weather at its origin (t - h) as the stand-in for a weather forecast;
``--weather reanalysis`` shows the upper bound with the weather that happened at t.

Runs the ``local_data_backtest`` asset through Dagster's CLI (the local-file source, the feature
code and the rolling-origin backtest the platform uses) and prints its metrics table. The table,
plots and an MLflow run are kept under ``$ROUTEAQ_HOME`` (the CLI prints where).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from routeaq_assets.core.features import WEATHER_BASES, check_horizon
from routeaq_assets.demo import prepare_instance, run_logged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of openair-format tables (.RData, .csv, .parquet)")
    parser.add_argument("--pollutants", default="no2,o3,pm25,pm10", help="comma-separated: pm25, pm10, no2, o3")
    parser.add_argument("--folds", type=int, default=4, help="rolling-origin folds (default 4)")
    parser.add_argument("--test-days", type=int, default=0, help="days per fold; 0 = the folds cover the second half of the data")
    parser.add_argument("--horizon", type=int, default=1, help="hours ahead, 1 to 48 (default 1)")
    parser.add_argument("--daily", action="store_true", help="also score the daily index of each UK day of the folds, issued the day before and on the day")
    parser.add_argument(
        "--weather", choices=WEATHER_BASES, default="forecast",
        help="forecast (default): the weather the service would have had; reanalysis: what happened (an upper bound)",
    )
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    try:
        check_horizon(args.horizon)
    except ValueError as exc:
        parser.error(f"--horizon: {exc}")
    home = prepare_instance()
    config = {
        "ops": {
            "local_data_backtest": {
                "config": {
                    "folder": str(args.folder.resolve()),
                    "pollutants": [p.strip() for p in args.pollutants.split(",") if p.strip()],
                    "folds": args.folds,
                    "test_days": args.test_days,
                    "horizon": args.horizon,
                    "weather": args.weather,
                    "daily": args.daily,
                }
            }
        }
    }
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    config_path = logs / f"evaluate-{stamp}.yaml"
    config_path.write_text(json.dumps(config))  # JSON is valid YAML
    print(f"Evaluating on {args.folder} (log {logs / f'evaluate-{stamp}.log'})", flush=True)
    # Run config needs the Dagster CLI (workspace_run takes none); the UI runs the asset with the
    # same config from its launchpad.
    cli = ["asset", "materialize", "--select", "local_data_backtest", "-c", str(config_path), "-m", "routeaq_assets.definitions"]
    run_logged([str(Path(sys.executable).parent / "dagster"), *cli], "dagster " + " ".join(cli[:6]), logs / f"evaluate-{stamp}.log")
    reports = sorted((home / "lake" / "reports" / "local_data_backtest").glob("*/metrics.txt"))
    if not reports:
        sys.exit("the backtest finished but wrote no metrics table")
    weather = reports[-1].parent / "weather.txt"
    print(
        f"\n{args.horizon} h ahead forecasts, rolling-origin folds; persistence = value at t-{args.horizon}, "
        f"yesterday = the same hour {'yesterday' if args.horizon <= 24 else 'two days before'} (the newest day seen)"
    )
    print(f"Weather: {weather.read_text() if weather.exists() else 'not recorded'}\n")
    print(reports[-1].read_text())
    coverage = reports[-1].parent / "coverage.txt"
    if coverage.exists():
        print(f"\nInterval coverage by site and on the top decile of observed values:\n\n{coverage.read_text()}")
    daily = reports[-1].parent / "daily.md"
    if daily.exists():
        print(f"\nDaily index (UK days), forecast as served and scored against the observed index:\n\n{daily.read_text()}")
    print(f"\nTables and plots: {reports[-1].parent}")


if __name__ == "__main__":
    main()
