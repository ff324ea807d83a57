"""The demo: the whole graph on the embedded default, then one served prediction.

Runs what a user would run, through Dagster's own CLI and ``bentoml serve``:
1. ``site_registry``; 2. a single-run backfill of ``raw_aurn``, ``raw_weather`` and
``silver_features`` over the window; 3. ``train_job`` (candidates, promotion gate, champions,
online features); 4. the drift report of each pollutant for the last hour; 5. ``bentoml serve`` and one
``POST /predict``.

Settings: ``ROUTEAQ_DEMO_END`` (ISO hour, default 2025-08-01T12:00Z, or ``now``) and
``ROUTEAQ_DEMO_DAYS`` (default 60); ``ROUTEAQ_HOME`` holds everything the demo writes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path

from routeaq_assets.adapters.locks import LockTimeout, file_lock
from routeaq_assets.core.environment import PARTITIONS_START_FILE, ConfigurationError, require_writable_home
from routeaq_assets.core.progress import PREFIX as PROGRESS

DEFAULT_END = "2025-08-01T12:00:00Z"
SMOKE_SITE = "CLL2"
SMOKE_HOUR = datetime(2025, 8, 1, 10, tzinfo=timezone.utc)  # the reference clients' smoke request
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def demo_window(end: str, days: int) -> tuple[datetime, datetime]:
    """The half-open window [start, end) of whole UTC hours the demo backfills."""
    if end.strip().lower() == "now":
        stop = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    else:
        stop = datetime.fromisoformat(end.replace("Z", "+00:00"))
        if stop.tzinfo is None:
            raise ValueError(f"ROUTEAQ_DEMO_END={end!r} needs a time zone, e.g. {DEFAULT_END}")
        stop = stop.astimezone(timezone.utc)
        if (stop.minute, stop.second, stop.microsecond) != (0, 0, 0):
            raise ValueError(f"ROUTEAQ_DEMO_END={end!r} must be a whole hour")
    if days < 10:
        raise ValueError(f"ROUTEAQ_DEMO_DAYS={days} is too short to train and hold out a week; use 10 or more")
    return stop - timedelta(days=days), stop


def partition_key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def worth_showing(line: str) -> bool:
    """The log lines the demo shows as they come: progress of long stages, promotions, failed checks."""
    message = line.rstrip().split(" - ")[-1]
    return message.startswith(PROGRESS) or "promoted" in line or ("Asset check" in line and "failed" in line)


def run_logged(command: list[str], shown: str, log: Path) -> None:
    """Run a command, its full output to ``log``, progress, promotions and failed checks on
    screen as they come, and a summary; exit naming the log's tail if it fails."""
    print(f"    $ {shown}", flush=True)
    started = time.monotonic()
    with log.open("a") as out:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO, text=True)
        for line in process.stdout:
            out.write(line)
            if worth_showing(line):
                print("    " + line.rstrip().split(" - ")[-1], flush=True)
        returncode = process.wait()
    took = time.monotonic() - started
    if returncode != 0:
        tail = log.read_text().splitlines()[-40:]
        raise SystemExit(f"{shown} failed (exit {returncode}) after {took:.0f}s; log {log}:\n" + "\n".join(tail))
    print(f"    done in {took:.0f}s", flush=True)


def workspace_run(args: list[str], log: Path) -> None:
    """Run a job as a run of the workspace's code location (so the UI can re-execute it, see
    ``workspace_run``)."""
    run_logged([sys.executable, "-m", "routeaq_assets.workspace_run", *args], "python -m routeaq_assets.workspace_run " + " ".join(args), log)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def serve_and_predict(site_id: str, hour: datetime, log: Path) -> dict:
    port = free_port()
    command = [str(BIN / "bentoml"), "serve", "routeaq_serving.service:RouteAQ", "--port", str(port), "--host", "127.0.0.1"]
    print(f"    $ bentoml serve routeaq_serving.service:RouteAQ --port {port}", flush=True)
    with log.open("a") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                raise SystemExit(f"bentoml serve exited with {server.returncode}; log {log}")
            try:
                status, health = http("GET", f"http://127.0.0.1:{port}/health")
                if status == 200:
                    break
            except (OSError, json.JSONDecodeError):  # still starting
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the service did not become healthy in 90 s; log {log}")
            time.sleep(0.5)
        print(f"    GET /health -> {json.dumps(health)}", flush=True)
        body = {"site_id": site_id, "timestamp": hour.strftime("%Y-%m-%dT%H:%M:%SZ")}
        status, prediction = http("POST", f"http://127.0.0.1:{port}/predict", body)
        print(f"    POST /predict {json.dumps(body)} -> {status}", flush=True)
        if status != 200:
            raise SystemExit(f"prediction failed: {status} {prediction}")
        status, daily = http("POST", f"http://127.0.0.1:{port}/predict/daily", {"site_id": site_id})
        print(f"    POST /predict/daily {json.dumps({'site_id': site_id})} -> {status}", flush=True)
        if status != 200:
            raise SystemExit(f"daily forecast failed: {status} {daily}")
        for label, day in zip(("today", "tomorrow"), daily["days"]):
            print(f"    {site_id} {label} ({day['day']}): DAQI {day['index']} {day['band']}, set by {day['set_by']}; "
                  f"Moderate or above {day['p_moderate_or_above']:.0%}, High or above {day['p_high_or_above']:.0%}", flush=True)
        return prediction
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


DEMO_LOCK = "demo.lock"
_held = ExitStack()  # the home's demo lock, held until this process ends
_held_homes: set[Path] = set()  # the homes this process holds: taking one again is a no-op


def hold_home(home: Path) -> None:
    """Take ``home`` for this demo, or stop at once: two demos in one home would interleave their
    backfills, trainings and promotions in one warehouse, registry and Dagster instance. A process
    that holds it already (one evaluation after another, as bench/heldout_skill.py runs them)
    keeps it."""
    if home in _held_homes:
        return
    try:
        _held.enter_context(file_lock(home / DEMO_LOCK, exclusive=True, timeout_s=0, what=f"the RouteAQ home {home}"))
    except LockTimeout as exc:
        raise SystemExit(
            f"RouteAQ demo: another demo is running in {home} ({exc.holder}); "
            "wait for it to finish, or set ROUTEAQ_HOME to another folder. Nothing was changed."
        ) from None
    _held_homes.add(home)


def prepare_instance() -> Path:
    """ROUTEAQ_HOME and the Dagster instance under it (defaults as the Makefile sets them), held
    for this demo alone (``hold_home``)."""
    home = Path(os.environ.setdefault("ROUTEAQ_HOME", str(REPO / ".routeaq"))).resolve()
    try:
        require_writable_home(home)
    except ConfigurationError as exc:
        raise SystemExit(f"RouteAQ demo: {exc}") from None
    hold_home(home)
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster")))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        (dagster_home / "dagster.yaml").symlink_to(REPO / "dagster.yaml")
    return home


def record_partitions_start(home: Path, start: datetime) -> None:
    """Every Dagster process on this home (the demo's runs, ``make dev`` later) counts partitions
    from the earliest window a demo backfilled into it (``core.environment.partitions_start``)."""
    path = home / PARTITIONS_START_FILE
    earlier = path.read_text().strip() if path.is_file() else None
    path.write_text(min(filter(None, [earlier, partition_key(start)])))


def main() -> None:
    home = prepare_instance()
    start, end = demo_window(os.environ.get("ROUTEAQ_DEMO_END", DEFAULT_END), int(os.environ.get("ROUTEAQ_DEMO_DAYS", "60")))
    last = end - timedelta(hours=1)
    log = home / "logs" / f"demo-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    record_partitions_start(home, start)
    print(f"RouteAQ demo: {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, data under {home}")
    print(f"(full logs: {log})")

    step("1/5 site registry (packaged AURN metadata)")
    workspace_run(["--job", "registry_job"], log)
    step(f"2/5 backfill raw_aurn, raw_weather, silver_features: {(end - start) // timedelta(hours=1)} hourly partitions in one run")
    workspace_run(
        ["--job", "ingest_job", "--partition-range", f"{partition_key(start)}...{partition_key(last)}"],
        log,
    )
    step("3/5 train PM2.5, PM10, NO2 and O3 candidates (every hour to 48 ahead), gate them, promote champions, publish online features")
    workspace_run(["--job", "train_job"], log)
    step(f"4/5 monitoring for {last:%Y-%m-%d %H:00}: forecasts scored, intervals recalibrated, drift reports (PM2.5, PM10, NO2, O3)")
    workspace_run(["--job", "monitoring_job", "--partition", partition_key(last)], log)
    step("5/5 serve the champions, ask for one forecast and for today's and tomorrow's index")
    # The reference smoke request when the window holds it; otherwise the next hour ahead.
    hour = SMOKE_HOUR if start + timedelta(days=8) <= SMOKE_HOUR < end else end
    prediction = serve_and_predict(SMOKE_SITE, hour, log)
    print(f"\n    {json.dumps(prediction)}")
    print(f"\n    PM2.5 forecast for {SMOKE_SITE} at {prediction['timestamp']}: {prediction['pm25_pred']} ug/m3 "
          f"(80% interval {prediction['lower']}..{prediction['upper']}, model v{prediction['model_version']})")
    print(f"\nDemo finished in {time.monotonic() - began:.0f}s. Where to look next:")
    print("  make dev     # Dagster UI on http://127.0.0.1:3000: assets, runs, checks, the retraining and alert sensors")
    print("  make serve   # the forecast API on http://127.0.0.1:8000 (POST /predict, GET /health, /reports/... the UI links to)")
    print(f"  {home / 'lake' / 'reports' / 'drift'}   # drift records per pollutant and hour (JSON; an Evidently page when one fired)")
    print("  make demo-drift   # the monitoring loop through an injected NO2 shift, hour by hour")
    print(f"  {home / 'predictions'}   # the prediction log")


if __name__ == "__main__":
    main()
