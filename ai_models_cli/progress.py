"""A one-line progress bar on stderr: percent, bytes, rate and ETA.

Own code rather than a dependency: the CLI must run with nothing but the
standard library when given ``--url`` and ``--token-file``.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TextIO

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human(n: float) -> str:
    for unit in UNITS:
        if abs(n) < 1024 or unit == UNITS[-1]:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Redrawn in place on a terminal; elsewhere (CI logs) a line per 10 %."""

    def __init__(self, total: int, stream: TextIO | None = None, *, window: float = 5.0) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()
        self.sent = 0  # bytes written to the network, all attempts (the rate counts resent bytes too)
        self.position = 0
        self._drawn = 0.0
        self._last_decile = -1

    def moved(self, position: int, sent: int = 0) -> None:
        """The upload stands at ``position`` after writing ``sent`` more bytes."""
        now = time.monotonic()
        self.position = position
        self.sent += sent
        self.samples.append((now, self.sent))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        if self.tty and now - self._drawn >= 0.1:
            self._drawn = now
            self.stream.write("\r" + self.line() + "\033[K")
            self.stream.flush()
        elif not self.tty and self.total and position * 10 // self.total != self._last_decile:
            self._last_decile = position * 10 // self.total
            self.stream.write(self.line() + "\n")

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def line(self) -> str:
        pct = 100.0 * self.position / self.total if self.total else 100.0
        rate = self.rate()
        eta = clock((self.total - self.position) / rate) if rate > 0 else "--:--"
        return f"{pct:5.1f}% {human(self.position)} / {human(self.total)}  {human(rate)}/s  ETA {eta}"

    def note(self, message: str) -> None:
        """A message on its own line (a retry), without losing the bar."""
        self.stream.write(("\r\033[K" if self.tty else "") + message + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\033[K\n")
            self.stream.flush()
