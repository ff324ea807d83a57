"""The cost of one hour of the live loop: ingestion (raw_aurn, raw_weather, silver_features),
publish (online_features), scoring (forecast_performance) and drift (three drift reports), each
a Dagster run in process on a fresh home, for the demo's sites and for N sites.

    .venv/bin/python bench/hourly_cycle.py                 # the demo's six sites
    .venv/bin/python bench/hourly_cycle.py --sites 150     # the first 150 AURN sites of the packaged metadata

Each home is prepared first (a backfill of ``--days`` and a first training, not timed); then
``--hours`` consecutive hours are run one by one and the median per stage is printed.
"""

import argparse
import os
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

END = datetime(2025, 8, 1, 12, tzinfo=timezone.utc)
STAGES = {"ingest": "ingest_job", "publish": "publish_job", "score+drift": "monitoring_job"}


def sites(count: int) -> list[str]:
    from routeaq_assets.core.environment import DEFAULT_DEMO_SITES
    from routeaq_assets.core.sites import load_packaged_registry

    if count <= len(DEFAULT_DEMO_SITES):
        return list(DEFAULT_DEMO_SITES[:count])
    registry = load_packaged_registry()
    measuring = registry.filter(registry["end_date"].is_null()) if "end_date" in registry.columns else registry
    return sorted(measuring["site_id"].unique().to_list())[:count]


def run(site_ids: list[str], days: int, hours: int) -> dict[str, list[float]]:
    import dagster as dg

    home = Path(tempfile.mkdtemp(prefix="routeaq-bench-")) / "routeaq"
    os.environ.update({"ROUTEAQ_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "ROUTEAQ_SITES": ",".join(site_ids), "OMP_WAIT_POLICY": "PASSIVE"})
    (home / "dagster").mkdir(parents=True)
    from routeaq_assets.core.environment import load_settings
    from routeaq_assets.definitions import build_definitions
    from routeaq_assets.demo_drift import range_tags
    from routeaq_assets.environments import local_resources

    defs = build_definitions(local_resources(load_settings()))
    instance = dg.DagsterInstance.ephemeral()
    first = END - timedelta(hours=hours)
    sites_config = {"ops": {"site_registry": {"config": {"sites": site_ids}}}}
    dg.materialize([defs.get_assets_def("site_registry")], resources=defs.resources, run_config=sites_config, instance=instance)
    defs.resolve_job_def("ingest_job").execute_in_process(instance=instance, tags=range_tags(first - timedelta(days=days), first - timedelta(hours=1)))
    tolerance = {"ops": {f"{p}_candidate": {"config": {"coverage_tolerance": 0.2}} for p in ("pm25", "no2", "o3")}}
    defs.resolve_job_def("train_job").execute_in_process(instance=instance, run_config=tolerance)
    timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for k in range(hours):
        hour = first + timedelta(hours=k)
        for stage, job in STAGES.items():
            began = time.perf_counter()
            tags = {} if job == "publish_job" else range_tags(hour, hour)
            defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags)
            timings[stage].append(time.perf_counter() - began)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=6)
    parser.add_argument("--days", type=int, default=30, help="days backfilled and trained on before the timed hours")
    parser.add_argument("--hours", type=int, default=3, help="hours timed, one after another")
    args = parser.parse_args()
    site_ids = sites(args.sites)
    timings = run(site_ids, args.days, args.hours)
    print(f"{len(site_ids)} sites, {args.hours} hours, {os.cpu_count()} CPUs:")
    total = 0.0
    for stage, values in timings.items():
        median = statistics.median(values)
        total += median
        print(f"  {stage:12s} median {median:6.1f} s  ({', '.join(f'{v:.1f}' for v in values)})")
    print(f"  {'hour':12s} median {total:6.1f} s")


if __name__ == "__main__":
    main()
