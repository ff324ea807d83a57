"""The page's answers at 150 sites: size (whole and gzip) and latency of ``/api/sites``,
``/api/sites/{id}``, ``/api/nearest`` and ``/api/best-time`` from a real ``bentoml serve``.

    make demo && python bench/page.py [--sites 150] [--requests 200]

The 150 sites are real AURN sites (the packaged metadata's sites open in the demo's year, with
their names, types and coordinates), each carrying the hours of one of the demo's trained sites
times its own factor (0.6 to 1.4), so no two answer the same and gzip gets no free repeats. The
models are the demo's champions. One client asks one request at a time; the times are from the
request's start to its last byte, gzip accepted, as a browser asks. The first answer of
``/api/sites`` after the service starts is built while the service starts (``page_data.warm``),
so it is measured as the start-up's cost, apart.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import BIN, REPO, free_port, wait_for  # noqa: E402

from routeaq_assets.core.sites import load_packaged_registry  # noqa: E402


def scaled_panel(home: Path, count: int, seed: int = 7) -> tuple[pl.DataFrame, list[str]]:
    """``count`` real AURN sites open in the panel's year, each with a demo site's hours times a factor."""
    panel = pl.read_parquet(home / "online" / "features.parquet")
    year = panel["time"].max().year
    registry = load_packaged_registry()
    open_sites = registry.filter(
        (pl.col("start_date").dt.year() <= year) & (pl.col("end_date").is_null() | (pl.col("end_date").dt.year() >= year)) & pl.col("latitude").is_not_null()
    )["site_id"].unique().sort().to_list()
    rng = random.Random(seed)
    chosen = rng.sample(open_sites, min(count, len(open_sites)))
    sources = panel["site_id"].unique().sort().to_list()
    values = [c for c in ("pm25", "pm10", "no2", "o3") if c in panel.columns]
    parts = []
    for k, site in enumerate(chosen):
        factor = rng.uniform(0.6, 1.4)
        part = panel.filter(pl.col("site_id") == sources[k % len(sources)])
        parts.append(part.with_columns(pl.lit(site).alias("site_id"), *(pl.col(c) * factor for c in values)))
    return pl.concat(parts), chosen


def timed(port: int, path: str) -> tuple[float, int, int]:
    """Seconds to the last byte, bytes on the wire (gzip) and HTTP status of ``GET path``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    connection.request("GET", path, headers={"Accept-Encoding": "gzip"})
    response = connection.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed, len(body), response.status


def whole_size(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path, headers={"Accept-Encoding": "identity"})
    return len(connection.getresponse().read())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=150)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    home = Path(os.environ.get("ROUTEAQ_HOME", REPO / ".routeaq")).resolve()
    if not (home / "online" / "features.parquet").exists():
        raise SystemExit(f"no trained home at {home}: run make demo first (or set ROUTEAQ_HOME)")
    work = Path(tempfile.mkdtemp(prefix="routeaq-page-bench-"))
    panel, sites = scaled_panel(home, args.sites)
    panel.write_parquet(work / "online.parquet")
    port = free_port()
    env = {
        **os.environ,
        "ROUTEAQ_HOME": str(work / "home"),
        "ROUTEAQ_ONLINE_STORE": str(work / "online.parquet"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "ROUTEAQ_SITES": ",".join(sites),
        "ROUTEAQ_REFRESH_SECONDS": "3600",
        "BENTOML_HOME": str(work / "bentoml"),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    log = open(work / "serve.log", "w")
    started = time.perf_counter()
    server = subprocess.Popen([str(BIN / "bentoml"), "serve", "routeaq_serving.service:RouteAQ", "--port", str(port)], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(port, server, "/health", seconds=600)
        startup = time.perf_counter() - started
        rng = random.Random(11)
        towns = [(51.51, -0.13), (53.48, -2.24), (52.48, -1.90), (55.86, -4.26), (51.48, -3.18), (54.60, -5.93), (53.80, -1.55)]
        routes = {
            "/api/sites": lambda: "/api/sites",
            "/api/sites/{id}": lambda: f"/api/sites/{rng.choice(sites)}",
            "/api/nearest": lambda: "/api/nearest?lat={:.3f}&lon={:.3f}".format(*rng.choice(towns)),
            "/api/best-time": lambda: f"/api/best-time?site_id={rng.choice(sites)}&hours=2&within=48",
        }
        results = {}
        for name, path in routes.items():
            timed(port, path())  # a connection and a route warmed
            runs = [timed(port, path()) for _ in range(args.requests)]
            bad = [status for _, _, status in runs if status != 200]
            if bad:
                raise SystemExit(f"{name}: {len(bad)} answers were not 200 (first {bad[0]}); see {work / 'serve.log'}")
            times = [t for t, _, _ in runs]
            results[name] = {
                "p50_ms": 1000 * percentile(times, 0.5), "p95_ms": 1000 * percentile(times, 0.95),
                "gzip_kb_max": max(n for _, n, _ in runs) / 1000,
            }
        results["/api/sites"]["whole_kb"] = whole_size(port, "/api/sites") / 1000
        results["/api/sites/{id}"]["whole_kb"] = max(whole_size(port, f"/api/sites/{s}") for s in sites[:10]) / 1000
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"# bench/page.py, {datetime.now(timezone.utc):%Y-%m-%d}, {platform.node()}, {os.cpu_count()} CPUs, {len(sites)} sites, {args.requests} requests per route")
    print(f"service start to ready (state loaded, overview built): {startup:.1f} s")
    print("| route | p50 ms | p95 ms | gzip kB (largest) | whole kB |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| `{name}` | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['gzip_kb_max']:.1f} | {r.get('whole_kb', float('nan')):.1f} |")


if __name__ == "__main__":
    main()
