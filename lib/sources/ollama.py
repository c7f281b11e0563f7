"""Ollama library source: one tag of ``registry.ollama.ai/library/<name>``.

The Ollama registry is an OCI distribution registry whose layers are raw
files, typed by media type (``references.md``). The adapter reads the
manifest (anonymously, accepting Docker v2 and OCI manifests), verifies and
parses the small config blob itself, and turns the layers into files:

=====================================================  ==================  =========
layer media type                                       file                how many
=====================================================  ==================  =========
``application/vnd.ollama.image.model``                 ``model.gguf``      exactly 1
``application/vnd.ollama.image.projector``             ``mmproj.gguf``     0..n
``application/vnd.ollama.image.adapter``               ``adapter.gguf``    0..n
``application/vnd.ollama.image.template``              ``template``        0..n
``application/vnd.ollama.image.system``                ``system.txt``      0..n
``application/vnd.ollama.image.params``                ``params.json``     0..n
``application/vnd.ollama.image.messages``              ``messages.json``   0..n
``application/vnd.ollama.image.license``               ``LICENSE``         0..n
=====================================================  ==================  =========

A second layer of a kind gets ``-2``, ``-3``... before the extension
(``LICENSE-2``). Unknown layer types are left out and listed in the hints.
Every file declares its descriptor's digest and size, so the pipeline
verifies each while streaming; the adapter also checks the GGUF magic of the
model and projector layers as their first bytes arrive, so a wrong payload
fails before gigabytes move.

Manifest and blobs are read through the OCI client (``lib.oci``): it builds
the registry URLs, checks the manifest's digest and the config blob's,
parses the image manifest, and follows the registry's 307 to object storage
without forwarding any ``Authorization`` header. What is left here is what
is Ollama's own: the layer types, the file names, the config hints, resuming
a layer stream cut mid-file (``Range`` from the byte reached) and the
translation of registry errors into ``SourceError`` a user can act on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from lib.api.types import Reason
from lib.oci.client import RegistryClient
from lib.oci.descriptor import Descriptor
from lib.oci.errors import (
    AuthError,
    DigestMismatch,
    NotFound,
    RegistryError,
    Unreachable,
    UploadInterrupted,
)
from lib.oci.manifests import IMAGE_MANIFESTS, parse_image_manifest
from lib.retry import Attempts, RetryPolicy
from lib.sources.adapter import SourceOptions
from lib.sources.base import Opener, SourceError, SourceFile, SourceSnapshot, owned_snapshot
from lib.sources.http import READ_AHEAD, ReadAhead
from lib.sources.urls import ParsedSource, parse_source_url

__all__ = ["Descriptor", "OllamaSource", "config_hints", "layer_files", "open_source"]

DEFAULT_REGISTRY = "https://registry.ollama.ai"
LIBRARY_PAGE = "https://ollama.com"  # where a library model's page lives (the ModelPack sourceURL)
MAX_CONFIG_BYTES = 4 << 20
GGUF_MAGIC = b"GGUF"
# An internet registry behind a CDN: more patience than the cluster's own registry.
RETRY = RetryPolicy(attempts=6, base_delay=1.0, max_delay=30.0, total=600.0, jitter=True)
TIMEOUT = (15.0, 60.0)  # connect, per socket read: a stalled stream fails (and resumes) after this
MAX_RESUMES = 1000  # per layer stream, even when each resume made progress

MEDIA_PREFIX = "application/vnd.ollama.image."
MODEL = MEDIA_PREFIX + "model"
PROJECTOR = MEDIA_PREFIX + "projector"
# media type -> file name of the first layer of that type
LAYER_FILES = {
    MODEL: "model.gguf",
    PROJECTOR: "mmproj.gguf",
    MEDIA_PREFIX + "adapter": "adapter.gguf",
    MEDIA_PREFIX + "template": "template",
    MEDIA_PREFIX + "system": "system.txt",
    MEDIA_PREFIX + "params": "params.json",
    MEDIA_PREFIX + "messages": "messages.json",
    MEDIA_PREFIX + "license": "LICENSE",
}
GGUF_LAYERS = frozenset({MODEL, PROJECTOR})
CONFIG_HINTS = ("model_format", "model_family", "model_families", "model_type", "file_type")


def layer_files(layers: list[Descriptor]) -> tuple[list[tuple[str, Descriptor]], list[str]]:
    """(path, descriptor) per carried layer, model weights after the small files; and skipped types.

    Raises ValueError unless exactly one model layer is present.
    """
    models = [d for d in layers if d.media_type == MODEL]
    if len(models) != 1:
        kinds = sorted({d.media_type for d in layers})
        raise ValueError(f"expected exactly one {MODEL} layer, found {len(models)} (layers: {kinds})")
    counts: dict[str, int] = {}
    out: list[tuple[str, Descriptor]] = []
    skipped: list[str] = []
    for d in layers:
        name = LAYER_FILES.get(d.media_type)
        if name is None:
            skipped.append(d.media_type)
            continue
        n = counts[d.media_type] = counts.get(d.media_type, 0) + 1
        if n > 1:
            stem, dot, ext = name.partition(".")
            name = f"{stem}-{n}{dot}{ext}"
        out.append((name, d))
    out.sort(key=lambda item: item[1].media_type in GGUF_LAYERS)  # stable: small files first
    return out, skipped


def config_hints(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        return {}
    hints: dict[str, Any] = {}
    for key in CONFIG_HINTS:
        value = config.get(key)
        if isinstance(value, str) and value:
            hints[key] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            hints[key] = list(value)
    return hints


def registry_address(registry: str | None) -> tuple[str, bool]:
    """``host[:port]`` and whether it is plain http, from ``OLLAMA_REGISTRY`` (a URL or a host)."""
    url = (registry or DEFAULT_REGISTRY).rstrip("/")
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.netloc, parts.scheme == "http"


def _sha256(d: Descriptor) -> str:
    return d.digest.removeprefix("sha256:")


class OllamaSource:
    """``snapshot()`` reads manifest and config; layer bytes move on ``open``."""

    def __init__(
        self,
        parsed: str | ParsedSource,
        *,
        registry: str | None = None,
        ca_file: str | None = None,
        retry: RetryPolicy = RETRY,
        timeout: tuple[float, float] = TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ):
        parsed = parse_source_url(parsed) if isinstance(parsed, str) else parsed
        if parsed.kind != "ollama":
            raise SourceError(Reason.UNSUPPORTED_SOURCE, f"{parsed.url} is not an Ollama library URL")
        self.repository = parsed.repository
        self.tag = parsed.revision
        self.retry = retry
        self.sleep = sleep
        host, insecure = registry_address(registry)
        self.base = f"{'http' if insecure else 'https'}://{host}"
        try:
            self.client = RegistryClient(
                host, insecure=insecure, ca_file=ca_file, retry=retry, timeout=timeout, sleep=sleep
            )
        except (RegistryError, ValueError) as e:
            raise SourceError(Reason.PUBLICATION_FAILED, f"Ollama registry {host}: {e}") from e

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    def _failed(self, message: str) -> SourceError:
        return SourceError(Reason.PUBLICATION_FAILED, f"{self.ref}: {message}")

    def _error(self, e: RegistryError, what: str) -> SourceError:
        if isinstance(e, Unreachable | UploadInterrupted) or (e.status or 0) >= 500:
            message = f"Ollama registry unavailable ({what}): {e.message}"
            return SourceError(Reason.SOURCE_UNAVAILABLE, message)
        if isinstance(e, NotFound) and what == "manifest":
            return SourceError(
                Reason.PUBLICATION_FAILED,
                f"{self.ref} not found in the Ollama registry {self.base}: check the model name and tag "
                f"({e.message})",
            )
        if isinstance(e, AuthError):
            return self._failed(f"the Ollama registry refused anonymous access ({what}): HTTP {e.status}")
        return self._failed(f"{what}: {e.message}")

    def snapshot(self) -> SourceSnapshot:
        try:
            manifest = self.client.get_manifest(self.repository, self.tag, accept=IMAGE_MANIFESTS)
        except RegistryError as e:
            raise self._error(e, "manifest") from e
        try:
            config_desc, layers = parse_image_manifest(manifest.body, manifest.media_type)
            files, skipped = layer_files(layers)
        except ValueError as e:
            raise self._failed(f"invalid manifest {manifest.digest}: {e}") from e
        hints = config_hints(self._config(config_desc))
        hints["ollama_model"] = self.ref
        if skipped:
            hints["skipped_layers"] = skipped
        return SourceSnapshot(
            resolved_type="Ollama",
            files=[
                SourceFile(path=path, open=self._opener(d), size=d.size, sha256=_sha256(d), kind=d.media_type)
                for path, d in files
            ],
            revision=self.tag,
            remote_digest=manifest.digest,
            hints=hints,
            name=f"{self.repository.removeprefix('library/')}:{self.tag}",
            source_url=f"{LIBRARY_PAGE}/{self.repository}",
        )

    def _config(self, desc: Descriptor) -> Any:
        """The config blob, read whole (it is small) and verified by the client."""
        if desc.size > MAX_CONFIG_BYTES:
            raise self._failed(f"config blob of {desc.size} bytes is too large")
        try:
            with self.client.open_blob(self.repository, desc.digest) as chunks:
                data = b"".join(chunks)
        except DigestMismatch as e:
            raise self._failed(f"config blob does not match its digest {desc.digest}") from e
        except RegistryError as e:
            raise self._error(e, f"config blob {desc.digest}") from e
        try:
            return json.loads(data)
        except ValueError as e:
            raise self._failed(f"config blob is not JSON: {e}") from e

    def _opener(self, desc: Descriptor) -> Opener:
        return partial(self._open, desc)

    @contextmanager
    def _open(self, desc: Descriptor, offset: int) -> Iterator[Iterator[bytes]]:
        ahead = ReadAhead(self._checked(desc, self._resumed(desc, offset), offset), READ_AHEAD)
        try:
            yield iter(ahead)
        finally:
            ahead.stop()
            ahead.join()

    def _resumed(self, desc: Descriptor, offset: int) -> Iterator[bytes]:
        """The layer from ``offset``, reopened with ``Range`` where a transfer broke off.

        Not verified here: the pipeline hashes the bytes against the descriptor as they pass.
        """
        pos, resumes = offset, 0
        tries = Attempts(self.retry, sleep=self.sleep)
        while True:
            start = pos
            try:
                with self.client.open_blob(self.repository, desc.digest, offset=pos, verify=False) as chunks:
                    for chunk in chunks:
                        pos += len(chunk)
                        if pos > desc.size:
                            raise self._failed(f"layer {desc.digest} is longer than its {desc.size} bytes")
                        yield chunk
                if pos < desc.size:
                    raise Unreachable(f"layer {desc.digest} ended at byte {pos} of {desc.size}")
                return
            except Unreachable:
                if pos > start:
                    tries.succeeded()  # progress: a new streak
                resumes += 1
                if resumes > MAX_RESUMES or not tries.failed():
                    raise

    def _checked(self, desc: Descriptor, chunks: Iterator[bytes], offset: int) -> Iterator[bytes]:
        """Translate registry errors; check the GGUF magic of weight layers read from the start."""
        head = b"" if desc.media_type in GGUF_LAYERS and offset == 0 else None
        try:
            for chunk in chunks:
                if head is not None and len(head) < len(GGUF_MAGIC):
                    head += chunk[: len(GGUF_MAGIC) - len(head)]
                    if len(head) == len(GGUF_MAGIC) and head != GGUF_MAGIC:
                        raise self._failed(f"layer {desc.digest} ({desc.media_type}) is not a GGUF file "
                                           f"(starts with {head!r})")
                yield chunk
        except RegistryError as e:
            raise self._error(e, f"layer {desc.digest}") from e
        if head is not None and len(head) < len(GGUF_MAGIC):
            raise self._failed(f"layer {desc.digest} is too short to be a GGUF file")

    def close(self) -> None:
        self.client.close()


def open_source(source: str, options: SourceOptions) -> SourceSnapshot:
    """The registry's adapter: a library URL; ``OLLAMA_REGISTRY`` overrides the registry (mirrors)."""
    library = OllamaSource(
        parse_source_url(source), registry=options.env.get("OLLAMA_REGISTRY"), ca_file=options.ca_file
    )
    return owned_snapshot(library)
