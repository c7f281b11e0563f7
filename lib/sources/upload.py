"""An upload body → a ``SourceSnapshot`` whose files appear while the bytes arrive.

The snapshot's ``files`` is a generator: the pipeline pulls a file, pushes
its bytes into a blob, and only then pulls the next, so a direct GGUF or a
tar-based archive is published in one pass over the body without a local
copy. A zip is the exception: its central directory sits at the end, so
the body is spooled into the scratch directory first (bounded by
``max_spool_bytes``) and walked from there; the spool is deleted when the
walk ends, whatever the outcome.

A refused upload raises ``lib.archive.ArchiveError`` out of the generator,
which aborts the pipeline before it pushes a manifest. The generator ends
only after the whole body has been read, so a body cut short never turns
into a published artifact.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from lib.api.types import Reason
from lib.archive import (
    CHUNK,
    MAGIC_LEN,
    ArchiveError,
    ArchiveKind,
    Limits,
    Member,
    Reader,
    confirm_magic,
    walk_gguf,
    walk_tar,
    walk_zip,
)
from lib.sources.base import SourceError, SourceFile, SourceSnapshot

RESOLVED_TYPE = "Upload"
DEFAULT_GGUF_NAME = "model.gguf"


@dataclass(frozen=True)
class Upload:
    """What the request says about its body."""

    kind: ArchiveKind
    filename: str | None = None
    size: int | None = None  # body bytes, when the client announced them


class Prepended:
    """A reader that first returns ``head`` (bytes already peeked), then ``rest``."""

    def __init__(self, head: bytes, rest: Reader):
        self.head = head
        self.rest = rest

    def read(self, n: int = -1, /) -> bytes:
        if self.head:
            if n is None or n < 0 or n >= len(self.head):
                out, self.head = self.head, b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.rest.read(n)


def gguf_path(filename: str | None) -> str:
    """The file name a direct GGUF upload gets inside the model."""
    base = posixpath.basename((filename or "").replace("\\", "/"))
    if base.lower().endswith(".gguf") and not base.startswith(".") and base.isprintable():
        return base
    return DEFAULT_GGUF_NAME


def _opener(member: Member):
    @contextlib.contextmanager
    def open_at(offset: int = 0) -> Iterator[Iterator[bytes]]:
        if offset:
            # The bytes came from a live request: there is no going back.
            raise SourceError(
                Reason.PUBLICATION_FAILED, f"{member.path}: an upload cannot be re-read; upload it again"
            )
        yield member.chunks()

    return open_at


def spool(stream: Reader, directory: str, limit: int) -> str:
    """Copy the body into a new file under ``directory``; refuse past ``limit`` bytes."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="upload-", suffix=".zip", dir=directory)
    written = 0
    try:
        with os.fdopen(fd, "wb") as f:
            while b := stream.read(CHUNK):
                written += len(b)
                if written > limit:
                    raise ArchiveError(413, f"the zip archive is larger than the {limit}-byte spool limit")
                f.write(b)
    except OSError as e:
        os.unlink(path)
        if e.errno == errno.ENOSPC:
            raise SourceError(
                Reason.INSUFFICIENT_STORAGE, "no space left on the upload volume to spool the zip archive"
            ) from e
        raise
    except BaseException:
        os.unlink(path)
        raise
    return path


def _members(
    stream: Reader, upload: Upload, limits: Limits, scratch_dir: str, max_spool: int
) -> Iterator[Member]:
    if upload.kind == ArchiveKind.GGUF:
        yield from walk_gguf(stream, gguf_path(upload.filename), upload.size)
    elif upload.kind == ArchiveKind.ZIP:
        path = spool(stream, scratch_dir, max_spool)
        try:
            yield from walk_zip(path, limits)
        finally:
            os.unlink(path)
    else:
        yield from walk_tar(stream, upload.kind, limits)


def files(
    body: Reader, upload: Upload, *, limits: Limits, scratch_dir: str, max_spool_bytes: int
) -> Iterator[SourceFile]:
    """Check the magic bytes, then yield each member as a ``SourceFile`` once it is reached."""
    head = b""
    while len(head) < MAGIC_LEN:
        b = body.read(MAGIC_LEN - len(head))
        if not b:
            break
        head += b
    if not head:
        raise ArchiveError(400, "the upload is empty")
    confirm_magic(upload.kind, head, upload.filename)
    stream = Prepended(head, body)
    count = 0
    for member in _members(stream, upload, limits, scratch_dir, max_spool_bytes):
        count += 1
        yield SourceFile(path=member.path, open=_opener(member), size=member.size)
    if count == 0:
        raise ArchiveError(400, "the archive holds no model files")
    if stream.read(1):
        raise ArchiveError(400, "there is data after the end of the upload")


def snapshot(
    body: Reader,
    upload: Upload,
    *,
    limits: Limits = Limits(),
    scratch_dir: str,
    max_spool_bytes: int,
) -> SourceSnapshot:
    """A snapshot whose ``files`` generator walks ``body`` as the pipeline consumes it.

    Close ``snapshot.files`` when done (it removes a zip spool even when the
    pipeline stopped half-way).
    """
    gen = files(body, upload, limits=limits, scratch_dir=scratch_dir, max_spool_bytes=max_spool_bytes)
    return SourceSnapshot(resolved_type=RESOLVED_TYPE, files=gen)  # type: ignore[arg-type]
