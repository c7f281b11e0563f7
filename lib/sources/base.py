"""The contract between a source adapter and the publish pipeline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

# Part of this contract; defined in lib.errors so that lib.archive can raise it
# without importing lib.sources (which imports lib.archive for uploads).
from lib.errors import SourceError as SourceError

# A stream of a file's bytes in chunks, starting at ``offset`` (for resumption).
ChunkStream = Iterator[bytes]
Opener = Callable[[int], ContextManager[ChunkStream]]


@dataclass(frozen=True)
class SourceFile:
    """One file of a model as the source describes it.

    ``open(offset)`` returns a context manager yielding the bytes from
    ``offset`` on; the pipeline hashes and counts them while they move and
    fails the publish when ``size`` or ``sha256`` (hex, without prefix) do not
    match what arrived.
    """

    path: str  # relative path inside the model, '/'-separated
    open: Opener
    size: int | None = None
    sha256: str | None = None
    # Source-specific hint about what the file is (e.g. an Ollama layer media type).
    kind: str | None = None
    # Called with the sha256 (hex) the pipeline computed while streaming, so a
    # source can remember it (local files: the digest cache in lib/sources/local.py).
    remember: Callable[[str], None] | None = None
    # The git blob id (hex sha1 of ``blob <size>\0`` + content) when the source knows only that
    # (small Hugging Face files): enough to check a copy DMCR already holds (lib/blob_mounts.py).
    git_blob: str | None = None


class FileStream(Protocol):
    """Files that appear while the source's bytes arrive (a live upload), in body order.

    A live body cannot be re-read, so each file must be consumed before the
    next is reached, and the whole list may be unknown until the end.
    ``listing()`` is called once, before the first file: every path the
    stream will yield when the source learns them before their bytes (a direct
    GGUF's one name, a zip's central directory), so the pipeline can check the
    layout before any byte is pushed; None when names appear only as the walk
    reaches them (a tar stream). The stream raises out of iteration on a
    refused or cut body; ``close()`` releases what it holds (a zip spool) and
    is safe to call twice.
    """

    def listing(self) -> list[str] | None: ...

    def __iter__(self) -> Iterator[SourceFile]: ...

    def close(self) -> None: ...


@dataclass
class SourceSnapshot:
    """What a source resolved before any byte moves.

    Either ``files`` (the whole list, known up front: the pipeline selects
    the layout's files before any byte moves) or, for a streaming source,
    ``stream`` (``streaming`` is True and ``files`` stays empty).
    """

    resolved_type: str  # HuggingFace | Ollama | Upload | Catalog | Local
    files: list[SourceFile]
    revision: str = ""
    remote_digest: str = ""
    # Hints for metadata resolution (HF pipeline_tag, library_name, tags;
    # Ollama config model_family/file_type/model_type, ...).
    hints: dict[str, Any] = field(default_factory=dict)
    # What the source says about the model itself, for the ModelPack descriptor.
    # Never worker-local facts (paths, clocks): these enter the artifact's digest.
    name: str = ""  # HF repo id, Ollama name:tag
    source_url: str = ""  # canonical URL of a remote source; "" for local files and uploads
    created: str = ""  # RFC 3339 date the source gives the snapshot (HF commit date)
    stream: FileStream | None = None
    # Releases what the source holds open for its files (an HTTP session's sockets); the
    # files' openers use it, so it runs only when the publish is over (``close``).
    release: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.stream is not None and self.files:
            raise ValueError("a snapshot has either a file list or a stream, not both")

    def close(self) -> None:
        """Release the stream and the source's connections; safe to call twice."""
        if self.stream is not None:
            self.stream.close()
        release, self.release = self.release, None
        if release is not None:
            release()

    @property
    def streaming(self) -> bool:
        """True when the files arrive through ``stream`` (see ``FileStream``)."""
        return self.stream is not None


class Source(Protocol):
    def snapshot(self) -> SourceSnapshot: ...


class ClosableSource(Source, Protocol):
    def close(self) -> None: ...


def owned_snapshot(source: ClosableSource) -> SourceSnapshot:
    """``source``'s snapshot, which closes the source when it is closed (or at once if it fails)."""
    try:
        snap = source.snapshot()
    except BaseException:
        source.close()
        raise
    snap.release = source.close
    return snap
