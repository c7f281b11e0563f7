"""What an upload request's head says, checked before a body byte is read (no I/O).

The wire format itself (request line, header syntax, ``Content-Length`` and
chunked framing, chunk extensions and trailers, conflicting lengths) is
h11's job (``lib.upload.connection``). This module holds the policy on top:
which framings an upload accepts (a length or chunked, never both at once,
and never neither), the ``?filename=`` that names the type, and the
``Content-Range`` of a resumed part.

``Content-Range`` stays our own parser: a resumed *chunked* part says
``bytes START-*/TOTAL`` or ``bytes START-*/*`` (its end is unknown), which
is outside RFC 9110's grammar, so ``werkzeug.http.parse_content_range_header``
(and any other response-side parser) refuses it; and the errors must say
what is wrong to the uploader.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from lib.archive import ArchiveError, ArchiveKind, kind_from_filename
from lib.byte_ranges import ContentRange, parse_content_range

# h11's messages for request heads it refuses, in the uploader's words.
PROTOCOL_MESSAGES = {
    "conflicting Content-Length headers": "Content-Length is given more than once with different values",
    "Only Transfer-Encoding: chunked is supported": "only Transfer-Encoding: chunked is supported",
}


@dataclass(frozen=True)
class RequestHead:
    """A request line and its headers (names lower-case, as h11 gives them)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def from_wire(cls, method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]]) -> RequestHead:
        pairs = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers)
        return cls(method.decode("latin-1"), target.decode("latin-1"), pairs)

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query


def protocol_message(error: str) -> str:
    """The answer's message for a request head h11 refused."""
    return PROTOCOL_MESSAGES.get(error, f"malformed HTTP request: {error}")


@dataclass(frozen=True)
class PutRequest:
    filename: str | None
    kind: ArchiveKind
    length: int | None  # Content-Length; None when chunked
    range: ContentRange | None

    @property
    def total(self) -> int | None:
        """The whole upload's size, when the request says it."""
        if self.range is not None:
            return self.range.total
        return self.length

    def announced_end(self) -> int:
        """The most bytes the upload will hold after this request, by its headers (0: unknown)."""
        start = self.range.start if self.range is not None else 0
        ends = [self.total or 0]
        if self.length is not None:
            ends.append(start + self.length)
        if self.range is not None and self.range.last is not None:
            ends.append(self.range.last + 1)
        return max(ends)


def _length(head: RequestHead) -> int | None:
    """Content-Length, or None for a chunked body; refuses both at once and neither."""
    te = (head.get("transfer-encoding") or "").lower()
    raw = head.get("content-length")
    if te:
        if raw is not None:
            # Both framings at once is how requests get smuggled; refuse rather than guess.
            raise ArchiveError(400, "send Content-Length or Transfer-Encoding: chunked, not both")
        return None
    if raw is None or not raw.strip().isdigit():
        # h11 would read a PUT without either as an empty body.
        raise ArchiveError(411, "the upload needs a Content-Length or chunked transfer encoding")
    return int(raw)


def parse_put(head: RequestHead) -> PutRequest:
    """Everything the PUT's head says (``ArchiveError`` with the status to answer)."""
    names = parse_qs(head.query, keep_blank_values=True).get("filename", [])
    if len(names) > 1:
        raise ArchiveError(400, "give ?filename= once")
    filename = names[0] if names else None
    kind = kind_from_filename(filename)
    length = _length(head)
    cr = head.get("content-range")
    try:
        rng = parse_content_range(cr) if cr else None
    except ValueError as e:
        raise ArchiveError(400, str(e)) from None
    if rng and length is not None and rng.last is not None and rng.last - rng.start + 1 != length:
        raise ArchiveError(400, f"Content-Range {cr!r} does not match Content-Length {length}")
    return PutRequest(filename, kind, length, rng)
