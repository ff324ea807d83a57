"""Run a job or materialize assets as a run of the code location that ``workspace.yaml`` defines.

    python -m routeaq_assets.workspace_run --select raw_aurn,raw_weather --partition-range A...B
    python -m routeaq_assets.workspace_run --select pm25_drift_report --partition 2025-08-01-06:00
    python -m routeaq_assets.workspace_run --job train_job

It does what ``dagster asset materialize`` / ``dagster job execute -m routeaq_assets.definitions``
do (the run executes in this process, its events on the terminal), with one difference: the run records the workspace's
code location as its origin. ``dagster asset materialize`` records none (it takes no workspace),
(nor does ``dagster job execute``), so the Dagster UI, which loads ``workspace.yaml``, shows such runs as from "a different code
location": re-executing them warns, and the job's own Runs tab lists none of them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import dagster as dg
from dagster._cli.workspace.cli_target import get_repository_python_origin_from_cli_opts
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import CodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._core.workspace.load import location_origins_from_yaml_paths
from dagster._utils.hosted_user_process import recon_repository_from_origin
from dagster_shared.cli import PythonPointerOpts

from routeaq_assets.core.locks import file_lock

WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"
REPOSITORY_NAME = "__repository__"  # the name Dagster gives the repository of a module's ``Definitions``


def open_instance() -> dg.DagsterInstance:
    """The Dagster instance of ``DAGSTER_HOME``, opened by one process at a time. The first open
    of a new home creates Dagster's SQLite storage, and two processes creating it at once crash
    ("table secondary_indexes already exists"); later opens only check it."""
    home = os.environ.get("DAGSTER_HOME")
    if not home or not Path(home).is_dir():
        return dg.DagsterInstance.get()  # Dagster's own error, naming DAGSTER_HOME
    with file_lock(Path(home) / ".instance.lock", exclusive=True, timeout_s=300.0, what=f"Dagster instance {home}"):
        return dg.DagsterInstance.get()


def workspace_location(workspace: Path = WORKSPACE) -> CodeLocationOrigin:
    """The one code location ``workspace.yaml`` loads (the one the UI shows)."""
    origins = location_origins_from_yaml_paths([str(workspace)])
    if len(origins) != 1:
        raise ValueError(f"{workspace}: expected one code location, found {[o.location_name for o in origins]}")
    return origins[0]


def execute_in_workspace(instance: dg.DagsterInstance, job: str | None = None, select: list[str] | None = None, partition: str | None = None,
                         partition_range: tuple[str, str] | None = None, workspace: Path = WORKSPACE) -> dg.DagsterRun:
    """Run a job, or the selected assets (one partition, a single-run range, or unpartitioned), in
    this process as a run of the workspace's code location; the finished run, or an error if it failed."""
    if (job is None) == (select is None):
        raise ValueError("give a job or an asset selection, not both or neither")
    location = workspace_location(workspace)
    target = location.loadable_target_origin
    python_origin = get_repository_python_origin_from_cli_opts(
        PythonPointerOpts(module_name=target.module_name, attribute=target.attribute, working_directory=target.working_directory)
    )
    recon_repo = recon_repository_from_origin(python_origin)
    repo_def = recon_repo.get_definition()
    if job is not None:
        if not repo_def.has_job(job):
            raise ValueError(f"no job {job!r} in {location.location_name}")
        job_def, asset_keys = repo_def.get_job(job), None
    else:
        asset_keys = frozenset(dg.AssetSelection.from_coercible(select).resolve(repo_def.asset_graph))
        job_def = repo_def.get_implicit_job_def_for_assets(asset_keys)
        if job_def is None:
            raise ValueError(f"{','.join(select)}: the selected assets do not share one partitions definition")
    if partition is not None:
        tags = job_def.get_tags_for_partition_key(partition, selected_asset_keys=asset_keys)
    elif partition_range is not None:
        tags = {ASSET_PARTITION_RANGE_START_TAG: partition_range[0], ASSET_PARTITION_RANGE_END_TAG: partition_range[1]}
    else:
        tags = {}
    recon_job = recon_repo.get_reconstructable_job(job_def.name).with_repository_load_data(repo_def.repository_load_data)
    run = instance.create_run_for_job(
        job_def=recon_job.get_definition(),
        tags=tags,
        asset_selection=asset_keys,
        remote_job_origin=RemoteJobOrigin(RemoteRepositoryOrigin(location, REPOSITORY_NAME), job_def.name),
        job_code_origin=recon_job.get_python_origin(),
        repository_load_data=repo_def.repository_load_data,
    )
    result = execute_run(recon_job, run, instance)
    if not result.success:
        raise RuntimeError(f"run {run.run_id} of {job_def.name} ({job or ','.join(select)}) failed")
    return instance.get_run_by_id(run.run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", help="a job of the code location")
    parser.add_argument("--select", help="comma-separated asset keys")
    parser.add_argument("--partition", help="one partition key")
    parser.add_argument("--partition-range", help="START...END, for assets with a single-run backfill policy")
    args = parser.parse_args()
    if args.partition and args.partition_range:
        parser.error("give --partition or --partition-range, not both")
    bounds = tuple(args.partition_range.split("...")) if args.partition_range else None
    if bounds is not None and len(bounds) != 2:
        parser.error(f"--partition-range {args.partition_range!r}: expected START...END")
    try:
        with open_instance() as instance:
            run = execute_in_workspace(instance, args.job, args.select.split(",") if args.select else None, args.partition, bounds)
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(f"workspace_run: {exc}") from exc
    print(f"run {run.run_id} of {run.job_name} succeeded")


if __name__ == "__main__":
    main()
