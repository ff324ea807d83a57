"""Append-only prediction log: one JSON line per prediction (the predictions contract, built by ``core.predictions``), one file per
UTC day. Each line is written with a single ``write`` on an ``O_APPEND`` descriptor, so it is on
disk in the kernel's hands the moment the response is sent and survives a crash of the service."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from routeaq_assets.core.predictions import prediction_lines


class PredictionLog:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._day: str | None = None
        self._fd: int | None = None

    def _descriptor(self, now: datetime) -> int:
        day = now.strftime("%Y-%m-%d")
        if day != self._day:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = os.open(self.folder / f"predictions-{day}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._day = day
        return self._fd

    def append(self, records: list[dict]) -> None:
        now = datetime.now(timezone.utc)
        os.write(self._descriptor(now), prediction_lines(records, now))
