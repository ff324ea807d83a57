"""The product uses Dagster's public API only, but for one adapter (the run launcher's health
check), whose private names this test pins so that an upgrade that moves them fails here."""

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO

ADAPTER = "routeaq_assets/run_launcher.py"


def private_dagster_imports(path: Path) -> list[str]:
    """``module:line name`` of each import of a ``dagster._`` module (any dagster package)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        found += [f"{path.relative_to(REPO)}:{node.lineno} {name}" for name in names if name.split(".")[0].startswith("dagster") and "._" in name]
    return found


def test_no_private_dagster_import_outside_the_run_launcher_adapter():
    files = sorted([*REPO.glob("routeaq_assets/**/*.py"), *REPO.glob("routeaq_serving/**/*.py")])
    assert len(files) > 40
    found = [hit for path in files for hit in private_dagster_imports(path)]
    assert [hit for hit in found if not hit.startswith(ADAPTER)] == []
    assert [hit.split()[1] for hit in found] == ["dagster._core.launcher"]  # the adapter's one import


def test_the_adapter_imports_and_tells_a_live_process_from_a_dead_one():
    from routeaq_assets.run_launcher import LocalProcessRunLauncher, process_alive_since

    assert LocalProcessRunLauncher().supports_check_run_worker_health
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_alive_since(os.getpid(), time.time())
    assert not process_alive_since(child.pid, time.time())
