"""`Progress`: the one progress reporter of the simulator runs (backfill, replay, live, load).

Count, rate and, with a total, share done and ETA. On a terminal one line redrawn in place
(``\\r``) every half second; otherwise a log line on the ``simulators`` logger every `every`
seconds, so logs stay readable. ``every=None``: off.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger("simulators")


class Progress:
    """``update(done)`` as often as you like; it reports at most every `every` seconds."""

    def __init__(self, label: str, total: int | None, unit: str, every: float | None = 5.0) -> None:
        self.label, self.total, self.unit, self.on = label, total, unit, every is not None
        self.terminal = sys.stderr.isatty()
        self.every = 0.5 if self.terminal else every or 0.0
        self.start = self.last = time.monotonic()
        self.last_done = 0

    def update(self, done: int, extra: Callable[[], str]) -> None:
        """`extra`: more to say (called only when reporting)."""
        now = time.monotonic()
        if not self.on or now - self.last < self.every:
            return
        rate = (done - self.last_done) / (now - self.last)
        self.last, self.last_done = now, done
        text = f"{self.label}: {done} {self.unit}"
        if self.total:
            overall = done / (now - self.start)
            eta = f"{(self.total - done) / overall:.0f} s" if overall > 0 else "?"
            text += f" of {self.total} ({done / self.total:.0%}), ETA {eta}"
        text += f", {rate:.0f} {self.unit}/s, {extra()}"
        if self.terminal:
            sys.stderr.write(f"\r{text}\x1b[K")
            sys.stderr.flush()
        else:
            log.info("%s", text)

    def close(self) -> None:
        if self.terminal and self.last_done:
            sys.stderr.write("\n")
