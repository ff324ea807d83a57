"""Run a job of the code location that ``workspace.yaml`` defines, and wait for it to end.

    python -m routeaq_assets.workspace_run --job ingest_job --partition-range A...B
    python -m routeaq_assets.workspace_run --job monitoring_job --partition 2025-08-01-06:00
    python -m routeaq_assets.workspace_run --job train_job

It is Dagster's own ``dagster job launch -w workspace.yaml -j JOB`` with the partition tags
written for you, followed by a wait for the run's end (its status read from the instance). The
run records the workspace's code location as its origin, so the Dagster UI, which loads
``workspace.yaml``, lists it under its job and re-executes it without a warning
(``dagster asset materialize`` and ``dagster job execute`` record no code location). The embedded
instance launches runs at once (``DefaultRunCoordinator`` in dagster.yaml): the launch needs no
daemon, and the run executes in a process of its own beside the command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg

from routeaq_assets.adapters.locks import file_lock

WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"
DAGSTER = Path(sys.executable).with_name("dagster")
ENDED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def open_instance() -> dg.DagsterInstance:
    """The Dagster instance of ``DAGSTER_HOME``, opened by one process at a time. The first open
    of a new home creates Dagster's SQLite storage, and two processes creating it at once crash
    ("table secondary_indexes already exists"); later opens only check it."""
    home = os.environ.get("DAGSTER_HOME")
    if not home or not Path(home).is_dir():
        return dg.DagsterInstance.get()  # Dagster's own error, naming DAGSTER_HOME
    with file_lock(Path(home) / ".instance.lock", exclusive=True, timeout_s=300.0, what=f"Dagster instance {home}"):
        return dg.DagsterInstance.get()


def partition_tags(partition: str | None = None, partition_range: tuple[str, str] | None = None) -> dict[str, str]:
    """The run tags that select one partition, or a range run as one run (assets with a
    single-run backfill policy)."""
    if partition is not None:
        return {"dagster/partition": partition}
    if partition_range is not None:
        return {"dagster/asset_partition_range_start": partition_range[0], "dagster/asset_partition_range_end": partition_range[1]}
    return {}


def run_in_workspace(job: str, tags: dict[str, str] | None = None, workspace: Path = WORKSPACE, poll_s: float = 1.0) -> dg.DagsterRun:
    """Launch ``job`` of the workspace's code location with ``tags`` and wait for the run to end;
    the finished run, or ``RuntimeError`` naming the run when it did not succeed."""
    run_id = str(uuid.uuid4())
    with open_instance() as instance:  # created, if new, before the CLI opens it
        command = [str(DAGSTER), "job", "launch", "-w", str(workspace), "-j", job, "--run-id", run_id]
        if tags:
            command += ["--tags", json.dumps(tags)]
        launched = subprocess.run(command)
        run = instance.get_run_by_id(run_id)
        if launched.returncode != 0 and run is None:
            raise RuntimeError(f"dagster job launch -j {job} failed (exit {launched.returncode}) before creating a run")
        while run is not None and run.status not in ENDED:
            time.sleep(poll_s)
            run = instance.get_run_by_id(run_id)
    if run is None or run.status != dg.DagsterRunStatus.SUCCESS:
        raise RuntimeError(f"run {run_id} of {job} ended {run.status.value if run else 'unrecorded'}: see it in the Dagster UI")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", required=True, help="a job of the code location")
    parser.add_argument("--partition", help="one partition key")
    parser.add_argument("--partition-range", help="START...END, for jobs whose assets have a single-run backfill policy")
    args = parser.parse_args()
    if args.partition and args.partition_range:
        parser.error("give --partition or --partition-range, not both")
    bounds = tuple(args.partition_range.split("...")) if args.partition_range else None
    if bounds is not None and len(bounds) != 2:
        parser.error(f"--partition-range {args.partition_range!r}: expected START...END")
    try:
        run = run_in_workspace(args.job, partition_tags(args.partition, bounds))
    except RuntimeError as exc:
        raise SystemExit(f"workspace_run: {exc}") from exc
    print(f"run {run.run_id} of {run.job_name} succeeded")


if __name__ == "__main__":
    main()
