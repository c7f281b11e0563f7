"""Catalog import: copy a ModelPack artifact from a catalog registry into DMCR as it is.

Registries cannot mount blobs across hosts, so every blob is streamed from the
catalog straight into a DMCR upload (no local copy) and verified twice on the
way: the download is hashed by ``open_blob`` and the upload by ``push_blob``
with the digest the manifest promised; a mismatch cancels the upload before
anything is committed. The manifest is pushed last, with the exact bytes read
upstream, so the local digest equals the pinned remote digest and a workload
pulls the very artifact the catalog listed.

Errors are ``SourceError`` with a catalog reason (the publish job reports them
as they are): upstream 401/403 → ``CatalogAuthFailed``; certificate problems
→ ``CatalogTLSInvalid``; unreachable, timeouts, 5xx → ``CatalogSourceNotReady``;
a manifest that is not the pinned one or not a model, or a blob that does not
hash to its digest → ``ManifestInvalid``. DMCR's own errors are left as
``RegistryError`` (out of space → ``InsufficientStorage`` via jobs/common.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from lib import modelpack
from lib.api.types import Reason, ResolvedInfo, WorkerResult
from lib.oci.client import RegistryClient
from lib.oci.descriptor import sha256_digest
from lib.oci.errors import AuthError, DigestMismatch, NotFound, RegistryError, TLSError, Unreachable
from lib.oci.media_types import OCI_MANIFEST
from lib.oci.reference import InvalidReference, Reference
from lib.progress import Progress
from lib.retry import RetryPolicy
from lib.sources.base import SourceError

TAG = "latest"
MAX_CONFIG = 4 << 20
# A catalog that does not answer is retried by the controller (the Model or the next probe),
# so the client gives up sooner than the default policy.
UPSTREAM_RETRY = RetryPolicy(attempts=3, base_delay=0.5, max_delay=4.0, total=60.0)


def catalog_reason(e: RegistryError) -> str:
    """The catalog reason for an error talking to a catalog registry."""
    if isinstance(e, AuthError):
        return Reason.CATALOG_AUTH_FAILED
    if isinstance(e, TLSError):
        return Reason.CATALOG_TLS_INVALID
    if isinstance(e, Unreachable) or (e.status or 0) >= 500 or e.status in (408, 429):
        return Reason.CATALOG_SOURCE_NOT_READY
    if isinstance(e, DigestMismatch):
        return Reason.MANIFEST_INVALID
    if isinstance(e, NotFound):
        return Reason.CATALOG_MODEL_NOT_FOUND
    return Reason.CATALOG_SOURCE_NOT_READY


def upstream_client(
    registry: str, *, auth_file: str | Path | None, ca_file: str | Path | None, insecure: bool = False
) -> RegistryClient:
    """A client for a catalog registry; credential/CA problems become catalog SourceErrors."""
    try:
        return RegistryClient.from_docker_config(
            registry, auth_file, ca_file=ca_file, insecure=insecure, retry=UPSTREAM_RETRY
        )
    except RegistryError as e:
        raise SourceError(catalog_reason(e), f"catalog registry {registry}: {e}") from e
    except OSError as e:
        raise SourceError(Reason.CATALOG_AUTH_FAILED, f"cannot read the catalog auth file: {e}") from e


def _upstream(chunks: Iterable[bytes], what: str) -> Iterator[bytes]:
    """The catalog's bytes; its failures become SourceErrors (push_blob re-raises them as they are)."""
    try:
        yield from chunks
    except DigestMismatch as e:
        raise SourceError(Reason.MANIFEST_INVALID, f"{what}: {e}; nothing was committed") from e
    except RegistryError as e:
        raise SourceError(catalog_reason(e), f"{what}: {e}") from e


def _counted(chunks: Iterable[bytes], progress: Progress | None) -> Iterator[bytes]:
    for c in chunks:
        if progress is not None:
            progress.advance(len(c))
        yield c


def _manifest_parts(body: bytes, where: str) -> tuple[dict, list[dict]]:
    """(config descriptor, layer descriptors) of a ModelPack manifest; ManifestInvalid otherwise."""
    if not modelpack.is_model_manifest(body):
        raise SourceError(
            Reason.MANIFEST_INVALID,
            f"{where} is not a ModelPack model artifact (artifactType/config media type); "
            "the catalog entry points at something else",
        )
    try:
        modelpack.parse_manifest(body)
        doc = json.loads(body)
    except (modelpack.ManifestError, ValueError) as e:
        raise SourceError(Reason.MANIFEST_INVALID, f"{where}: {e}") from e
    config = doc.get("config")
    ok = (
        isinstance(config, dict)
        and isinstance(config.get("digest"), str)
        and config["digest"].startswith("sha256:")
        and type(config.get("size")) is int
        and 0 <= config["size"] <= MAX_CONFIG
    )
    if not ok:
        raise SourceError(Reason.MANIFEST_INVALID, f"{where}: the config descriptor is missing or too large")
    return config, list(doc["layers"])


def import_artifact(
    source_ref: str,
    dest: Reference,
    dest_client: RegistryClient,
    *,
    auth_file: str | Path | None,
    ca_file: str | Path | None,
    progress: Progress | None = None,
    insecure: bool = False,
    admit: Callable[[int], None] | None = None,
) -> WorkerResult:
    """Copy ``REGISTRY/REPOSITORY@DIGEST`` into ``dest`` (tagged ``latest``) and describe it.

    ``admit`` gets the artifact's size from its manifest before any blob moves (``lib.capacity``).
    """
    try:
        src = Reference.parse(source_ref)
    except InvalidReference as e:
        raise SourceError(Reason.UNSUPPORTED_SOURCE, f"catalog source: {e}") from None
    if not src.digest or not src.digest.startswith("sha256:"):
        raise SourceError(
            Reason.UNSUPPORTED_SOURCE,
            f"catalog source {source_ref!r} must be pinned to a sha256 digest (REGISTRY/REPOSITORY@DIGEST)",
        )
    where = f"{src.registry}/{src.repository}@{src.digest}"
    up = upstream_client(src.registry, auth_file=auth_file, ca_file=ca_file, insecure=insecure)
    repo = dest.repository
    with up:
        try:
            manifest = up.get_manifest(src.repository, src.digest)
        except DigestMismatch as e:
            raise SourceError(Reason.MANIFEST_INVALID, f"{where}: {e}") from e
        except NotFound as e:
            raise SourceError(
                Reason.CATALOG_MODEL_NOT_FOUND,
                f"{where} no longer exists in the catalog registry; the catalog must keep the artifacts "
                f"it listed ({e})",
            ) from e
        except RegistryError as e:
            raise SourceError(catalog_reason(e), f"catalog registry {src.registry}: {e}") from e
        if manifest.digest != src.digest:  # get_manifest checks this too; never import another digest
            raise SourceError(Reason.MANIFEST_INVALID, f"{where}: manifest hashes to {manifest.digest}")
        config, layers = _manifest_parts(manifest.body, where)
        if admit is not None:
            admit(int(config["size"]) + sum(int(d["size"]) for d in layers))
        if progress is not None:
            progress.add_total(sum(int(d["size"]) for d in layers))

        # The config is small: read it whole (verified), resolve metadata from it, push it.
        cfg_bytes = b"".join(_upstream(_read_blob(up, src.repository, config["digest"]), f"{where} config"))
        if sha256_digest(cfg_bytes) != config["digest"] or len(cfg_bytes) != config["size"]:
            raise SourceError(Reason.MANIFEST_INVALID, f"{where}: the config blob does not match its digest")
        _push(dest_client, repo, [cfg_bytes], config, f"{where} config")

        for d in layers:
            digest, size = str(d["digest"]), int(d["size"])
            if dest_client.blob_exists(repo, digest) == size:  # re-run after a failure: skip copied blobs
                if progress is not None:
                    progress.advance(size)
                continue
            what = f"{where} layer {modelpack.filepath_of(d) or digest}"
            chunks = _upstream(_read_blob(up, src.repository, digest), what)
            _push(dest_client, repo, _counted(chunks, progress), d, what)

    media_type = manifest.media_type or OCI_MANIFEST
    try:
        dest_client.put_manifest(repo, TAG, manifest.body, media_type)
    except DigestMismatch as e:
        raise SourceError(Reason.MANIFEST_INVALID, f"DMCR stored the manifest differently: {e}") from e
    resolved = modelpack.resolved_from_config(cfg_bytes)
    _extra_resolved(resolved, cfg_bytes)
    return {
        "artifact": {
            "uri": f"{dest.registry}/{repo}@{src.digest}",
            "digest": src.digest,
            "mediaType": media_type,
            "sizeBytes": int(config["size"]) + sum(int(d["size"]) for d in layers),
        },
        "resolved": resolved,
        "source": {"resolvedType": "Catalog", "remoteDigest": src.digest},
    }


def _read_blob(client: RegistryClient, repo: str, digest: str) -> Iterator[bytes]:
    try:
        with client.open_blob(repo, digest) as chunks:
            yield from chunks
    except NotFound as e:
        raise SourceError(Reason.MANIFEST_INVALID, f"blob {digest} is missing upstream ({e})") from e


def _push(client: RegistryClient, repo: str, chunks: Iterable[bytes], desc: dict, what: str) -> None:
    try:
        client.push_blob(
            repo,
            chunks,
            digest=str(desc["digest"]),
            size=int(desc["size"]),
            media_type=str(desc["mediaType"]),
        )
    except DigestMismatch as e:
        raise SourceError(Reason.MANIFEST_INVALID, f"{what}: {e}") from e


# ModelPack capabilities → the Model's endpoint types / features (best effort; see docs/catalog.md).
_OUTPUT_ENDPOINT = {"embedding": "Embeddings", "image": "ImageGeneration"}


def _extra_resolved(resolved: ResolvedInfo, cfg_bytes: bytes) -> None:
    """paramSize → parameterCount and capabilities → endpoint types/features, when the config says."""
    try:
        cfg = (json.loads(cfg_bytes) or {}).get("config") or {}
    except (ValueError, AttributeError):
        return
    if not isinstance(cfg, dict):
        return
    count = parse_param_size(cfg.get("paramSize"))
    if count:
        resolved["parameterCount"] = count
    caps = cfg.get("capabilities")
    if not isinstance(caps, dict):
        return
    inputs = set(caps.get("inputTypes") or [])
    outputs = set(caps.get("outputTypes") or [])
    endpoints: list[str] = []
    features: list[str] = []
    if "text" in outputs:
        endpoints += ["Chat", "TextGeneration"]
        if "image" in inputs:
            endpoints.append("ImageToText")
        if "audio" in inputs:
            endpoints.append("SpeechToText")
    for out, ep in _OUTPUT_ENDPOINT.items():
        if out in outputs:
            endpoints.append(ep)
    if "image" in inputs:
        features.append("VisionInput")
    if "audio" in inputs:
        features.append("AudioInput")
    if "image" in outputs:
        features.append("ImageOutput")
    if caps.get("toolUsage") is True:
        features.append("ToolCalling")
    if caps.get("reasoning") is True:
        features.append("Thinking")
    if endpoints:
        resolved["supportedEndpointTypes"] = endpoints
    if features:
        resolved["supportedFeatures"] = features


_UNITS = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12, "Q": 10**15}


def parse_param_size(text: object) -> int | None:
    """``"22.7M"`` → 22700000; ``"8.03B"`` → 8030000000; None when not a size."""
    if not isinstance(text, str) or not text:
        return None
    t = text.strip().upper()
    scale = _UNITS.get(t[-1], 1)
    num = t[:-1] if t[-1] in _UNITS else t
    try:
        value = float(num)
    except ValueError:
        return None
    return int(round(value * scale)) if value > 0 else None
