"""Debian packages a test needs, installed with apt-get when missing (as root), or a reason why not.

    problem = apt_install(["prometheus"], ["/usr/bin/promtool"])
    if problem: pytest.skip(problem)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def _apt_get(*args: str) -> subprocess.CompletedProcess:
    # wait for another apt-get (a parallel test run) instead of failing on its lock
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def apt_install(packages: list[str], executables: list[str]) -> str | None:
    """Install ``packages`` unless every one of ``executables`` exists; None when they all do
    afterwards, else what went wrong, in words."""
    if all(Path(e).exists() for e in executables):
        return None
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return f"{', '.join(executables)} missing and cannot be installed here (needs root and apt-get: apt-get install -y {' '.join(packages)})"
    update = _apt_get("update")
    install = _apt_get("install", "-y", "--no-install-recommends", *packages)
    missing = [e for e in executables if not Path(e).exists()]
    if install.returncode != 0 or missing:
        return f"apt-get install -y {' '.join(packages)} did not give {missing}: {(install.stderr or update.stderr).strip()[-500:]}"
    return None
