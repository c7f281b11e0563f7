"""The bounded byte pipe between the request threads and the publishing thread.

One upload can span several requests (a resumed upload is fed by the next
``PUT``), while one publishing thread reads it through the archive walker and
the pipeline. The pipe is bounded so a fast client waits for a slow registry
instead of filling memory, and it counts every byte it accepted: that count is
the resume offset, because an accepted byte is never lost (it is either in the
buffer or already consumed by the pipeline).
"""

from __future__ import annotations

import collections
import threading

CHUNK = 1 << 20  # what ``read()`` returns when asked for "everything"
FEED_CAPACITY = 8 << 20  # bytes buffered between the socket and the pipeline


class Aborted(Exception):
    """The upload was abandoned (replaced, expired, over a limit): the pipeline must stop."""


class Feed:
    """The body of one upload, across requests; ``read`` is the ``lib.archive.Reader`` side."""

    def __init__(self, capacity: int = FEED_CAPACITY):
        self.capacity = capacity
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self.received = 0
        self._eof = False
        self._aborted: str | None = None
        self._consumer_done = False

    def write(self, data: bytes) -> bool:
        """Queue ``data``, waiting for room; False (nothing queued) once the consumer has stopped."""
        with self._cond:
            while self._buffered >= self.capacity and not self._consumer_done:
                self._cond.wait()
            if self._consumer_done:
                return False
            self._chunks.append(data)
            self._buffered += len(data)
            self.received += len(data)
            self._cond.notify_all()
            return True

    def end(self) -> None:
        """The whole body has arrived: ``read`` returns b"" once the buffer is empty."""
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def abort(self, why: str) -> None:
        """Make the consumer's next ``read`` raise ``Aborted(why)``."""
        with self._cond:
            self._aborted = why
            self._cond.notify_all()

    def consumer_finished(self) -> None:
        """The pipeline stopped: drop the buffer and refuse later writes (unblocks a waiting writer)."""
        with self._cond:
            self._consumer_done = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes, blocking until some arrive; b"" at the end of the upload."""
        if n is None or n < 0:
            n = CHUNK
        with self._cond:
            while not self._chunks and not self._eof and self._aborted is None:
                self._cond.wait()
            if self._aborted is not None:
                raise Aborted(self._aborted)
            if not self._chunks:
                return b""
            out = self._take(n)
            self._buffered -= len(out)
            self._cond.notify_all()
            return out

    def _take(self, n: int) -> bytes:
        """Pop at most ``n`` buffered bytes, joining chunks only when the first is shorter."""
        first = self._chunks.popleft()
        if len(first) >= n or not self._chunks:
            if len(first) > n:
                self._chunks.appendleft(first[n:])
            return first[:n]
        parts, size = [first], len(first)
        while self._chunks and size < n:
            c = self._chunks.popleft()
            if size + len(c) > n:
                self._chunks.appendleft(c[n - size :])
                c = c[: n - size]
            parts.append(c)
            size += len(c)
        return b"".join(parts)
