"""The pipeline at the size of the UK network: a year of hourly data through raw, silver and training.

    python bench/scale.py [--sites 10,50,150] [--year 2024] [--cli-days 7] [--cli-sites 10] [--slice-partitions 2]

For each site count the demo network writes one openair-format ``.RData`` table per site-year
(outside the timing); RouteAQ reads them as a user's folder (``ROUTEAQ_SOURCE=local``).

1. **The work of a single-run backfill of the year**: the bodies of ``raw_aurn``, ``raw_weather``
   and ``silver_features`` called with the year as their window, as a single-run backfill calls
   them, then ``{p}_candidate`` for each pollutant of ``--train`` (default pm25: the model of
   every lead from 1 to 48 hours trained on the year, gated on the last week at each gate lead,
   registered in MLflow), in a child process. Per stage: time, rows/s, and peak memory of the
   child (psutil, resident set, sampled every 0.2 s).
2. **What Dagster adds per partition**: the same three assets through Dagster's CLI as one
   single-run backfill of ``--cli-days`` (the production instance: ``deploy/dagster.yaml`` on the
   local PostgreSQL), on ``--cli-sites`` sites. Dagster records a materialization per asset and
   partition (26,352 for a year of hourly partitions); the time outside the assets' own work, per
   partition, extrapolates to the year. ``--cli-days 366`` runs the whole year through the CLI.
3. **One run per partition**: ``--slice-partitions`` hourly partitions, each its own
   ``dagster asset materialize --partition``; the mean time per run, times every hour of the year.

Figures go in bench/RESULTS.md with the command, machine, date and load.
"""

from __future__ import annotations

import argparse
import atexit
import inspect
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil

from routeaq_assets.core.progress import PREFIX as PROGRESS
from routeaq_assets.core.schema import FORECAST_POLLUTANTS
from routeaq_assets.core.sites import load_packaged_registry, measures, site_attributes
from routeaq_assets.sources.demo_network import DemoNetwork, DemoSite

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STAGES = ("raw_aurn", "raw_weather", "silver_features")


def scale_sites(count: int, year: int) -> list[str]:
    """``count`` AURN sites that measured a forecast pollutant in ``year``, those measuring the
    most first, then by code: every site contributes observations."""
    registry = load_packaged_registry(None)
    scored = sorted((-sum(measures(registry, s, p, year) for p in FORECAST_POLLUTANTS), s) for s in registry["site_id"].unique())
    ranked = [s for score, s in scored if score < 0]
    if len(ranked) < count:
        raise SystemExit(f"only {len(ranked)} packaged AURN sites measured a forecast pollutant in {year}")
    return ranked[:count]


def write_tables(sites: list[str], year: int, cache: Path, folder: Path) -> float:
    """The openair site-year tables of ``sites`` in ``folder`` (generated once into ``cache``)."""
    began = time.monotonic()
    attrs = site_attributes(load_packaged_registry(tuple(sites)))
    network = DemoNetwork(cache, [DemoSite(r["site_id"], r["site_name"], r["location_type"], r["latitude"], r["longitude"]) for r in attrs.iter_rows(named=True)])
    folder.mkdir(parents=True, exist_ok=True)
    for site in sites:
        network.ensure_site_year(site, year)
        link = folder / network.openair_path(site, year).name
        if not link.exists():
            link.symlink_to(network.openair_path(site, year))
    return time.monotonic() - began


class TreeMemory:
    """Resident memory of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.samples.append((time.time(), total))
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float | None = None, end: float | None = None) -> int:
        return max((rss for t, rss in self.samples if (start is None or t >= start) and (end is None or t <= end)), default=0)


def run(command: list[str], env: dict, log: Path) -> tuple[float, float, TreeMemory]:
    """Run a command: its wall time, the CPU seconds it and its children used (less sensitive than
    wall time to other work on a shared machine), and its memory samples."""
    began, cpu_before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("a") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        with TreeMemory(process.pid) as memory:
            process.wait()
    took, cpu_after = time.monotonic() - began, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    if process.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(f"{' '.join(command[:4])} failed ({process.returncode}); log {log}:\n{tail}")
    return took, cpu, memory


def dagster(args: list[str], env: dict, log: Path) -> tuple[float, float, TreeMemory]:
    return run([str(BIN / "dagster"), *args, "-m", "routeaq_assets.definitions"], env, log)


def postgres_instance(database: str) -> dict[str, str]:
    """A fresh database on the local PostgreSQL (trust auth), dropped at exit, and the variables
    deploy/dagster.yaml reads to reach it."""
    import psycopg2

    host = os.environ.get("PGHOST", "127.0.0.1")

    def admin(sql: str) -> None:
        connection = psycopg2.connect(host=host, user="postgres", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql)
        connection.close()

    admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{database}"')
    atexit.register(admin, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {"DAGSTER_PG_HOST": host, "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "postgres", "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": database}


def prepare_home(name: str, sites: list[str], folder: Path, work: Path) -> tuple[dict, Path]:
    """A RouteAQ home reading ``folder``, with its own Dagster instance on PostgreSQL."""
    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").symlink_to(REPO / "deploy" / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(postgres_instance(f"routeaq_scale_{name.replace('-', '_')}_{os.getpid()}"))
    env.update({
        "ROUTEAQ_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "ROUTEAQ_SITES": ",".join(sites),
        "ROUTEAQ_SOURCE": "local",
        "ROUTEAQ_SOURCE_FOLDER": str(folder),
        "OMP_WAIT_POLICY": "PASSIVE",
        # One "materialization planned" event per asset for a range, as deploy/ sets it.
        "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true",
    })
    return env, home / "bench.log"


# --- 1. the work of the year, in a child process ------------------------------------------------

class Window:
    """What a single-run backfill gives an asset body: the range's time window and a logger."""

    def __init__(self, start: datetime, end: datetime):
        from dagster import TimeWindow

        self.partition_time_window = TimeWindow(start, end)
        self.log = logging.getLogger("routeaq.scale")


def stage_bodies(year: int, pollutants: list[str], out: Path) -> None:
    """Child process: the asset bodies over the year, each stage's start, end and rows to ``out``."""
    import dagster as dg

    from routeaq_assets.core.environment import load_settings
    from routeaq_assets.definitions import defs
    from routeaq_assets.defs.training import TrainingConfig
    from routeaq_assets.environments import local_resources

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    resources = local_resources(load_settings())
    assert dg.materialize([defs.get_assets_def("site_registry")], resources=resources, instance=dg.DagsterInstance.ephemeral()).success
    context = Window(datetime(year, 1, 1, tzinfo=timezone.utc), datetime(year + 1, 1, 1, tzinfo=timezone.utc))
    calls = {
        "raw_aurn": lambda body: body(context, warehouse=resources["warehouse"], observations=resources["observations"]),
        "raw_weather": lambda body: body(context, warehouse=resources["warehouse"], weather=resources["weather"]),
        "silver_features": lambda body: body(context, warehouse=resources["warehouse"]),
        **{
            f"{p}_candidate": lambda body: body(context, config=TrainingConfig(), warehouse=resources["warehouse"], model_store=resources["model_store"])
            for p in pollutants
        },
    }
    stages = {}
    for name, call in calls.items():
        began, cpu = time.time(), resource.getrusage(resource.RUSAGE_SELF)
        result = call(defs.get_assets_def(name).op.compute_fn.decorated_fn)
        events = list(result) if inspect.isgenerator(result) else [result]
        rows = (events[0].metadata or {}).get("rows")
        used = resource.getrusage(resource.RUSAGE_SELF)
        stages[name] = {
            "start": began,
            "end": time.time(),
            "cpu_s": used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime,
            "rows": int(getattr(rows, "value", rows)) if rows is not None else None,
        }
    out.write_text(json.dumps(stages))


def measure_year(sites: list[str], year: int, pollutants: list[str], folder: Path, work: Path) -> dict:
    env, log = prepare_home(f"year-{len(sites)}", sites, folder, work)
    out = log.parent / "stages.json"
    wall, cpu, memory = run([sys.executable, __file__, "--child-stages", str(out), "--year", str(year), "--train", ",".join(pollutants)], env, log)
    stages = json.loads(out.read_text())
    for stage in stages.values():
        stage["seconds"] = stage["end"] - stage["start"]
        stage["rows_per_s"] = (stage["rows"] or 0) / stage["seconds"]
        stage["peak"] = memory.peak(stage["start"], stage["end"])
    through_silver = stages["silver_features"]["end"] - stages["raw_aurn"]["start"]
    return {"wall_s": wall, "cpu_s": cpu, "peak": memory.peak(), "stages": stages, "through_silver_s": through_silver,
            "silver_peak": memory.peak(stages["raw_aurn"]["start"], stages["silver_features"]["end"])}


# --- 2 and 3. what Dagster adds ------------------------------------------------------------------

def last_run_steps(env: dict) -> dict[str, dict]:
    """Per step of the newest run: its start and end, and where the asset's own work ended (its
    last progress line) before Dagster recorded the materializations."""
    import dagster as dg

    os.environ.update({k: env[k] for k in env if k.startswith("DAGSTER_")})
    with dg.DagsterInstance.get() as instance:
        (run_record,) = instance.get_runs(limit=1)
        steps: dict[str, dict] = {}
        for entry in instance.all_logs(run_record.run_id):
            if not entry.step_key:
                continue
            step = steps.setdefault(entry.step_key, {})
            event = entry.dagster_event
            if event is None:
                if entry.user_message.startswith(PROGRESS):
                    step["body_end"] = entry.timestamp
            elif event.event_type_value == "STEP_START":
                step["start"] = entry.timestamp
            elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                step["end"] = entry.timestamp
        return steps


def backfill(env: dict, log: Path, start: datetime, days: int) -> dict:
    last = start + timedelta(days=days) - timedelta(hours=1)
    wall, cpu, _ = dagster(["asset", "materialize", "--select", ",".join(STAGES), "--partition-range", f"{start:%Y-%m-%d-%H:%M}...{last:%Y-%m-%d-%H:%M}"], env, log)
    steps = last_run_steps(env)
    return {
        "partitions": days * 24,
        "wall_s": wall,
        "cpu_s": cpu,
        "bodies_s": sum(steps[s]["body_end"] - steps[s]["start"] for s in STAGES),
        "recording_s": sum(steps[s]["end"] - steps[s]["body_end"] for s in STAGES),
    }


def measure_dagster(sites: list[str], year: int, days: int, folder: Path, work: Path) -> dict:
    """A one-day and a ``days``-day single-run backfill: what each further partition costs (the
    difference over the difference in partitions, so start-up and the assets' fixed costs cancel)."""
    env, log = prepare_home(f"cli-{len(sites)}", sites, folder, work)
    dagster(["asset", "materialize", "--select", "site_registry"], env, log)
    short = backfill(env, log, datetime(year, 1, 1, tzinfo=timezone.utc), 1)
    long = backfill(env, log, datetime(year, 2, 1, tzinfo=timezone.utc), days)
    more = long["partitions"] - short["partitions"]
    return {
        "short": short,
        "long": long,
        "wall_per_partition_s": (long["wall_s"] - short["wall_s"]) / more,
        "cpu_per_partition_s": (long["cpu_s"] - short["cpu_s"]) / more,
        "recording_per_partition_s": (long["recording_s"] - short["recording_s"]) / more,
        "env": env,
        "log": log,
    }


def measure_per_partition_runs(cli: dict, year: int, count: int) -> dict:
    env, log = cli["env"], cli["log"]
    walls, cpus = [], []
    for i in range(count):
        hour = datetime(year, 1, 2, tzinfo=timezone.utc) + timedelta(hours=i)
        wall, cpu, _ = dagster(["asset", "materialize", "--select", ",".join(STAGES), "--partition", f"{hour:%Y-%m-%d-%H:%M}"], env, log)
        walls.append(wall)
        cpus.append(cpu)
    return {"runs": count, "mean_wall_s": sum(walls) / count, "mean_cpu_s": sum(cpus) / count}


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", default="10,50,150", help="site counts, comma-separated")
    parser.add_argument("--year", type=int, default=2024)
    parser.add_argument("--cli-sites", type=int, default=10, help="sites of the Dagster CLI runs (0: skip them)")
    parser.add_argument("--cli-days", type=int, default=7, help="days of the single-run backfill through the CLI (366: the year)")
    parser.add_argument("--slice-partitions", type=int, default=2, help="hourly partitions run one per run")
    parser.add_argument("--work", type=Path, default=None, help="where homes and tables go (default: a temporary folder)")
    parser.add_argument("--train", default="pm25", help="pollutants whose candidate is trained on the year, comma-separated")
    parser.add_argument("--child-stages", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    pollutants = [p for p in args.train.split(",") if p]
    if args.child_stages:
        stage_bodies(args.year, pollutants, args.child_stages)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="routeaq-scale-"))
    cache = work / "demo-network"
    hours = int((datetime(args.year + 1, 1, 1) - datetime(args.year, 1, 1)) / timedelta(hours=1))
    load = os.getloadavg()
    print(f"RouteAQ scale: {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Python {platform.python_version()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; work {work}", flush=True)
    summary = {}
    for n in [int(c) for c in args.sites.split(",") if c]:
        sites = scale_sites(n, args.year)
        folder = work / f"tables-{n}"
        generated = write_tables(sites, args.year, cache, folder)
        year = measure_year(sites, args.year, pollutants, folder, work)
        summary[n] = {k: v for k, v in year.items()}
        print(f"\n{n} sites x {args.year}, one window of {hours} hours (tables written in {generated:.0f} s, not timed); "
              f"{year['wall_s']:.0f} s wall, {year['cpu_s']:.0f} s CPU, peak {gib(year['peak'])}, load now {os.getloadavg()[0]:.1f}")
        for name, s in year["stages"].items():
            rows = f"{s['rows']:>10,} rows {s['rows_per_s']:>9,.0f} rows/s" if s["rows"] else f"{'':32s}"
            print(f"    {name:16s} {s['seconds']:7.1f} s wall {s['cpu_s']:7.1f} s CPU {rows}  peak {gib(s['peak'])}")
        silver_cpu = sum(year["stages"][s]["cpu_s"] for s in STAGES)
        print(f"    through silver: {year['through_silver_s']:.1f} s wall, {silver_cpu:.1f} s CPU, peak {gib(year['silver_peak'])}; "
              "training " + ", ".join(f"{p} {year['stages'][f'{p}_candidate']['seconds']:.1f} s wall ({year['stages'][f'{p}_candidate']['cpu_s']:.1f} s CPU)" for p in pollutants)
              + f"; all {len(pollutants)}: {sum(year['stages'][f'{p}_candidate']['seconds'] for p in pollutants) / 60:.1f} min", flush=True)
    if args.cli_sites:
        sites = scale_sites(args.cli_sites, args.year)
        folder = work / f"tables-{args.cli_sites}"
        write_tables(sites, args.year, cache, folder)
        cli = measure_dagster(sites, args.year, args.cli_days, folder, work)
        print(f"\nDagster CLI, {args.cli_sites} sites, single-run backfills on the PostgreSQL instance:")
        for run_ in (cli["short"], cli["long"]):
            print(f"    {run_['partitions']:5d} partitions: {run_['wall_s']:6.1f} s wall, {run_['cpu_s']:6.1f} s CPU (CLI process); "
                  f"assets' own work {run_['bodies_s']:.1f} s, recording materializations {run_['recording_s']:.1f} s")
        print(f"    each further partition: {cli['wall_per_partition_s'] * 1000:.0f} ms wall ({cli['recording_per_partition_s'] * 1000:.0f} ms of it recording), "
              f"{cli['cpu_per_partition_s'] * 1000:.0f} ms CPU -> for the year's {hours}: {cli['wall_per_partition_s'] * hours / 60:.1f} min wall, "
              f"{cli['cpu_per_partition_s'] * hours / 60:.1f} min CPU", flush=True)
        if args.slice_partitions:
            per = measure_per_partition_runs(cli, args.year, args.slice_partitions)
            print(f"One run per partition, {args.cli_sites} sites: {per['mean_wall_s']:.1f} s wall ({per['mean_cpu_s']:.1f} s CPU) per run "
                  f"-> {per['mean_wall_s'] * hours / 3600:.1f} h for the year's {hours} partitions", flush=True)
    print(json.dumps({n: {k: v for k, v in r.items() if k != "stages"} | {"stages": {s: {k: v for k, v in d.items() if k not in ("start", "end")} for s, d in r["stages"].items()}} for n, r in summary.items()}, default=str))


if __name__ == "__main__":
    main()
