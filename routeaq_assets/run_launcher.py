"""The embedded instance's run launcher: Dagster's default launcher, plus a health check of each
run's process so that run monitoring (``run_monitoring`` in dagster.yaml) can fail a run whose
process died (SIGKILL, out of memory, a closed terminal) and free its pool slots.

Dagster's default launcher cannot tell a dead run from a live one; its code server notices only
the deaths of the run workers it started itself, and only while it lives. Runs started by the
CLI (``dagster asset materialize``, the demo) have no code server at all. Every RouteAQ run
executes its steps in one process (the in-process executor), which logs its pid; this launcher
checks that pid on this machine. It is for the embedded, single-machine instance only: with run
workers on other machines use a launcher that checks its own workers (K8sRunLauncher does).

This module is the product's one use of Dagster's private modules: a run launcher reports a
run's health as ``CheckRunHealthResult``/``WorkerStatus``, which Dagster exports only from
``dagster._core.launcher`` (run monitoring has no public hook). ``tests/test_public_apis.py``
pins it: it fails when another private import appears, or when these names move.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return None
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    return boot + int(fields[19]) / _CLOCK_TICKS


def process_alive_since(pid: int, since: float) -> bool:
    """Whether process ``pid`` is alive and is the one that logged at ``since`` (a pid that was
    reused by a process started later does not count)."""
    if not Path("/proc").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    started = _process_started_at(pid)
    return started is not None and started <= since + 1.0  # /proc start times have 1/CLK_TCK resolution


class LocalProcessRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose runs' processes run monitoring can check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        events = self._instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
        with_pid = [
            e for e in events if e.dagster_event is not None and "pid" in (e.dagster_event.engine_event_data.metadata or {})
        ]
        if not with_pid:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no process logged yet")
        last = with_pid[-1]
        pid = int(last.dagster_event.engine_event_data.metadata["pid"].value)
        if process_alive_since(pid, last.timestamp):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"process {pid} is alive", run_worker_id=str(pid))
        logged = datetime.fromtimestamp(last.timestamp, timezone.utc).isoformat(timespec="seconds")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run's process {pid} (logged at {logged}) is gone: killed or crashed without ending the run",
            run_worker_id=str(pid),
        )
