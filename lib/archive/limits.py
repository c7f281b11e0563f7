"""What one upload may expand to, and the error every refusal raises.

The bottom of ``lib.archive``: ``ArchiveError`` (an HTTP status and a message
meant for the uploader), the ``Limits`` an upload is walked under, and the one
bomb rule (``check_expansion``) that tar streams and zips both answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from lib.api.types import Reason
from lib.errors import SourceError

CHUNK = 1 << 20


class ArchiveError(SourceError):
    """A refused upload: ``status`` is the HTTP answer, ``message`` says why."""

    def __init__(self, status: int, message: str):
        super().__init__(Reason.UPLOAD_REJECTED, message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Caps on what one upload may expand to (defaults fit the largest real models)."""

    max_members: int = 10_000
    max_member_bytes: int = 1 << 40  # 1 TiB
    max_total_bytes: int = 2 << 40  # 2 TiB
    # Decompressed bytes per compressed byte. Real weights compress ~1.1x,
    # tokenizer JSON ~4x; bombs 1000x and more. The whole archive is checked
    # once it expands past ``ratio_floor``; a zip member once it is larger than
    # ``member_ratio_floor`` (below that, zero-filled configs and placeholder
    # files may expand freely: the whole-archive rule bounds how many add up).
    max_ratio: float = 100.0
    ratio_floor: int = 64 << 20
    member_ratio_floor: int = 4 << 20
    max_path_bytes: int = 1024
    max_depth: int = 32
    max_header_bytes: int = 1 << 20  # pax / GNU long-name headers
    max_trailing_bytes: int = 16 << 20  # zero padding after the tar end marker


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def check_expansion(
    expanded: int, compressed: int, limits: Limits, *, what: str = "the archive", floor: int | None = None
) -> None:
    """Refuse ``what`` once it expands past ``floor`` bytes to more than ``max_ratio`` x its compressed size.

    The one bomb rule: a tar stream applies it to its running totals, a zip
    to its central directory's totals (and to each member with
    ``member_ratio_floor``), so both kinds answer the same limit the same way.
    """
    floor = limits.ratio_floor if floor is None else floor
    if expanded <= floor or expanded <= limits.max_ratio * max(compressed, 1):
        return
    raise ArchiveError(
        413,
        f"{what} expands {expanded // max(compressed, 1)}x ({expanded} bytes from {compressed}), over the "
        f"{limits.max_ratio:g}x limit for more than {floor} bytes: refusing a compression bomb. Model files "
        "do not compress this well; if these files are genuine, upload them uncompressed "
        "(a plain .tar, or zip -0)",
    )
