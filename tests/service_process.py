"""A real ``bentoml serve`` of the forecast service on loopback, for end-to-end and browser tests.

    with bentoml_serve(home, log=home / "serve.log") as url:      # waits for GET /health == 200
        requests.get(f"{url}/predict" ...)

    with bentoml_serve(home, log=..., ready_status=503, env={...}) as url:   # a service with no model
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from conftest import REPO, home_env

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate a server a test started, and kill it if it does not end in ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_answer(process: subprocess.Popen, url: str, log: Path, what: str, timeout: float, ready: int | None = None) -> bool:
    """Poll ``url`` every half second until it answers (with status ``ready`` when given): True.
    False when ``process`` exits first (the caller reads its log). Past ``timeout`` the process is
    stopped and the test fails, naming ``what`` with the end of its log."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        try:
            status = requests.get(url, timeout=2).status_code
            if ready is None or status == ready:
                return True
        except requests.RequestException:  # still starting
            pass
        if time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"{what} did not answer {url} in {timeout:.0f} s: " + log.read_text()[-3000:])
        time.sleep(0.5)
    return False


PORT_TAKEN = "Address already in use"
START_ATTEMPTS = 3


@contextmanager
def bentoml_serve(
    home: Path, log: Path, env: dict[str, str] | None = None, ready_status: int = 200, timeout: float = 180, base_env: dict[str, str] | None = None
) -> Iterator[str]:
    """Start the service over ``home``, wait until ``GET /health`` answers ``ready_status``, yield
    its URL, and stop it on exit. ``env`` adds to (or overrides) the home's environment, which
    starts from ``base_env`` (default: this process's environment).

    A port is free when chosen and may be taken before the server binds it: by another test
    worker's server, or by BentoML's process manager, which picks its own control port the same
    way. A start that fails only because its port was taken starts again on new ports."""
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log, "w") as output:
            process = subprocess.Popen(
                [str(BIN / "bentoml"), "serve", "routeaq_serving.service:RouteAQ", "--port", str(port), "--host", "127.0.0.1"],
                env={**(os.environ if base_env is None else base_env), **home_env(home), **(env or {})}, cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
            )
        try:
            if not wait_for_answer(process, f"{url}/health", log, "bentoml serve", timeout, ready=ready_status):
                said = log.read_text()
                assert PORT_TAKEN in said and attempt < START_ATTEMPTS, said[-3000:]
                continue  # its port was taken between choosing and binding: new ports
            yield url
            return
        finally:
            stop(process)
