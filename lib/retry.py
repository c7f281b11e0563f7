"""One retry vocabulary for every loop in ``lib`` that tries again after a failure.

A ``RetryPolicy`` says how hard to try (tries per streak, exponential backoff,
an optional jitter, a time budget); ``Attempts`` is one streak of tries under
it. Callers keep their own decision of *what* is worth retrying — a 5xx, a
dropped connection, a lost upload session — and hand the *when* and *whether
again* to ``Attempts.failed``, so the registry client, the internet sources
and the blob pull back off the same way and are bounded the same way.

No I/O here besides the injected ``sleep``; tests pass a list's ``append``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``attempts`` tries per streak, started within ``total`` seconds."""

    attempts: int = 5
    base_delay: float = 0.5  # the first wait; doubled after every further failure
    max_delay: float = 8.0
    total: float = 120.0  # no new try once a streak is this old (math.inf: no budget)
    jitter: bool = False  # draw each wait from [delay/2, delay] (many clients, one server)

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """The wait after the ``failures``-th failure in a row (1-based)."""
        d = min(self.max_delay, self.base_delay * (2 ** max(0, failures - 1)))
        return d * (0.5 + rand() / 2) if self.jitter else d


UNBOUNDED_TIME = math.inf


class Attempts:
    """One streak of tries: count failures, wait between them, say when to stop.

    ``failed()`` records a failure and, when the policy allows another try,
    sleeps and returns True; otherwise it returns False at once (no pointless
    last wait). ``succeeded()`` ends the streak: progress resets the count.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.failures = 0
        self._sleep = sleep
        self._clock = clock
        self._started = 0.0

    def failed(self, wait: float | None = None) -> bool:
        """Another try is allowed (after sleeping ``wait``, or the policy's backoff)?"""
        now = self._clock()
        if self.failures == 0:
            self._started = now
        self.failures += 1
        if self.failures >= self.policy.attempts or now - self._started > self.policy.total:
            return False
        pause = self.policy.delay(self.failures) if wait is None else wait
        if pause > 0:
            self._sleep(pause)
        return True

    def succeeded(self) -> None:
        self.failures = 0
