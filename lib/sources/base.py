"""The contract between a source adapter and the publish pipeline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

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


@dataclass
class SourceSnapshot:
    """What a source resolved before any byte moves."""

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


class Source(Protocol):
    def snapshot(self) -> SourceSnapshot: ...


class SourceError(Exception):
    """A source failed; ``reason`` is a ``lib.api.types.Reason`` value."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message
