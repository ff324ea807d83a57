"""A cross-process reader/writer lock on a file, for the embedded DuckDB warehouse.

DuckDB lets one process write a database file or many processes read it, never both at once,
and a second opener fails at once ("Could not set lock on file"). Every warehouse connection
first takes this lock on ``<database>.lock``: shared to read, exclusive to write. Openers then
wait their turn (up to a timeout) instead of failing. ``flock`` locks belong to the open file,
so threads of one process queue as separate processes do, and the kernel releases a lock when
its process dies (a killed run leaves no stale lock).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

log = logging.getLogger("routeaq.warehouse")
POLL_S = 0.01
ANNOUNCE_AFTER_S = 5.0  # log once that a connection is waiting, after this long


class LockTimeout(TimeoutError):
    """The lock was not granted in time; the message names who waited for what, and the
    last writer (``holder``: its pid, command and since when)."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


def _describe_self(mode: str) -> str:
    argv = sys.argv or ["python"]
    program = f"python {argv[0]}" if argv[0].startswith("-") or not argv[0] else Path(argv[0]).name  # `python -c`, or a script
    command = " ".join([program, *argv[1:5]])
    return f"pid {os.getpid()} ({command}) {mode} since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


@contextmanager
def file_lock(path: Path, *, exclusive: bool, timeout_s: float, what: str) -> Iterator[None]:
    """Hold ``path`` shared (``exclusive=False``) or exclusive for the ``with`` block, waiting up
    to ``timeout_s``. ``what`` names the protected thing in messages.

    Writers go first: a writer holds ``<path>.gate`` while it waits, and readers pass that gate
    before they take their shared lock, so a stream of short reads cannot starve a writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "writing" if exclusive else "reading"
    deadline = time.monotonic() + timeout_s
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        gate = os.open(path.with_name(path.name + ".gate"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _acquire(gate, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, deadline, timeout_s, what, mode, fd)
            if exclusive:
                _acquire(fd, fcntl.LOCK_EX, deadline, timeout_s, what, mode, fd)
        finally:
            os.close(gate)  # a reader only passes the gate; a writer keeps its turn with the lock
        if exclusive:  # who writes, for the messages of those who wait
            os.ftruncate(fd, 0)
            os.pwrite(fd, _describe_self(mode).encode(), 0)
        else:
            _acquire(fd, fcntl.LOCK_SH, deadline, timeout_s, what, mode, fd)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, operation: int, deadline: float, timeout_s: float, what: str, mode: str, lock_fd: int) -> None:
    announce_at = time.monotonic() + ANNOUNCE_AFTER_S
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            now = time.monotonic()
            if now >= deadline:
                holder = _last_writer(lock_fd)
                raise LockTimeout(
                    f"{what}: pid {os.getpid()} waited {timeout_s:g} s to open it for {mode} and gave up: another process "
                    f"held it all that time (last writer: {holder}). Retry when it has finished, or raise the timeout.",
                    holder,
                ) from None
            if announce_at and now >= announce_at:
                log.warning(f"{what}: pid {os.getpid()} waits to open it for {mode}; another process holds it (last writer: {_last_writer(lock_fd)})")
                announce_at = 0.0
            time.sleep(POLL_S)


def _last_writer(fd: int) -> str:
    text = os.pread(fd, 512, 0).decode(errors="replace").strip()
    return text or "none recorded"
