"""Writing a file so that a reader sees the old version or the new one, never half of one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path | str, data: bytes | Callable[[Path], None]) -> Path:
    """Replace ``path`` with ``data``: bytes, or a function that writes the new version to the
    path it is given (for writers that need a file name: Parquet, RData, a download).

    The new version is written next to ``path`` under a name of its own, so concurrent writers
    never share a partial file, then renamed over ``path`` (atomic on one file system). If the
    write fails the partial file is removed and ``path`` keeps its previous version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            partial.write_bytes(data)
        else:
            data(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def written_within(path: Path, seconds: float, now: float) -> bool:
    """Whether ``path`` exists and was written less than ``seconds`` before ``now`` (a
    ``time.time()``). A file stamped after ``now`` (the clock was set back since it was written) is
    of unknown age: not within, so a cache asks again rather than trusting the copy past its time."""
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return 0 <= age < seconds
