"""Soak test: a real ``bentoml serve`` under a long load on loopback, paced or as fast as it goes.

    make demo && python bench/soak.py [--seconds 300] [--rate 20] [--rss-growth-mib 64]
    python bench/soak.py --rate 0 [--seconds 600] [--threads 4] [--rss-flat-mib 8]

Starts ``bentoml serve routeaq_serving.service:RouteAQ`` over ``ROUTEAQ_HOME`` (a trained home:
``make demo``; the service appends its prediction log there, so point it at a copy of a home you
keep) and sends requests on keep-alive connections: single forecasts, 10 % batches of 10 and a
share of malformed requests (broken JSON, timestamps at the ends of the datetime range, unknown
sites, missing fields, hours outside the stored history). It samples the resident memory of the
server and its worker every ``--sample-seconds``.

Paced (``--rate`` > 0; 300 s, 20 % malformed by default): ``--rate`` requests a second on one
connection. Full load (``--rate 0``; 600 s, 10 % malformed by default): ``--threads`` clients, each
sending its next request as soon as the last is answered.

It passes (exit 0) when: no answer is a 5xx; no connection was dropped; the prediction log gained
exactly one line per forecast answered; and the resident memory of server + worker held its bound.
Paced, that is growth after the warm-up (the first sample after 30 s) of at most
``--rss-growth-mib``. At full load, it is the spread (max - min) of the samples over the last
``--flat-seconds`` (300) of at most ``--rss-flat-mib``: memory that levels off, whatever the
warm-up took. It prints one JSON report.
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
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
from serving import free_port, wait_for  # bench/serving.py: the same servers' start-up

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BATCH_SHARE = 0.1
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


def rss_mib(process: psutil.Process) -> tuple[float, float]:
    """Resident memory of the server with its children, and of its largest child (the worker)."""
    family = [process, *process.children(recursive=True)]
    sizes = []
    for member in family:
        try:
            sizes.append(member.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return round(sum(sizes) / 2**20, 1), round(max(sizes[1:], default=0) / 2**20, 1)


def log_lines(folder: Path) -> int:
    total = 0
    for path in folder.glob("predictions-*.jsonl"):
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                total += chunk.count(b"\n")
    return total


def valid_requests(ready: dict, rng: random.Random) -> tuple[list[bytes], list[bytes]]:
    last = datetime.fromisoformat(ready["online_hours"][1])
    sites = sorted(ready["data_until"])
    hours = [(last - timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ") for h in range(1, 72)]
    items = [{"site_id": s, "timestamp": h, "pollutant": p} for s in sites for h in hours for p in ("pm25", "no2", "o3")]
    singles = [json.dumps(item).encode() for item in items]
    batches = [json.dumps({"items": rng.sample(items, 10)}).encode() for _ in range(200)]
    return singles, batches


class Client(threading.Thread):
    """One keep-alive connection sending the mix until ``deadline``: paced at ``rate`` a second,
    or (rate 0) each request as soon as the last is answered."""

    def __init__(self, port: int, bodies: tuple[list[bytes], list[bytes]], malformed: float, rate: float, deadline: float, seed: int):
        super().__init__(daemon=True)
        self.port, self.bodies, self.malformed, self.rate, self.deadline = port, bodies, malformed, rate, deadline
        self.rng = random.Random(seed)
        self.statuses: Counter[int] = Counter()
        self.answered = self.reconnects = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._send_until_deadline()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread, which fails the run
            self.failure = exc

    def _send_until_deadline(self) -> None:
        singles, batches = self.bodies
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.connect()
        local = connection.sock.getsockname()
        start = time.monotonic()
        n = 0
        while (now := time.monotonic()) < self.deadline:
            if self.rate:
                time.sleep(max(0.0, start + n / self.rate - now))
            n += 1
            draw = self.rng.random()
            path, body = (
                ("/predict", self.rng.choice(MALFORMED)) if draw < self.malformed
                else ("/predict/batch", self.rng.choice(batches)) if draw < self.malformed + BATCH_SHARE
                else ("/predict", self.rng.choice(singles))
            )
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            self.statuses[response.status] += 1
            if response.status == 200:
                self.answered += len(json.loads(payload)["predictions"]) if path == "/predict/batch" else 1
            if connection.sock is None or connection.sock.getsockname() != local:
                self.reconnects += 1
                connection.connect()
                local = connection.sock.getsockname()
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="length of the load (default 300 paced, 600 at full load)")
    parser.add_argument("--rate", type=float, default=20, help="requests per second; 0: full load")
    parser.add_argument("--threads", type=int, default=4, help="clients at full load")
    parser.add_argument("--malformed", type=float, help="share of malformed requests (default 0.2 paced, 0.1 at full load)")
    parser.add_argument("--rss-growth-mib", type=float, default=64, help="paced: allowed growth of resident memory after warm-up")
    parser.add_argument("--rss-flat-mib", type=float, default=8, help="full load: allowed max - min of resident memory over the last --flat-seconds")
    parser.add_argument("--flat-seconds", type=float, default=300)
    parser.add_argument("--sample-seconds", type=float, help="resident memory sampled every (default 5 paced, 10 at full load)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    full = args.rate <= 0
    seconds = args.seconds or (600 if full else 300)
    malformed = args.malformed if args.malformed is not None else (0.1 if full else 0.2)
    every = args.sample_seconds or (10 if full else 5)
    home = Path(os.environ.get("ROUTEAQ_HOME", REPO / ".routeaq")).resolve()
    port = free_port()
    env = {**os.environ, "ROUTEAQ_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen(
        [str(BIN / "bentoml"), "serve", "routeaq_serving.service:RouteAQ", "--port", str(port), "--host", "127.0.0.1"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    rng = random.Random(args.seed)
    samples: list[tuple[float, float, float]] = []  # seconds, server + worker MiB, worker MiB
    try:
        ready = json.loads(wait_for(port, process, "/ready", 180))
        bodies = valid_requests(ready, rng)
        lines_before = log_lines(home / "predictions")
        server = psutil.Process(process.pid)
        start = time.monotonic()
        deadline = start + seconds
        clients = [
            Client(port, bodies, malformed, 0 if full else args.rate, deadline, args.seed + k) for k in range(args.threads if full else 1)
        ]
        for client in clients:
            client.start()
        while any(client.is_alive() for client in clients):
            samples.append((round(time.monotonic() - start, 1), *rss_mib(server)))
            for client in clients:  # until the next sample is due, or every client has finished
                client.join(timeout=max(0.0, start + len(samples) * every - time.monotonic()))
        elapsed = time.monotonic() - start
        samples.append((round(elapsed, 1), *rss_mib(server)))
        lines_after = log_lines(home / "predictions")
    finally:
        process.terminate()
        process.wait(timeout=60)
    failures = [f"{type(c.failure).__name__}: {c.failure}" for c in clients if c.failure is not None]
    statuses = sum((c.statuses for c in clients), Counter())
    answered = sum(c.answered for c in clients)
    reconnects = sum(c.reconnects for c in clients)
    requests = sum(statuses.values())
    warm = next((rss for t, rss, _ in samples if t >= 30), samples[0][1])
    after_warm = [rss for t, rss, _ in samples if t >= 30] or [warm]  # the first sample is start-up's peak
    last = [rss for t, rss, _ in samples if t >= seconds - args.flat_seconds]
    report = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "mode": f"full load, {len(clients)} clients" if full else f"paced, {args.rate:g} requests/s",
        "seconds": round(elapsed, 1),
        "malformed_share": malformed,
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1),
        "statuses": dict(sorted(statuses.items())),
        "server_errors": sum(c for s, c in statuses.items() if s >= 500),
        "client_failures": failures,
        "dropped_connections": reconnects,
        "predictions_answered": answered,
        "prediction_log_lines": lines_after - lines_before,
        "rss_mib": {
            "first": samples[0][1], "warm": warm, "max": max(r for _, r, _ in samples), "last": samples[-1][1],
            "worker_first": samples[0][2], "worker_last": samples[-1][2],
            **({"last_window_spread": round(max(last) - min(last), 1), "bound_spread": args.rss_flat_mib} if full else {"bound_growth": args.rss_growth_mib}),
        },
        "rss_samples": json.dumps(samples),
    }
    memory_held = (max(last) - min(last) <= args.rss_flat_mib) if full else (max(after_warm) - warm <= args.rss_growth_mib)
    checks = {
        "no 5xx": report["server_errors"] == 0 and not failures,
        "connection kept": reconnects == 0,
        "memory bound held": memory_held,
        "log lines equal predictions": report["prediction_log_lines"] == answered,
    }
    report["checks"] = checks
    print(json.dumps(report, indent=1))
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
