"""Append-only prediction log: one JSON line per prediction (the predictions contract, built by
``core.predictions``). Each line is written with a single ``write`` on an ``O_APPEND``
descriptor, so it is on disk in the kernel's hands the moment the response is sent and survives
a crash of the service.

Embedded (no ``shared`` folder): one file per UTC day, ``predictions-YYYY-MM-DD.jsonl``.

Production (``shared``: the S3 folder of ``adapters.shared``): a request still costs one local
``write``, never an S3 call. Lines go to a local chunk, ``chunks/<name>-<opened>.jsonl``, held
under an exclusive ``flock`` while it is open; ``flush`` (on a timer in the service, and at
shutdown) closes it and ships every chunk nobody holds, the pod's own and any that a crashed
process left, as immutable objects (``core.predictions``: one per forecast day). A chunk is
deleted only once all its objects are stored; one that fails to upload stays and the next
flush ships it again, under the same names, so nothing is lost or doubled."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path

from routeaq_assets.adapters.shared import SharedFolder
from routeaq_assets.core.predictions import chunk_by_day, prediction_lines

log = logging.getLogger("routeaq.serving")
CHUNKS = "chunks"


class PredictionLog:
    def __init__(self, folder: Path, shared: SharedFolder | None = None, name: str | None = None):
        self.folder = Path(folder)
        self.shared = shared
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"  # unique per pod and process
        (self.folder / CHUNKS if shared else self.folder).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # appends (event loop and thread pool) and the flushing timer
        self._path: Path | None = None
        self._fd: int | None = None
        self.problem: str | None = None  # why the last append was not logged; None once one fits
        self._unlogged = 0  # predictions not logged in the episode ``problem`` describes

    def _target(self, now: datetime) -> Path:
        if self.shared is None:
            return self.folder / f"predictions-{now:%Y-%m-%d}.jsonl"
        return self._path or self.folder / CHUNKS / f"{self.name}-{now:%Y%m%dT%H%M%S%fZ}.jsonl"

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the chunk's lock: it can be shipped
        self._fd, self._path = None, None

    def append(self, records: list[dict]) -> bool:
        """Log ``records``; False when the disk would not take them (full, or over a quota). Then
        the file is cut back to its last whole line and ``problem`` says what happened and how
        many predictions went unlogged; the service answers on, and the next append that fits
        clears ``problem``."""
        now = datetime.now(timezone.utc)
        data = prediction_lines(records, now)
        with self._lock:
            path = self._target(now)
            try:
                if path != self._path:
                    self._close()
                    self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    if self.shared is not None:
                        fcntl.flock(self._fd, fcntl.LOCK_EX)  # an open chunk is never shipped
                    self._path = path
                self._write_whole(data)
            except OSError as exc:
                first = self.problem is None
                self._unlogged = (0 if first else self._unlogged) + len(records)
                self.problem = f"{self._unlogged} predictions not logged to {path}: {exc.strerror or exc}"
                if first:  # once per episode: a full disk would otherwise log at every request
                    log.error("prediction log: %s; answering on without logging until it fits again", self.problem)
                return False
            if self.problem is not None:
                log.warning("prediction log: writing again to %s after %d predictions were not logged", path, self._unlogged)
                self.problem = None
        return True

    def _write_whole(self, data: bytes) -> None:
        """One ``write`` of whole lines, or none: a short write (the disk filled during it) is cut
        back to where it began, so the file never ends in a torn line. This process is the
        file's one writer (a day file has one service process; a chunk is this process's own)."""
        end = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, data)
        except OSError:
            os.ftruncate(self._fd, end)
            raise
        if written != len(data):
            os.ftruncate(self._fd, end)
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({written} of {len(data)} bytes written, cut back)")

    def flush(self) -> int:
        """Production: close the open chunk and ship every chunk not held by a writer. Returns how
        many chunks are still waiting (S3 did not take them; a later flush tries again)."""
        if self.shared is None:
            return 0
        with self._lock:
            self._close()
        waiting = sorted((self.folder / CHUNKS).glob("*.jsonl"))
        for i, path in enumerate(waiting):
            try:
                self._ship(path)
            except Exception as exc:  # S3 down or refusing: the chunks stay for the next flush
                log.warning("prediction log: %d chunks wait for %s: %s: %s", len(waiting) - i, self.shared.uri, type(exc).__name__, exc)
                return len(waiting) - i
        return 0

    def _ship(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # shipped by another process since the listing
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live writer's open chunk
                return
            if os.fstat(fd).st_nlink == 0:  # shipped and deleted while this waited for the lock
                return
            for day, lines in chunk_by_day(path.read_bytes()).items():
                self.shared.put(f"day={day}/{path.name}", lines)
            path.unlink()
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the open file; in production ship what is waiting (at shutdown)."""
        self.flush()
        with self._lock:
            self._close()


def log_answers(service, records: list[dict]) -> None:  # noqa: ANN001 - the RouteAQ service
    """Log what the service answered; a disk that will not take it is a readiness problem
    (``problems.prediction_log``), never a failed answer (``PredictionLog.append``)."""
    service.prediction_log.append(records)
    service.forecasts.report("prediction_log", service.prediction_log.problem)
