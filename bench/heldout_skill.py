"""NO2 skill on real hourly UK data the model was not developed on.

    python bench/heldout_skill.py [--folds 8] [--test-days 91] [--horizons 1] [--weather forecast,reanalysis]

The data is AQEval's example set ``aq.data`` (Ropkins et al., the AQEval R package), shipped in
its Python port ``aqeval`` 0.7.3 on PyPI: hourly NO2 at a UK monitoring site and at a nearby
background site, with the site's wind and temperature, 2001 to 2003. The wheel is fetched from
PyPI and checked against its published hash, the table is written as a folder of openair-format
CSV files (``LOCAL`` and ``BG``, one file per site) and evaluated by ``routeaq_assets.evaluate``:
the command, Dagster asset and local-file source a user runs on their own data.

Default folds: eight quarters (2002 and 2003), each forecast by a model trained as the candidate
is (the year before the quarter, the same rounds and interval calibration). ``--horizons 1,3,6,12,24`` repeats the
evaluation for direct forecasts further ahead. ``--weather`` chooses the weather: ``forecast``
(the default: these files hold no forecast, so each forecast sees the weather at its origin, the
stand-in) and/or ``reanalysis`` (the weather that happened at the forecast hour: the upper bound).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import polars as pl

from routeaq_assets.core.environment import load_settings
from routeaq_assets.evaluate import main as evaluate

WHEEL = "aqeval-0.7.3-py3-none-any.whl"
WHEEL_SHA256 = "e2b94147a84aa99df219607c60e11146c97aac37aebd3cf6a9cbbcefc8df8020"
MEMBER = "aqeval/data/aq_data.csv.gz"
# aq.data column -> the site file it becomes (openair names: no2, ws, wd, air_temp)
SITES = {"LOCAL": "no2", "BG": "bg.no2"}


def fetch_wheel(cache: Path) -> Path:
    path = cache / WHEEL
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "aqeval==0.7.3", "-d", str(cache)],
            check=True,
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        path.unlink()
        raise SystemExit(f"{WHEEL}: sha256 {digest} is not the published {WHEEL_SHA256}; deleted, run again")
    return path


def write_openair_folder(wheel: Path, folder: Path) -> Path:
    """One openair-format CSV per site: date (GMT, hour beginning), no2 and the local met."""
    with zipfile.ZipFile(wheel) as archive:
        table = pl.read_csv(io.BytesIO(gzip.decompress(archive.read(MEMBER))), infer_schema_length=None)
    folder.mkdir(parents=True, exist_ok=True)
    for site, column in SITES.items():
        table.select("date", pl.col(column).alias("no2"), "ws", "wd", "air_temp").write_csv(folder / f"{site}_2001-2003.csv")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=8)
    parser.add_argument("--test-days", type=int, default=91)
    parser.add_argument("--horizons", default="1", help="comma-separated hours ahead, e.g. 1,6,24")
    parser.add_argument("--weather", default="forecast", help="comma-separated: forecast (the service's), reanalysis (upper bound)")
    args = parser.parse_args()
    home = load_settings().home
    folder = write_openair_folder(fetch_wheel(home / "cache" / "aqeval"), home / "heldout" / "aqeval")
    for weather in args.weather.split(","):
        for horizon in args.horizons.split(","):
            evaluate([
                str(folder), "--pollutants", "no2", "--folds", str(args.folds), "--test-days", str(args.test_days),
                "--horizon", horizon.strip(), "--weather", weather.strip(),
            ])


if __name__ == "__main__":
    main()
