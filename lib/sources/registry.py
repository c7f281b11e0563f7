"""Every model source in one table: what it accepts, what it reports, its Secret keys, its adapter.

Why a table: the hooks and the worker must agree on what a source string
means. The hooks accept or refuse a Model's ``spec.source.url`` at sync time
(``UnsupportedSource`` without a worker), report ``status.source.resolvedType``
and mount the token key of the ``authSecretRef`` Secret; the worker picks the
adapter for its ``--source``. Each of these reads the entry here, so a new
source is one ``SourceEntry`` in ``SOURCES`` plus its adapter module
(docs/contributing.md; ``tests/test_sources_registry.py`` shows one).

An adapter is named by module and function (``lazy``) and imported only when
the worker opens a source: the hook service reads this table without loading
an HTTP client.

Lookup is first match in table order. ``user_url`` entries are what a Model's
``spec.source.url`` may name; the others are only the worker's (a catalog
import's ``oci://`` reference, a local path). A string no entry matches is
refused by ``lib.sources.urls.parse_source_url``, whose message lists the
accepted forms.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from lib.api.types import Reason
from lib.sources.adapter import Adapter, ArtifactCopy, Opened, SourceOptions
from lib.sources.base import SourceError
from lib.sources.urls import HF_HOSTS, OLLAMA_HOSTS, parse_source_url

# Keys of a user's token Secret, in order of preference (huggingface_hub's names too).
TOKEN_KEYS = ("token", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
OCI_SCHEME = "oci://"


@dataclass(frozen=True)
class SourceEntry:
    """One kind of source."""

    kind: str  # its name in this table (huggingface, ollama, catalog, local, ...)
    resolved_type: str  # status.source.resolvedType of what it publishes
    matches: Callable[[str], bool]  # is this source string this source's? (cheap, never raises)
    adapter: Adapter  # opens it in the worker
    # Validates a spec.source.url at sync time, raising SourceError(UnsupportedSource); None: the
    # entry is the worker's only and never a Model's url.
    validate: Callable[[str], object] | None = None
    secret_keys: tuple[str, ...] = ()  # keys its authSecretRef token may use, in order of preference

    @property
    def user_url(self) -> bool:
        return self.validate is not None


def lazy(module: str, function: str) -> Adapter:
    """An adapter imported on first use (the hook service never loads the source clients)."""

    def open_source(source: str, options: SourceOptions) -> Opened:
        adapter: Adapter = getattr(importlib.import_module(module), function)
        return adapter(source, options)

    open_source.__qualname__ = f"lazy({module}.{function})"
    return open_source


def host_in(hosts: frozenset[str]) -> Callable[[str], bool]:
    """Match a URL by host, whatever its scheme: the parser then says what is wrong with it."""

    def matches(source: str) -> bool:
        try:
            return (urlsplit(source).hostname or "") in hosts
        except ValueError:
            return False

    return matches


def _is_oci(source: str) -> bool:
    return source.startswith(OCI_SCHEME)


def _is_path(source: str) -> bool:
    return "://" not in source


def _artifact_copy(source: str, options: SourceOptions) -> ArtifactCopy:
    """A catalog import: the reference after ``oci://``, copied as it is (same digest)."""
    return ArtifactCopy(source[len(OCI_SCHEME) :], options)


HUGGING_FACE = SourceEntry(
    kind="huggingface",
    resolved_type="HuggingFace",
    matches=host_in(HF_HOSTS),
    adapter=lazy("lib.sources.huggingface", "open_source"),
    validate=parse_source_url,
    secret_keys=TOKEN_KEYS,
)
OLLAMA = SourceEntry(
    kind="ollama",
    resolved_type="Ollama",
    matches=host_in(OLLAMA_HOSTS),
    adapter=lazy("lib.sources.ollama", "open_source"),
    validate=parse_source_url,
    # The hooks have always mounted the same keys for any url source; the adapter reads no token.
    secret_keys=TOKEN_KEYS,
)
CATALOG = SourceEntry(kind="catalog", resolved_type="Catalog", matches=_is_oci, adapter=_artifact_copy)
LOCAL = SourceEntry(
    kind="local", resolved_type="Local", matches=_is_path, adapter=lazy("lib.sources.local", "open_source")
)
# An upload is not a source string: the upload server publishes what arrives (lib/sources/upload.py).
UPLOAD_RESOLVED_TYPE = "Upload"

# ``oci://`` first: a catalog reference may name any registry host, even huggingface.co.
SOURCES: tuple[SourceEntry, ...] = (CATALOG, HUGGING_FACE, OLLAMA, LOCAL)


def _first(source: str, entries: Sequence[SourceEntry]) -> SourceEntry:
    for entry in entries:
        if entry.matches(source):
            return entry
    parse_source_url(source)  # raises SourceError(UnsupportedSource) saying why and what is accepted
    raise SourceError(Reason.UNSUPPORTED_SOURCE, f"unsupported source {source!r}: no source entry takes it")


def for_url(url: str, sources: Sequence[SourceEntry] | None = None) -> SourceEntry:
    """The entry of a Model's ``spec.source.url``, validated; raises ``SourceError`` otherwise."""
    entries = [e for e in (SOURCES if sources is None else sources) if e.user_url]
    entry = _first(url, entries)
    assert entry.validate is not None
    entry.validate(url)
    return entry


def for_source(source: str, sources: Sequence[SourceEntry] | None = None) -> SourceEntry:
    """The entry of the worker's ``--source`` (any entry); raises ``SourceError`` when none."""
    return _first(source, SOURCES if sources is None else sources)


def open_source(source: str, options: SourceOptions, sources: Sequence[SourceEntry] | None = None) -> Opened:
    """Pick the adapter for ``source`` and resolve it (no model bytes move yet)."""
    return for_source(source, sources).adapter(source, options)
