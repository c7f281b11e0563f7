"""An upload body → a streaming ``SourceSnapshot`` whose files appear while the bytes arrive.

The snapshot's ``stream`` (``UploadStream``, a ``lib.sources.base.FileStream``)
yields one file at a time: the pipeline pushes its bytes into a blob, and
only then pulls the next, so a direct GGUF or a tar-based archive is
published in one pass over the body without a local copy. A zip is the
exception: its central directory sits at the end, so the body is spooled
into the scratch directory first (bounded by ``max_spool_bytes``) and
walked from there; the spool is deleted on ``close()``, whatever the
outcome.

What the pipeline can check before a byte is pushed (``listing()``): the
magic bytes always; the whole layout for a direct GGUF (one known name) and
a zip (its central directory, read after the spool); for a tar stream only
each member's path as it is reached, and the layout once the walk ends,
still before the config and manifest are pushed.

A refused upload raises ``lib.archive.ArchiveError`` out of the iteration,
which aborts the pipeline before it pushes a manifest. The iteration ends
only after the whole body has been read, so a body cut short never turns
into a published artifact.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import tempfile
import zipfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass

from lib.api.types import Reason
from lib.archive import (
    CHUNK,
    ArchiveError,
    ArchiveKind,
    Limits,
    Member,
    Reader,
    check_zip,
    confirm_magic,
    walk_gguf,
    walk_tar,
    walk_zip,
)
from lib.archive.members import read_head
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


def _zip_listing(path: str, limits: Limits) -> list[str]:
    """The member paths of a spooled zip, from its central directory (checked as ``walk_zip`` does)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [name for _, name in check_zip(zf, limits, os.path.getsize(path))]
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:
        raise ArchiveError(400, f"not a readable zip archive: {e}") from e


def _confirmed(body: Reader, upload: Upload) -> Prepended:
    """``body`` with its magic bytes read and checked against the announced kind."""
    head = read_head(body)
    if not head:
        raise ArchiveError(400, "the upload is empty")
    confirm_magic(upload.kind, head, upload.filename)
    return Prepended(head, body)


class UploadStream:
    """The files of one upload body, in body order (a ``FileStream``)."""

    def __init__(self, body: Reader, upload: Upload, *, limits: Limits, scratch_dir: str, max_spool: int):
        self._body, self._upload, self._limits = body, upload, limits
        self._scratch_dir, self._max_spool = scratch_dir, max_spool
        self._stream: Prepended | None = None
        self._spool: str | None = None
        self._walk: Generator[SourceFile, None, None] | None = None

    def listing(self) -> list[str] | None:
        """Check the magic bytes; the paths when known before their bytes (GGUF, zip), else None."""
        stream = self._start()
        if self._upload.kind == ArchiveKind.GGUF:
            return [gguf_path(self._upload.filename)]
        if self._upload.kind != ArchiveKind.ZIP:
            return None  # a tar stream: names appear as the walk reaches them
        self._spool = spool(stream, self._scratch_dir, self._max_spool)
        names = _zip_listing(self._spool, self._limits)
        if not names:
            raise ArchiveError(400, "the archive holds no model files")
        return names

    def _start(self) -> Prepended:
        if self._stream is None:
            self._stream = _confirmed(self._body, self._upload)
        return self._stream

    def __iter__(self) -> Iterator[SourceFile]:
        if self._walk is None:
            self._walk = self._files(self._start())
        return self._walk

    def _members(self, stream: Prepended) -> Iterator[Member]:
        if self._upload.kind == ArchiveKind.GGUF:
            return walk_gguf(stream, gguf_path(self._upload.filename), self._upload.size)
        if self._upload.kind == ArchiveKind.ZIP:
            if self._spool is None:
                self._spool = spool(stream, self._scratch_dir, self._max_spool)
            return walk_zip(self._spool, self._limits)
        return walk_tar(stream, self._upload.kind, self._limits)

    def _files(self, stream: Prepended) -> Generator[SourceFile, None, None]:
        """Each member as a ``SourceFile`` once it is reached; the end checks after the last."""
        count = 0
        for member in self._members(stream):
            count += 1
            yield SourceFile(path=member.path, open=_opener(member), size=member.size)
        if count == 0:
            raise ArchiveError(400, "the archive holds no model files")
        if stream.read(1):
            raise ArchiveError(400, "there is data after the end of the upload")

    def close(self) -> None:
        """Stop the walk and delete the zip spool; safe to call twice."""
        if self._walk is not None:
            self._walk.close()
        if self._spool is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._spool)
            self._spool = None


def snapshot(
    body: Reader,
    upload: Upload,
    *,
    limits: Limits = Limits(),
    scratch_dir: str,
    max_spool_bytes: int,
) -> SourceSnapshot:
    """A streaming snapshot that walks ``body`` as the pipeline consumes it.

    Close ``snapshot.stream`` when done (it removes a zip spool even when the
    pipeline stopped half-way).
    """
    stream = UploadStream(body, upload, limits=limits, scratch_dir=scratch_dir, max_spool=max_spool_bytes)
    return SourceSnapshot(resolved_type=RESOLVED_TYPE, files=[], stream=stream)
