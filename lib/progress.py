"""Progress of a long transfer: bytes done / total, rate, ETA.

The pipeline calls ``advance`` for every chunk; lines are emitted at most
every ``interval`` seconds, so a 16 GB model prints a few hundred lines, not
millions. ``on_percent`` lets the job layer mirror the percentage onto its
Job's ``ai.deckhouse.io/progress`` annotation.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human(n: float) -> str:
    for unit in UNITS:
        if abs(n) < 1024 or unit == UNITS[-1]:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass
class Progress:
    total: int | None = None
    interval: float = 2.0
    stream: TextIO | None = None
    on_percent: Callable[[int], None] | None = None
    clock: Callable[[], float] = time.monotonic
    done: int = 0
    _started: float = field(default=0.0, init=False)
    _last: float = field(default=0.0, init=False)
    _last_percent: int = field(default=-1, init=False)

    def __post_init__(self) -> None:
        self._started = self._last = self.clock()

    def add_total(self, n: int) -> None:
        self.total = (self.total or 0) + n

    def percent(self) -> int | None:
        if not self.total:
            return None
        return min(100, int(self.done * 100 / self.total))

    def line(self) -> str:
        elapsed = max(self.clock() - self._started, 1e-9)
        rate = self.done / elapsed
        pct = self.percent()
        if pct is None or not self.total:
            return f"progress: {human(self.done)} at {human(rate)}/s"
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_s = f"{eta:.0f}s" if eta != float("inf") else "?"
        return (
            f"progress: {human(self.done)} / {human(self.total)} ({pct}%) "
            f"at {human(rate)}/s, ETA {eta_s}"
        )

    def advance(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self.emit()

    def emit(self) -> None:
        print(self.line(), file=self.stream or sys.stderr, flush=True)
        pct = self.percent()
        if self.on_percent and pct is not None and pct != self._last_percent:
            self._last_percent = pct
            try:
                self.on_percent(pct)
            except Exception:  # progress is best effort; never fail a publish for it
                pass
