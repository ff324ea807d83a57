"""Soak test: a real ``bentoml serve`` under a steady, bounded load on loopback.

    make demo && python bench/soak.py [--seconds 300] [--rate 20] [--rss-growth-mib 64]

Starts ``bentoml serve routeaq_serving.service:RouteAQ`` over ``ROUTEAQ_HOME`` (a trained home:
``make demo``) and sends ``--rate`` requests a second for ``--seconds`` on one keep-alive
connection: about 70 % single forecasts, 10 % batches of 10 and 20 % malformed requests (broken
JSON, timestamps at the ends of the datetime range, unknown sites, missing fields, hours outside
the stored history). Every 5 s it samples the resident memory of the server and its workers.

It passes (exit 0) when: no answer is a 5xx; the connection was never dropped; the resident
memory after the warm-up (the first sample after 30 s) grows by at most ``--rss-growth-mib``; and
the prediction log gained exactly one line per forecast answered. It prints one JSON report.
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
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
from serving import free_port, wait_for  # bench/serving.py: the same servers' start-up

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MALFORMED = [
    b'{"site_id": "CLL2", "timestamp": ',
    b'{"site_id": "CLL2", "timestamp": "0001-01-01T00:00:00+01:00"}',
    b'{"site_id": "CLL2", "timestamp": "9999-12-31T23:00:00-01:00"}',
    b'{"site_id": "NOPE", "timestamp": "2025-08-01T10:00:00Z"}',
    b'{"site_id": "CLL2"}',
    b'{"site_id": "CLL2", "timestamp": "2025-08-01T10:30:00Z"}',
    b'{"site_id": "CLL2", "timestamp": "1950-01-01T00:00:00Z"}',
    b'{"site_id": "CLL2", "timestamp": "2025-08-01T10:00:00Z", "pollutant": "so2"}',
    b"[]",
]


def rss_mib(process: psutil.Process) -> float:
    family = [process, *process.children(recursive=True)]
    total = 0
    for member in family:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return round(total / 2**20, 1)


def log_lines(folder: Path) -> int:
    return sum(len(f.read_bytes().splitlines()) for f in folder.glob("predictions-*.jsonl"))


def valid_requests(ready: dict, rng: random.Random) -> tuple[list[bytes], list[bytes]]:
    last = datetime.fromisoformat(ready["online_hours"][1])
    sites = sorted(ready["data_until"])
    hours = [(last - timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ") for h in range(1, 72)]
    items = [{"site_id": s, "timestamp": h, "pollutant": p} for s in sites for h in hours for p in ("pm25", "no2", "o3")]
    singles = [json.dumps(item).encode() for item in items]
    batches = [json.dumps({"items": rng.sample(items, 10)}).encode() for _ in range(200)]
    return singles, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rate", type=float, default=20, help="requests per second")
    parser.add_argument("--rss-growth-mib", type=float, default=64, help="allowed growth of resident memory after warm-up")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    home = Path(os.environ.get("ROUTEAQ_HOME", REPO / ".routeaq")).resolve()
    port = free_port()
    env = {**os.environ, "ROUTEAQ_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen(
        [str(BIN / "bentoml"), "serve", "routeaq_serving.service:RouteAQ", "--port", str(port), "--host", "127.0.0.1"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    rng = random.Random(args.seed)
    statuses: dict[int, int] = {}
    answered = reconnects = 0
    samples: list[tuple[float, float]] = []
    try:
        ready = json.loads(wait_for(port, process, "/ready", 180))
        singles, batches = valid_requests(ready, rng)
        lines_before = log_lines(home / "predictions")
        server = psutil.Process(process.pid)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.connect()
        local = connection.sock.getsockname()
        start = time.monotonic()
        next_sample = start
        for n in range(int(args.seconds * args.rate)):
            now = time.monotonic()
            if now >= next_sample:
                samples.append((round(now - start, 1), rss_mib(server)))
                next_sample += 5
            time.sleep(max(0.0, start + n / args.rate - now))
            draw = rng.random()
            path, body = ("/predict", rng.choice(singles)) if draw < 0.7 else ("/predict/batch", rng.choice(batches)) if draw < 0.8 else ("/predict", rng.choice(MALFORMED))
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status == 200:
                answered += len(json.loads(payload)["predictions"]) if path == "/predict/batch" else 1
            if connection.sock is None or connection.sock.getsockname() != local:
                reconnects += 1
                connection.connect()
                local = connection.sock.getsockname()
        samples.append((round(time.monotonic() - start, 1), rss_mib(server)))
        connection.close()
        lines_after = log_lines(home / "predictions")
    finally:
        process.terminate()
        process.wait(timeout=60)
    warm = next((rss for t, rss in samples if t >= 30), samples[0][1])
    report = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "seconds": args.seconds,
        "rate_per_s": args.rate,
        "requests": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "server_errors": sum(c for s, c in statuses.items() if s >= 500),
        "dropped_connections": reconnects,
        "predictions_answered": answered,
        "prediction_log_lines": lines_after - lines_before,
        "rss_mib": {"warm": warm, "max": max(r for _, r in samples), "last": samples[-1][1], "bound_growth": args.rss_growth_mib},
        "rss_samples": json.dumps(samples),
    }
    checks = {
        "no 5xx": report["server_errors"] == 0,
        "connection kept": reconnects == 0,
        "memory bound held": report["rss_mib"]["max"] - warm <= args.rss_growth_mib,
        "log lines equal predictions": report["prediction_log_lines"] == answered,
    }
    report["checks"] = checks
    print(json.dumps(report, indent=1))
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
