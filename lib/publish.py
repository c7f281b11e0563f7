"""The publish pipeline: any source adapter → one verified ModelPack artifact.

Each file is streamed once from its source into its own blob. On the way the
bytes are counted, hashed by the registry client (which refuses to commit a
blob whose digest or size differs from what the source promised), and fed to
the file's format inspector, which reads headers without holding the file.
Only when every blob is in place are the config and then the manifest pushed,
so a failure at any point leaves nothing tagged (orphan blobs are left to the
registry's garbage collector).

The layout (which files make the model) is decided from names before any
byte moves: from the whole list for a listed snapshot, and from the
stream's ``listing()`` for a streaming one that knows its names up front
(a direct GGUF, a zip). A tar stream names its files only as it reaches
them: each is pushed when reached, after its path is checked, and the
layout is checked after the last one, before the config and manifest; a
refusal there leaves only untagged, unreferenced blobs.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lib import modelpack
from lib.api.types import Reason, WorkerResult
from lib.blob_mounts import BlobMounts
from lib.formats.errors import FormatError
from lib.formats.inspect import FileFacts, inspector_for
from lib.formats.layout import Layout, detect_layout
from lib.formats.metadata import resolve
from lib.oci.client import Descriptor, RegistryClient
from lib.oci.descriptor import sha256_digest
from lib.oci.errors import DigestMismatch
from lib.oci.reference import Reference
from lib.progress import Progress
from lib.sources.base import FileStream, SourceFile, SourceSnapshot

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


INSPECT_WINDOW = 1 << 20  # ranged reads of a present blob: the registry sends no more than this ahead


def _inspect_existing(client: RegistryClient, repo: str, digest: str, size: int, inspector: Any) -> FileFacts:
    """Read back only as much of a present blob as its inspector needs, a window at a time.

    An unranged GET closed early still costs what the registry pushed into the socket
    buffers meanwhile (several MiB per mounted file, bench/bench_mounts.py).
    """
    offset = 0
    while inspector.wants_more and offset < size:
        fed = 0
        window = min(INSPECT_WINDOW, size - offset)
        with client.open_blob(repo, digest, offset=offset, length=window) as chunks:
            for chunk in chunks:
                inspector.feed(chunk)
                fed += len(chunk)
                if not inspector.wants_more:
                    break
        if not fed:
            break
        offset += fed  # what was read, whether or not the registry honoured the range
    return inspector.finish(size)


def push_file(
    client: RegistryClient,
    repo: str,
    f: SourceFile,
    progress: Progress | None = None,
    mounts: BlobMounts | None = None,
) -> PushedFile:
    path = check_path(f.path)
    inspector = inspector_for(path)
    digest = f"sha256:{f.sha256}" if f.sha256 else (mounts.verified_digest(f, path) if mounts else None)
    if digest:
        present = client.blob_exists(repo, digest)
        if present is None and mounts is not None:
            present = mounts.mount(digest)  # held by another repository this one may read
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


def _keep(paths: list[str]) -> set[str]:
    """The paths the layout publishes (``FormatError`` when there is no layout)."""
    layout, root = _layout([check_path(p) for p in paths])
    return {root + p for p in (*layout.weights, *layout.configs, *layout.docs)}


def _select(files: list[SourceFile]) -> list[SourceFile]:
    keep = _keep([f.path for f in files])
    return [f for f in files if check_path(f.path) in keep]


def _push_all(
    client: RegistryClient,
    repo: str,
    files: Iterable[SourceFile],
    progress: Progress | None,
    mounts: BlobMounts | None = None,
) -> dict[str, PushedFile]:
    pushed: dict[str, PushedFile] = {}
    for f in files:
        path = check_path(f.path)
        if path in pushed:
            raise PublishError(Reason.PUBLICATION_FAILED, f"{f.path}: the model has this file twice")
        pushed[path] = push_file(client, repo, f, progress, mounts)
    return pushed


def _streamed(stream: FileStream) -> Iterator[SourceFile]:
    """The stream's files, minus those its ``listing()`` shows the layout leaves out.

    The listing is checked before the first file is pulled, so a bad layout
    is refused before any byte is pushed; a left-out file is passed over
    unread (the stream moves on to the next member). Without a listing every
    file is pushed and the layout is checked once they are all in.
    """
    listing = stream.listing()
    keep = _keep(listing) if listing is not None else None
    for f in stream:
        if keep is None or check_path(f.path) in keep:
            yield f


def _push(
    client: RegistryClient,
    repo: str,
    snapshot: SourceSnapshot,
    progress: Progress | None,
    admit: Callable[[int], None] | None = None,
    mounts: BlobMounts | None = None,
) -> dict[str, PushedFile]:
    if snapshot.stream is not None:
        return _push_all(client, repo, _streamed(snapshot.stream), progress, mounts)
    # The whole list is known: refuse a bad layout, or a model DMCR cannot hold, before any byte moves.
    files = _select(snapshot.files)
    size = sum(f.size or 0 for f in files)
    if admit is not None:
        admit(size)
    if progress is not None:
        progress.add_total(size)
    return _push_all(client, repo, files, progress, mounts)


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
    admit: Callable[[int], None] | None = None,
    mount_from: Sequence[str] = (),
    commit_check: Callable[[int], None] | None = None,
) -> WorkerResult:
    """Publish every file of ``snapshot`` and return the worker result.

    ``name`` (the Model's name) names the model in the ModelPack descriptor
    only when the source has no name of its own (``model_name``). ``admit``
    gets the bytes of the files to publish, when the list is known, before the
    first one moves; it raises to refuse them (``lib.capacity``). ``mount_from``:
    repositories to mount known blobs from instead of fetching them (lib/blob_mounts.py).
    ``commit_check`` gets the artifact's size just before the manifest is tagged; it raises
    to refuse the publish, which then leaves nothing tagged (the blobs go to GC).
    """
    repo = destination.repository
    mounts = BlobMounts.of(client, repo, mount_from)
    try:
        pushed = _push(client, repo, snapshot, progress, admit, mounts)
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
    if mounts is not None and client.blob_exists(repo, sha256_digest(config)) is None:
        mounts.mount(sha256_digest(config))
    config_desc = client.push_bytes(repo, config, modelpack.CONFIG_MEDIA_TYPE)
    manifest = modelpack.build_manifest(
        {"mediaType": modelpack.CONFIG_MEDIA_TYPE, "digest": config_desc.digest, "size": config_desc.size},
        layers,
        {},
    )
    size = config_desc.size + sum(layer["size"] for layer in layers)
    if commit_check is not None:
        commit_check(size)
    digest = client.put_manifest(repo, TAG, manifest, modelpack.MANIFEST_MEDIA_TYPE)
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
        "mounted": {"blobs": mounts.blobs if mounts else 0, "bytes": mounts.bytes if mounts else 0},
    }


__all__ = ["PublishError", "publish", "push_file"]
