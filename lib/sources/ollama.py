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
fails before gigabytes move. Blobs are fetched through ``lib.sources.http``,
which follows the registry's 307 to object storage without forwarding any
``Authorization`` header.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from lib.api.types import Reason
from lib.sources.base import Opener, SourceError, SourceFile, SourceSnapshot
from lib.sources.http import (
    READ_AHEAD,
    ContentMismatch,
    HttpClient,
    HttpError,
    HttpStatusError,
    RetryPolicy,
    Unavailable,
)
from lib.sources.urls import ParsedSource, parse_source_url

DEFAULT_REGISTRY = "https://registry.ollama.ai"
LIBRARY_PAGE = "https://ollama.com"  # where a library model's page lives (the ModelPack sourceURL)
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 4 << 20
GGUF_MAGIC = b"GGUF"

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
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    @property
    def sha256(self) -> str:
        return self.digest.removeprefix("sha256:")


def parse_descriptor(raw: Any, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise ValueError(f"{what} is not an object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ValueError(f"{what} has no mediaType")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValueError(f"{what} has an invalid digest {digest!r:.80} (expected sha256:<64 hex>)")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{what} has an invalid size {size!r:.40}")
    return Descriptor(media_type, digest, size)


def parse_manifest(body: bytes, content_type: str = "") -> tuple[Descriptor, list[Descriptor]]:
    """The config and layer descriptors of a single-image manifest; ValueError otherwise."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise ValueError(f"manifest is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError("manifest is not a JSON object")
    media_type = doc.get("mediaType") or content_type.split(";")[0].strip()
    if doc.get("schemaVersion") != 2:
        raise ValueError(f"unsupported schemaVersion {doc.get('schemaVersion')!r}")
    if media_type and media_type not in MANIFEST_TYPES:
        raise ValueError(f"unsupported manifest media type {media_type!r} (an index or a list?)")
    config = parse_descriptor(doc.get("config"), "config descriptor")
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ValueError("manifest has no layers")
    return config, [parse_descriptor(raw, f"layer {i}") for i, raw in enumerate(layers)]


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


def _registry_base(registry: str | None) -> str:
    base = (registry or DEFAULT_REGISTRY).rstrip("/")
    return base if "://" in base else f"https://{base}"


class OllamaSource:
    """``snapshot()`` reads manifest and config; layer bytes move on ``open``."""

    def __init__(
        self,
        parsed: str | ParsedSource,
        *,
        registry: str | None = None,
        ca_file: str | None = None,
        policy: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
    ):
        parsed = parse_source_url(parsed) if isinstance(parsed, str) else parsed
        if parsed.kind != "ollama":
            raise SourceError(Reason.UNSUPPORTED_SOURCE, f"{parsed.url} is not an Ollama library URL")
        self.repository = parsed.repository
        self.tag = parsed.revision
        self.base = _registry_base(registry)
        self.http = HttpClient(verify=ca_file or True, policy=policy, sleep=sleep)

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    def _failed(self, message: str) -> SourceError:
        return SourceError(Reason.PUBLICATION_FAILED, f"{self.ref}: {message}")

    def _error(self, e: HttpError, what: str) -> SourceError:
        if isinstance(e, Unavailable):
            msg = f"Ollama registry unavailable ({what}): {e.message}"
            return SourceError(Reason.SOURCE_UNAVAILABLE, msg)
        if isinstance(e, HttpStatusError) and e.status == 404 and what == "manifest":
            return SourceError(
                Reason.PUBLICATION_FAILED,
                f"{self.ref} not found in the Ollama registry {self.base}: check the model name and tag "
                f"({e.error_message})",
            )
        if isinstance(e, HttpStatusError) and e.status in (401, 403):
            return self._failed(f"the Ollama registry refused anonymous access ({what}): HTTP {e.status}")
        return self._failed(f"{what}: {e.message}")

    def _blob_url(self, digest: str) -> str:
        return f"{self.base}/v2/{self.repository}/blobs/{digest}"

    def snapshot(self) -> SourceSnapshot:
        url = f"{self.base}/v2/{self.repository}/manifests/{self.tag}"
        try:
            body, headers = self.http.get_bytes(url, headers={"Accept": ", ".join(MANIFEST_TYPES)},
                                                limit=MAX_MANIFEST_BYTES)
        except HttpError as e:
            raise self._error(e, "manifest") from e
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        announced = headers.get("Docker-Content-Digest")
        if announced and announced != digest:
            raise self._failed(f"manifest digest {digest} differs from the announced {announced}")
        try:
            config_desc, layers = parse_manifest(body, headers.get("Content-Type", ""))
            files, skipped = layer_files(layers)
        except ValueError as e:
            raise self._failed(f"invalid manifest {digest}: {e}") from e
        hints = config_hints(self._config(config_desc))
        hints["ollama_model"] = self.ref
        if skipped:
            hints["skipped_layers"] = skipped
        return SourceSnapshot(
            resolved_type="Ollama",
            files=[
                SourceFile(path=path, open=self._opener(d), size=d.size, sha256=d.sha256, kind=d.media_type)
                for path, d in files
            ],
            revision=self.tag,
            remote_digest=digest,
            hints=hints,
            name=f"{self.repository.removeprefix('library/')}:{self.tag}",
            source_url=f"{LIBRARY_PAGE}/{self.repository}",
        )

    def _config(self, desc: Descriptor) -> Any:
        if desc.size > MAX_CONFIG_BYTES:
            raise self._failed(f"config blob of {desc.size} bytes is too large")
        try:
            with self.http.open_stream(self._blob_url(desc.digest), size=desc.size) as chunks:
                data = b"".join(chunks)
        except HttpError as e:
            raise self._error(e, f"config blob {desc.digest}") from e
        if hashlib.sha256(data).hexdigest() != desc.sha256:
            raise self._failed(f"config blob does not match its digest {desc.digest}")
        try:
            return json.loads(data)
        except ValueError as e:
            raise self._failed(f"config blob is not JSON: {e}") from e

    def _opener(self, desc: Descriptor) -> Opener:
        return partial(self._open, desc)

    @contextmanager
    def _open(self, desc: Descriptor, offset: int) -> Iterator[Iterator[bytes]]:
        url = self._blob_url(desc.digest)
        with self.http.open_stream(url, offset=offset, size=desc.size, read_ahead=READ_AHEAD) as chunks:
            yield self._checked(desc, chunks, offset)

    def _checked(self, desc: Descriptor, chunks: Iterator[bytes], offset: int) -> Iterator[bytes]:
        """Translate transfer errors; check the GGUF magic of weight layers read from the start."""
        head = b"" if desc.media_type in GGUF_LAYERS and offset == 0 else None
        try:
            for chunk in chunks:
                if head is not None and len(head) < len(GGUF_MAGIC):
                    head += chunk[: len(GGUF_MAGIC) - len(head)]
                    if len(head) == len(GGUF_MAGIC) and head != GGUF_MAGIC:
                        raise self._failed(f"layer {desc.digest} ({desc.media_type}) is not a GGUF file "
                                           f"(starts with {head!r})")
                yield chunk
        except ContentMismatch as e:
            raise self._failed(f"layer {desc.digest}: {e.message}") from e
        except HttpError as e:
            raise self._error(e, f"layer {desc.digest}") from e
        if head is not None and len(head) < len(GGUF_MAGIC):
            raise self._failed(f"layer {desc.digest} is too short to be a GGUF file")

    def close(self) -> None:
        self.http.close()
