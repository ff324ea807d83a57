"""Progress of long stages, as lines in the run log.

A backfill of a year of the whole network runs for minutes inside one step; these lines say how
far it is (units done of all, elapsed, an estimate of what is left) without flooding the log:
a line at every tenth of the way and at least every ``every_s`` seconds, plus the last unit.
Every line starts with ``PREFIX`` so that a reader of the log (``make demo``) can pick them out.
"""

from __future__ import annotations

import time
from typing import Callable

PREFIX = "progress"


class Progress:
    """Counts the units of one stage (site-years read, pollutants built) and reports them."""

    def __init__(self, stage: str, total: int, unit: str, log: Callable[[str], None], every_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.stage, self.total, self.unit, self.log = stage, total, unit, log
        self.every_s, self.clock = every_s, clock
        self.done = 0
        self.started = self._last_line = clock()
        self._last_tenth = 0

    def advance(self, what: str = "", n: int = 1) -> None:
        """``n`` more units are done (``what``: the unit just finished, e.g. ``MY1 2024``)."""
        self.done += n
        now = self.clock()
        tenth = int(10 * self.done / self.total) if self.total else 10
        if self.done >= self.total or tenth > self._last_tenth or now - self._last_line >= self.every_s:
            self._last_tenth, self._last_line = tenth, now
            elapsed = now - self.started
            left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            share = 100 * self.done / self.total if self.total else 100.0
            tail = f", about {left:.0f} s left" if self.done < self.total else ""
            last = f" ({what})" if what else ""
            self.log(f"{PREFIX} {self.stage}: {self.done}/{self.total} {self.unit} ({share:.0f} %){last}, {elapsed:.0f} s{tail}")

    def note(self, message: str) -> None:
        """A phase of the stage (reading, writing), with the time since the stage began."""
        self.log(f"{PREFIX} {self.stage}: {message}, {self.clock() - self.started:.0f} s")
