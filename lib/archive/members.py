"""A member as a stream: read once while the walk stays on it, refused if it is an archive itself."""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from collections.abc import Iterator

from lib.archive.kinds import (
    BZIP2_MAGIC,
    GGUF_MAGIC,
    MAGIC_LEN,
    NESTED_SUFFIXES,
    OPAQUE_SUFFIXES,
    RAR_MAGIC,
    SEVENZIP_MAGIC,
    XZ_MAGIC,
    ArchiveKind,
    magic_kind,
)
from lib.archive.limits import CHUNK, ArchiveError, Reader


class Member:
    """One regular file of the upload, readable once while the walk stays on it."""

    def __init__(self, path: str, size: int | None, reader: Reader, head: bytes):
        self.path = path
        self.size = size
        self._reader = reader
        self._head = head
        self._opened = False
        self.current = True  # cleared by the walker when it moves on
        self.read_bytes = 0

    def chunks(self) -> Iterator[bytes]:
        """The member's bytes in chunks of at most ``CHUNK``; checks the size at the end."""
        if self._opened:
            raise ArchiveError(500, f"{self.path}: an uploaded file can be read only once")
        if not self.current:
            raise ArchiveError(500, f"{self.path}: read after the upload moved past it")
        self._opened = True
        if self._head:
            self.read_bytes += len(self._head)
            yield self._head
        while True:
            if not self.current:
                raise ArchiveError(500, f"{self.path}: read after the upload moved past it")
            want = CHUNK if self.size is None else min(CHUNK, self.size - self.read_bytes)
            if want <= 0:
                break
            b = self._reader.read(want)
            if not b:
                break
            self.read_bytes += len(b)
            yield b
        if self.size is not None and self.read_bytes != self.size:
            raise ArchiveError(
                400, f"{self.path}: the upload ended after {self.read_bytes} of {self.size} bytes"
            )


def read_head(reader: Reader, n: int = MAGIC_LEN) -> bytes:
    buf = b""
    while len(buf) < n:
        b = reader.read(n - len(buf))
        if not b:
            break
        buf += b
    return buf


def nested_archive(path: str, head: bytes) -> bool:
    lower = path.lower()
    if lower.endswith(NESTED_SUFFIXES):
        return True
    if lower.endswith(OPAQUE_SUFFIXES):
        return False
    return magic_kind(head) not in (None, ArchiveKind.GGUF) or head.startswith(
        (XZ_MAGIC, BZIP2_MAGIC, SEVENZIP_MAGIC, RAR_MAGIC)
    )


def checked_member(path: str, size: int, reader: Guarded) -> Member:
    """A member ready to stream, after its first bytes proved it is not an archive itself."""
    head = read_head(reader, min(MAGIC_LEN, size))
    if nested_archive(path, head):
        raise ArchiveError(400, f"member {path!r} is an archive itself: nested archives are not accepted")
    return Member(path, size, reader, head)


class Guarded:
    """A member's reader with library errors (bad CRC, truncation) turned into a 400."""

    def __init__(self, f: Reader, path: str):
        self.f = f
        self.path = path

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self.f.read(n)
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise ArchiveError(400, f"member {self.path!r} is corrupt or cut short: {e}") from e


def walk_gguf(stream: Reader, path: str, size: int | None) -> Iterator[Member]:
    """A direct GGUF upload is a single member: the whole body."""
    head = read_head(stream, 4)
    if head != GGUF_MAGIC:
        raise ArchiveError(400, "the upload is not a GGUF file (magic 'GGUF' missing)")
    member = Member(path, size, stream, head)
    try:
        yield member
    finally:
        member.current = False
