"""``Content-Range`` parsing, shared by the upload server (requests) and the source streams (answers).

``bytes START-LAST/TOTAL`` where LAST and TOTAL may be ``*`` (unknown): the
upload server accepts ``*`` for LAST from clients that stream an archive of
unknown length, and a source answer to ``Range`` must name its START.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+|\*)/(\d+|\*)")


@dataclass(frozen=True)
class ContentRange:
    start: int
    last: int | None  # inclusive; None for '*'
    total: int | None


def parse_content_range(value: str) -> ContentRange:
    """The parsed header; ``ValueError`` saying what is wrong with it."""
    m = _CONTENT_RANGE.fullmatch(value.strip())
    if not m:
        raise ValueError(f"Content-Range {value!r}: expected 'bytes START-LAST/TOTAL'")
    start = int(m.group(1))
    last = None if m.group(2) == "*" else int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if last is not None and last < start:
        raise ValueError(f"Content-Range {value!r}: LAST is before START")
    if total is not None and last is not None and last >= total:
        raise ValueError(f"Content-Range {value!r}: LAST is beyond TOTAL")
    return ContentRange(start, last, total)
