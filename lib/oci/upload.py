"""The state of one streamed blob upload, kept apart from the HTTP calls that drive it.

``UploadState`` pulls the caller's chunks (hashing each byte once, when it is
pulled), holds the latest ``window`` unacknowledged bytes for a resume, and
counts what the registry acknowledged; ``PatchBody`` is the body of one
PATCH: held bytes first, then fresh ones pulled while the request streams.
No I/O here besides the caller's iterator.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Iterator


class SourceFailed(Exception):
    """Internal: the caller's chunk iterator raised. Wrapped so that an ``OSError`` from the
    source is not mistaken by urllib3 for a broken connection (and retried)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class SourceSizeMismatch(Exception):
    def __init__(self, count: int):
        super().__init__(f"source yielded {count} bytes")
        self.count = count


class PatchBody:
    """Body of one PATCH: held bytes from ``send_from`` on, then fresh bytes pulled from the source.

    Has ``__len__`` so requests sends a Content-Length instead of chunked encoding.
    """

    def __init__(self, upload: UploadState, send_from: int, end: int):
        self.upload, self.send_from, self.end = upload, send_from, end

    def __len__(self) -> int:
        return self.end - self.send_from

    def __iter__(self) -> Iterator[memoryview | bytes]:
        u = self.upload
        pos = u.held_start
        for piece in list(u.held):
            n = len(piece)
            if pos + n > self.send_from:
                yield piece[max(0, self.send_from - pos) : self.end - pos]
            pos += n
            if pos >= self.end:
                return
        while u.read_total < self.end:
            fresh = u.pull(self.end - u.read_total)
            if fresh is None:  # the source ended before the size it promised
                raise SourceSizeMismatch(u.read_total)
            yield fresh


class UploadState:
    """State of one blob upload: the source, the hash, the held bytes, the session."""

    def __init__(self, window: int):
        self.source: Iterator[bytes] = iter(())
        self.size: int | None = None  # where the current write ends, when its size is known
        self.window = window
        self.hasher = hashlib.sha256()
        self.read_total = 0  # bytes pulled from the source (and hashed)
        self.pending: memoryview | None = None  # the unused tail of a chunk cut at a PATCH end
        self.held: deque[memoryview] = deque()  # the latest unacknowledged bytes pulled
        self.held_start = 0  # offset of held[0]
        self.held_bytes = 0
        self.seg_start = 0  # offset where the current PATCH range starts
        self.location = ""
        self.offset = 0  # bytes the registry acknowledged
        self.exhausted = True

    def feed(self, chunks: Iterable[bytes], size: int | None) -> None:
        """The next write: ``size`` more bytes (None: unknown) appended after those already sent."""
        self.source = iter(chunks)
        self.exhausted = False
        self.pending = None
        self.seg_start = self.read_total
        self.size = None if size is None else self.read_total + size

    def _next_chunk(self) -> memoryview | None:
        while not self.exhausted:
            try:
                chunk = next(self.source)
            except StopIteration:
                self.exhausted = True
                return None
            except Exception as e:
                raise SourceFailed(e) from e
            if chunk:
                piece = memoryview(chunk).cast("B")
                self.hasher.update(piece)  # the only place bytes are hashed: each byte once
                return piece
        return None

    def pull(self, limit: int) -> memoryview | None:
        """Up to ``limit`` new bytes from the source (hashed, held); None at the end."""
        if self.pending is not None:
            piece, self.pending = self.pending, None
        else:
            got = self._next_chunk()
            if got is None:
                return None
            piece = got
        if len(piece) > limit:
            piece, self.pending = piece[:limit], piece[limit:]
        self.read_total += len(piece)
        self.held.append(piece)
        self.held_bytes += len(piece)
        # Keep at least ``window`` bytes; older ones can no longer be resent.
        while len(self.held) > 1 and self.held_bytes - len(self.held[0]) >= self.window:
            self._drop()
        return piece

    def _drop(self) -> None:
        n = len(self.held.popleft())
        self.held_start += n
        self.held_bytes -= n

    def acknowledge(self, offset: int) -> None:
        """The registry has ``offset`` bytes: nothing before it will be sent again."""
        self.offset = offset
        while self.held and self.held_start + len(self.held[0]) <= offset:
            self._drop()

    def restart(self) -> None:
        """A new session from byte 0 (only while every byte since 0 is held)."""
        self.offset = self.seg_start = 0

    def fill(self, limit: int) -> None:
        """Read ahead until ``limit`` bytes from the PATCH start are pulled (size unknown)."""
        while self.read_total - self.seg_start < limit:
            if self.pull(limit - (self.read_total - self.seg_start)) is None:
                break

    def has_more(self) -> bool:
        """Whether the source has bytes beyond what was pulled (peeks one chunk)."""
        if self.pending is None:
            self.pending = self._next_chunk()
        return self.pending is not None

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


def range_end(header: str | None) -> int | None:
    """``0-N`` → N+1 bytes received; None when absent or malformed."""
    if not header:
        return None
    start, sep, end = header.strip().removeprefix("bytes=").partition("-")
    try:
        return int(end) + 1 if sep else None
    except ValueError:
        return None
