"""Serving throughput and latency: this service against a reference-style and a bare app.

    make demo && python bench/serving.py [--seconds 15] [--concurrency 4]

Starts (a) ``bentoml serve routeaq_serving.service:RouteAQ``, (b) ``bench/apps/reference.py``
(FastAPI + ``mlflow.pyfunc`` + a per-request feature lookup, as the reference project serves) and
(c) ``bench/apps/bare.py`` (FastAPI calling ``Booster.predict`` on an in-memory row), each with
uvicorn or bentoml on loopback, one at a time, and drives each with the same closed loop:
``--concurrency`` clients, each sending the next request when the last one is answered, for
``--seconds``. Prints req/s, p50 and p99, then the time of one 10,000-item batch on (a).
Needs a trained ``ROUTEAQ_HOME`` (``make demo``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SITES = ["CLL2", "MY1", "MAN3", "BIRR", "CARD", "LEED"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, process: subprocess.Popen, path: str = "/health", seconds: float = 120) -> bytes:
    """The body of the server's first 200 answer to ``GET path``; exits when the server process
    ends or has not answered 200 within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            if response.status == 200:
                return body
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server did not answer 200 on {path} within {seconds:.0f} s")


def bodies(newest: datetime) -> list[bytes]:
    hours = [newest - timedelta(hours=h) for h in range(0, 48)]
    return [json.dumps({"site_id": s, "timestamp": h.strftime("%Y-%m-%dT%H:%M:%SZ")}).encode() for h in hours for s in SITES]


def closed_loop(port: int, payloads: list[bytes], seconds: float, concurrency: int) -> dict:
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i = k
        while time.monotonic() < stop:
            body = payloads[i % len(payloads)]
            i += concurrency
            started = time.perf_counter()
            connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            latencies[k].append(time.perf_counter() - started)
            errors[k] += response.status != 200

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    all_latencies = sorted(x for part in latencies for x in part)
    n = len(all_latencies)
    return {
        "requests": n,
        "errors": sum(errors),
        "rps": n / elapsed,
        "p50_ms": 1000 * all_latencies[n // 2],
        "p99_ms": 1000 * all_latencies[min(n - 1, int(n * 0.99))],
    }


def batch_time(port: int, newest: datetime, items: int = 10_000, window_hours: int = 14 * 24) -> tuple[float, int]:
    """One batch of ``items`` site-hours drawn (cyclically) from the online store's two weeks."""
    pairs = [(s, newest - timedelta(hours=h)) for h in range(window_hours) for s in SITES]
    chosen = [pairs[i % len(pairs)] for i in range(items)]
    payload = {"items": [{"site_id": s, "timestamp": h.strftime("%Y-%m-%dT%H:%M:%SZ")} for s, h in chosen]}
    body = json.dumps(payload).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        connection.request("POST", "/predict/batch", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        best = min(best, time.perf_counter() - started)
        if response.status != 200:
            raise SystemExit(f"batch failed: {response.status} {data[:300]!r}")
    return best, len(json.loads(data)["predictions"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    home = Path(os.environ.get("ROUTEAQ_HOME", REPO / ".routeaq")).resolve()
    if not (home / "online" / "features.parquet").exists():
        raise SystemExit(f"no trained RouteAQ home at {home}: run `make demo` first")
    env = {**os.environ, "ROUTEAQ_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO)}
    import polars as pl

    panel = pl.read_parquet(home / "online" / "features.parquet")
    newest = panel.filter(pl.any_horizontal(pl.col(p).is_not_null() for p in ("pm25", "no2", "o3")))["time"].max()  # the newest observation
    payloads = bodies(newest.replace(tzinfo=timezone.utc) if newest.tzinfo is None else newest)
    servers = {
        "routeaq (bentoml serve)": ["bentoml", "serve", "routeaq_serving.service:RouteAQ", "--host", "127.0.0.1", "--port"],
        "reference (FastAPI + pyfunc + lookup)": ["uvicorn", "bench.apps.reference:app", "--host", "127.0.0.1", "--log-level", "warning", "--port"],
        "bare (FastAPI + Booster.predict)": ["uvicorn", "bench.apps.bare:app", "--host", "127.0.0.1", "--log-level", "warning", "--port"],
    }
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"closed loop, {args.concurrency} clients, {args.seconds:.0f} s each, loopback")
    results = {}
    for name, command in servers.items():
        port = free_port()
        process = subprocess.Popen([str(BIN / command[0]), *command[1:], str(port)], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(port, process)
            closed_loop(port, payloads, 2, args.concurrency)  # warm-up
            results[name] = closed_loop(port, payloads, args.seconds, args.concurrency)
            if name.startswith("routeaq"):
                took, answered = batch_time(port, newest)
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"\n{'server':<40} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in results.items():
        print(f"{name:<40} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7}")
    ours, reference, bare = (results[n]["rps"] for n in servers)
    print(f"\nrouteaq / reference: {ours / reference:.1f}x; routeaq / bare: {ours / bare:.0%}")
    print(f"batch of {answered:,} site-hours: {took * 1000:.0f} ms (best of 3)")


if __name__ == "__main__":
    main()
