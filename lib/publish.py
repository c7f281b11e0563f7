"""The publish pipeline: any source adapter → one verified ModelPack artifact.

Each file is streamed once from its source into its own blob. On the way the
bytes are counted, hashed by the registry client (which refuses to commit a
blob whose digest or size differs from what the source promised), and fed to
the file's format inspector, which reads headers without holding the file.
Only when every blob is in place are the config and then the manifest pushed,
so a failure at any point leaves nothing tagged (orphan blobs are left to the
registry's garbage collector).

When a source already knows a file's sha256 (Hugging Face LFS, Ollama,
catalogs, pre-hashed local files) and the repository holds that blob, no byte
is sent: the inspector reads just the header back from the registry.

The manifest digest depends on the files' bytes and paths and on what the
source says about the model (``descriptor``), never on the worker's paths,
the destination repository or the clock (docs/publish.md, "What the digest
depends on").
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from lib import modelpack
from lib.api.types import Reason, WorkerResult
from lib.formats.errors import FormatError
from lib.formats.inspect import FileFacts, inspector_for
from lib.formats.layout import Layout, detect_layout
from lib.formats.metadata import resolve
from lib.oci.client import Descriptor, RegistryClient
from lib.oci.errors import DigestMismatch
from lib.oci.reference import Reference
from lib.progress import Progress
from lib.sources.base import SourceFile, SourceSnapshot

TAG = "latest"


class PublishError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class PushedFile:
    path: str
    descriptor: Descriptor
    facts: FileFacts
    sent: bool  # False when the registry already held the blob


def check_path(path: str) -> str:
    """A file path inside the model: relative, normalised, no escape."""
    norm = posixpath.normpath(path) if path else ""
    if (
        not norm
        or norm == "."
        or norm.startswith("/")
        or "\\" in path
        or ".." in norm.split("/")
    ):
        raise PublishError(
            Reason.PUBLICATION_FAILED, f"refusing file path {path!r}: not a plain relative path"
        )
    return norm


def _counted(stream: Iterable[bytes], inspector: Any, progress: Progress | None) -> Iterator[bytes]:
    for chunk in stream:
        if not chunk:
            continue
        inspector.feed(chunk)
        if progress:
            progress.advance(len(chunk))
        yield chunk


def _inspect_existing(client: RegistryClient, repo: str, digest: str, size: int, inspector: Any) -> FileFacts:
    """Read back only as much of a present blob as its inspector needs."""
    if inspector.wants_more:
        with client.open_blob(repo, digest) as chunks:
            for chunk in chunks:
                inspector.feed(chunk)
                if not inspector.wants_more:
                    break
    return inspector.finish(size)


def push_file(
    client: RegistryClient, repo: str, f: SourceFile, progress: Progress | None = None
) -> PushedFile:
    path = check_path(f.path)
    inspector = inspector_for(path)
    digest = f"sha256:{f.sha256}" if f.sha256 else None
    if digest:
        present = client.blob_exists(repo, digest)
        if present is not None:
            if f.size is not None and present != f.size:
                raise PublishError(
                    Reason.PUBLICATION_FAILED,
                    f"{path}: the source says {f.size} bytes but blob {digest} has {present}",
                )
            facts = _inspect_existing(client, repo, digest, present, inspector)
            if progress:
                progress.advance(present)
            return PushedFile(path, Descriptor("", digest, present, {}), facts, sent=False)
    try:
        with f.open(0) as stream:
            desc = client.push_blob(repo, _counted(stream, inspector, progress), digest=digest, size=f.size)
    except DigestMismatch as e:
        raise PublishError(Reason.PUBLICATION_FAILED, f"{path}: {e}") from e
    facts = inspector.finish(desc.size)
    if f.remember is not None and desc.digest.startswith("sha256:"):
        f.remember(desc.digest[len("sha256:") :])
    return PushedFile(path, desc, facts, sent=True)


def bundle_root(paths: list[str]) -> str:
    """The one top directory every file sits under (``my-model/``), or ``""``.

    ``tar czf bundle.tgz my-model/`` is how most people pack a model, so such a
    prefix is dropped from the published file paths and the layout rules are
    applied below it.
    """
    tops = {p.split("/", 1)[0] for p in paths}
    if len(tops) == 1 and paths and all("/" in p for p in paths):
        return f"{tops.pop()}/"
    return ""


def _layout(paths: list[str]) -> tuple[Layout, str]:
    root = bundle_root(paths)
    return detect_layout([p[len(root) :] for p in paths]), root


def _select(files: list[SourceFile]) -> list[SourceFile]:
    layout, root = _layout([check_path(f.path) for f in files])
    keep = {root + p for p in (*layout.weights, *layout.configs, *layout.docs)}
    return [f for f in files if check_path(f.path) in keep]


def model_name(snapshot: SourceSnapshot, own: str, fallback: str) -> str:
    """``descriptor.name``: the source's name (HF repo id, Ollama name:tag), else the
    model's own (GGUF ``general.name``), else the Model's name; ``""`` leaves it out."""
    return snapshot.name or own.strip() or fallback


def publish(
    snapshot: SourceSnapshot,
    destination: Reference,
    client: RegistryClient,
    *,
    progress: Progress | None = None,
    name: str = "",
) -> WorkerResult:
    """Publish every file of ``snapshot`` and return the worker result.

    ``name`` (the Model's name) names the model in the ModelPack descriptor
    only when the source has no name of its own (``model_name``).
    """
    repo = destination.repository
    files: Iterable[SourceFile] = snapshot.files
    try:
        if isinstance(files, list):
            # The whole list is known: refuse a bad layout before any byte moves.
            files = _select(files)
            if progress is not None:
                progress.add_total(sum(f.size or 0 for f in files))
        pushed: dict[str, PushedFile] = {}
        for f in files:
            path = check_path(f.path)
            if path in pushed:
                raise PublishError(Reason.PUBLICATION_FAILED, f"{f.path}: the model has this file twice")
            pushed[path] = push_file(client, repo, f, progress)
        layout, root = _layout(sorted(pushed))
        facts = {p[len(root) :]: pf.facts for p, pf in pushed.items()}
        resolution = resolve(layout, facts, snapshot.hints)
    except FormatError as e:
        raise PublishError(Reason.PUBLICATION_FAILED, str(e)) from e

    layers: list[modelpack.Descriptor] = []
    for path in sorted({*layout.weights, *layout.configs, *layout.docs}):
        pf = pushed[root + path]
        role = layout.role(path)
        assert role is not None  # every path here is a weight, config or doc
        layers.append(
            modelpack.layer_descriptor(
                path, role, pf.descriptor.digest, pf.descriptor.size, mtime=snapshot.created
            )
        )
    config = modelpack.build_config(
        resolution,
        layers,
        name=model_name(snapshot, resolution.name, name),
        source_url=snapshot.source_url,
        revision=snapshot.revision,
        created=snapshot.created or None,
    )
    config_desc = client.push_bytes(repo, config, modelpack.CONFIG_MEDIA_TYPE)
    manifest = modelpack.build_manifest(
        {"mediaType": modelpack.CONFIG_MEDIA_TYPE, "digest": config_desc.digest, "size": config_desc.size},
        layers,
        {},
    )
    digest = client.put_manifest(repo, TAG, manifest, modelpack.MANIFEST_MEDIA_TYPE)
    size = config_desc.size + sum(layer["size"] for layer in layers)
    source: dict[str, str] = {"resolvedType": snapshot.resolved_type}
    if snapshot.revision:
        source["resolvedRevision"] = snapshot.revision
    if snapshot.remote_digest:
        source["remoteDigest"] = snapshot.remote_digest
    return {
        "artifact": {
            "uri": f"{destination.registry}/{repo}@{digest}",
            "digest": digest,
            "mediaType": modelpack.MANIFEST_MEDIA_TYPE,
            "sizeBytes": size,
        },
        "resolved": resolution.info,
        "source": source,  # type: ignore[typeddict-item]
        "metadata": {"partial": resolution.partial, "missing": list(resolution.missing)},
    }


__all__ = ["PublishError", "publish", "push_file"]
