"""Pull one ModelPack artifact's files into a directory: the counterpart of ``lib.publish``.

``lib.publish`` streams a source into verified blobs; this streams verified
blobs back into files. Used by the init container (``python -m jobs
materialize``), the node cache plugin (``jobs.node_cache``) and
``bench/bench_materialize.py``. What it promises:

* every file that appears at its final path was hashed while it streamed and
  matched its layer digest: bytes go to ``<path>.partial`` and are renamed only
  once verified, so a corrupted blob leaves nothing at the final path;
* an interrupted pull resumes: an existing ``.partial`` is re-hashed, then the
  rest is fetched with a ``Range`` from its size (also retried inside one run
  when the connection drops);
* a directory that already holds the artifact is skipped: the marker
  ``DIR/.ai-models-digest`` (the manifest digest) is written last, after every
  file is in place;
* file paths come from the manifest's ``org.cncf.model.filepath`` (or the older
  ``org.cnai`` annotation) and may not leave DIR;
* raw layers are written as files; tar layers (plain, gzip, zstd: what other
  ModelPack tools push, e.g. through a catalog import) are fetched and
  verified like any blob into ``DIR/.ai-models-tmp``, then unpacked with the
  member checks of ``lib.archive`` (no links, no escaping paths).

Every failure is a ``MaterializeError`` (or a ``RegistryError``, ``OSError``)
whose message is meant for the person reading the pod's status.
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lib import modelpack
from lib.oci.client import RegistryClient
from lib.oci.errors import DigestMismatch, Unreachable
from lib.retry import Attempts, RetryPolicy

MARKER = ".ai-models-digest"
PARTIAL = ".partial"
SCRATCH = ".ai-models-tmp"  # verified tar layer blobs, before unpacking
_TAR_KINDS = {"tar": "tar", "tar+gzip": "tar.gz", "tar+zstd": "tar.zst"}  # → lib.archive.ArchiveKind
HASH_CHUNK = 4 << 20
# Per blob, when the connection drops mid-stream: waits of 1 s, then 2 s.
RETRY = RetryPolicy(attempts=3, base_delay=1.0, max_delay=2.0, total=math.inf)


class MaterializeError(Exception):
    """A failure with a message meant for the person reading the pod's status."""


class CorruptBlob(MaterializeError):
    pass


@dataclass
class Summary:
    digest: str
    files: int = 0
    downloaded_bytes: int = 0
    reused_bytes: int = 0
    skipped: bool = False


Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    """The default ``log``: progress notes on stderr, where the init container's logs go."""
    print(f"materialize: {msg}", file=sys.stderr, flush=True)


Layers = list[tuple[str, modelpack.Descriptor]]  # (file path, layer descriptor): ``parse_manifest``


def read_manifest(client: RegistryClient, repository: str, digest: str) -> Layers:
    """The artifact's files, from its manifest fetched by digest and checked against it.

    Separate from ``materialize`` so that the node cache can size a download
    (and check a pod's credential) before it starts one.
    """
    manifest = client.get_manifest(repository, digest)
    actual = "sha256:" + hashlib.sha256(manifest.body).hexdigest()
    if actual != digest:
        raise CorruptBlob(f"manifest {digest} arrived as {actual}: refusing it")
    if not modelpack.is_model_manifest(manifest.body):
        raise MaterializeError(f"{repository}@{digest} is not a ModelPack model artifact")
    try:
        return modelpack.parse_manifest(manifest.body)
    except modelpack.ManifestError as e:
        raise MaterializeError(f"{repository}@{digest}: {e}") from None


def materialize(
    client: RegistryClient,
    repository: str,
    digest: str,
    into: Path,
    *,
    log: Log = _stderr,
    layers: Layers | None = None,
) -> Summary:
    """Make ``into`` hold exactly-verified copies of the artifact's files.

    ``layers``: what ``read_manifest`` returned for this digest, when the
    caller already has it (the manifest is then not fetched again).
    """
    into.mkdir(parents=True, exist_ok=True)
    marker = into / MARKER
    if _read_marker(marker) == digest:
        return Summary(digest=digest, skipped=True)
    marker.unlink(missing_ok=True)  # a different artifact was here: never mark a mixed state

    if layers is None:
        layers = read_manifest(client, repository, digest)

    root = into.resolve()
    summary = Summary(digest=digest)
    for path, desc in layers:
        kind = modelpack.layer_kind(desc["mediaType"])
        packaging = kind[1] if kind else "raw" if desc["mediaType"].endswith(".raw") else None
        if packaging == "raw":
            final = _inside(root, path)
        elif packaging in _TAR_KINDS:
            final = _inside(root, f"{SCRATCH}/{desc['digest'].split(':', 1)[1]}", ours=True)
        else:
            raise MaterializeError(f"layer {path} has media type {desc['mediaType']}, which it cannot unpack")
        fetched, reused = _fetch(client, repository, desc["digest"], desc["size"], final, log)
        summary.downloaded_bytes += fetched
        summary.reused_bytes += reused
        if packaging == "raw":
            summary.files += 1
        else:
            summary.files += _unpack(final, _TAR_KINDS[packaging], root, path)
    shutil.rmtree(into / SCRATCH, ignore_errors=True)
    tmp = into / (MARKER + PARTIAL)
    tmp.write_text(digest + "\n")
    os.replace(tmp, marker)
    return summary


def _unpack(blob: Path, kind: str, root: Path, layer_path: str) -> int:
    """Extract a verified tar layer into ``root`` (member paths checked by ``lib.archive``); drop the blob."""
    from lib import archive  # only tar layers need it (and its compressors): keep start-up short

    count = 0
    try:
        with open(blob, "rb") as f:
            for member in archive.walk_tar(f, archive.ArchiveKind(kind)):
                final = _inside(root, member.path)
                partial = final.with_name(final.name + PARTIAL)
                with open(partial, "wb") as out:
                    for chunk in member.chunks():
                        out.write(chunk)
                os.replace(partial, final)
                count += 1
    except archive.ArchiveError as e:
        raise MaterializeError(f"layer {layer_path}: {e.message}") from None
    blob.unlink()
    return count


def _read_marker(marker: Path) -> str | None:
    try:
        return marker.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _inside(root: Path, path: str, *, ours: bool = False) -> Path:
    """``root/path``, refusing anything that resolves outside ``root`` (``..``, symlinks).

    Names this step uses itself (marker, ``.partial``, scratch) are refused
    for the manifest's paths (``ours`` False).
    """
    final = (root / path).resolve()
    reserved = path.endswith(PARTIAL) or path == MARKER or path.split("/", 1)[0] == SCRATCH
    if final == root or root not in final.parents or (reserved and not ours):
        raise MaterializeError(f"file path {path!r} in the manifest escapes the target directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.parent.resolve() != final.parent:
        raise MaterializeError(f"file path {path!r} goes through a symbolic link")
    return final


def _hash_file(path: Path, h: hashlib._Hash, limit: int) -> int:
    """Feed at most ``limit`` bytes of ``path`` into ``h``; returns the count."""
    n = 0
    with open(path, "rb") as f:
        while n < limit:
            chunk = f.read(min(HASH_CHUNK, limit - n))
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    return n


def _fetch(
    client: RegistryClient, repo: str, digest: str, size: int, final: Path, log: Log
) -> tuple[int, int]:
    """Bring one blob to ``final``; returns (bytes fetched, bytes reused from disk)."""
    expected = digest.split(":", 1)[1]
    if final.is_file() and final.stat().st_size == size:
        h = hashlib.sha256()
        _hash_file(final, h, size)
        if h.hexdigest() == expected:
            return 0, size  # a previous run already placed it
    if final.exists() or final.is_symlink():
        final.unlink()

    partial = final.with_name(final.name + PARTIAL)
    h = hashlib.sha256()
    offset = 0
    if partial.is_file() and partial.stat().st_size <= size:
        offset = _hash_file(partial, h, size)
        if offset:
            log(f"resuming {final.name} at {offset} of {size} bytes")
    else:
        partial.unlink(missing_ok=True)
    reused, fetched = offset, 0
    partial.touch()

    tries = Attempts(RETRY)
    while offset < size:
        try:
            offset, got = _stream(client, repo, digest, size, partial, offset, h)
            fetched += got
        except (Unreachable, OSError) as e:
            if isinstance(e, OSError) and not _is_network_error(e):
                raise
            got_so_far = partial.stat().st_size if partial.exists() else 0
            fetched += max(0, got_so_far - offset)
            if not tries.failed():
                raise MaterializeError(
                    f"blob {digest} for {final.name}: connection failed {tries.failures} times ({e}); "
                    f"{got_so_far} of {size} bytes kept in {partial.name} for the next attempt"
                ) from None
            log(f"{final.name}: {e}; resuming at {got_so_far}")
            h = hashlib.sha256()
            offset = _hash_file(partial, h, size)
        except DigestMismatch as e:
            partial.unlink(missing_ok=True)
            raise CorruptBlob(
                f"blob {digest} for {final.name} is corrupted ({e}); nothing written at {final}"
            ) from None

    if h.hexdigest() != expected:
        partial.unlink(missing_ok=True)
        raise CorruptBlob(
            f"blob {digest} for {final.name} is corrupted: its bytes hash to sha256:{h.hexdigest()}; "
            f"nothing written at {final}"
        )
    os.replace(partial, final)
    return fetched, reused


def _stream(
    client: RegistryClient, repo: str, digest: str, size: int, partial: Path, offset: int, h: hashlib._Hash
) -> tuple[int, int]:
    """Append the blob from ``offset`` to ``partial``.

    ``h`` (fresh, or holding the re-hashed partial) is fed in the writer
    thread together with the disk write: sha256 and file writes release the
    GIL, so hashing overlaps the network read on the other core instead of
    following it (``bench/bench_materialize.py``: 0.56× curl with the hash in
    the reading thread). The caller compares ``h`` with the digest.
    """
    with (
        client.open_blob(repo, digest, offset=offset, verify=False) as chunks,
        _Writer(partial, offset, h) as out,
    ):
        for chunk in chunks:
            if out.queued + len(chunk) > size:
                out.abort()
                raise DigestMismatch(f"more than the {size} bytes the manifest declares")
            out.put(chunk)
    got = out.written - offset
    if out.written != size:
        raise Unreachable(f"stream ended after {out.written} of {size} bytes")
    return out.written, got


class _Writer:
    """Appends chunks to a file from a bounded queue in its own thread."""

    DEPTH = 8  # chunks in flight (the client reads 1 MiB at a time)

    def __init__(self, path: Path, offset: int, h: hashlib._Hash) -> None:
        self.path, self.h = path, h
        self.queued = self.written = offset
        self.queue: queue.Queue[bytes | None] = queue.Queue(self.DEPTH)
        self.error: BaseException | None = None
        self.aborted = False
        self.thread = threading.Thread(target=self._run, name="materialize-writer", daemon=True)

    def __enter__(self) -> _Writer:
        if self.path.stat().st_size != self.written:
            raise MaterializeError(f"{self.path} changed size while resuming")
        self.thread.start()
        return self

    def put(self, chunk: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(chunk)
        self.queued += len(chunk)

    def abort(self) -> None:
        self.aborted = True

    def _run(self) -> None:
        try:
            with open(self.path, "ab") as f:
                while (chunk := self.queue.get()) is not None:
                    if self.error is None:
                        f.write(chunk)
                        self.h.update(chunk)
                        self.written += len(chunk)
                if self.aborted:
                    f.truncate(0)
        except BaseException as e:  # handed to the reading thread
            self.error = e
            while self.queue.get() is not None:  # drain so the reader never blocks
                pass

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.aborted = self.aborted or exc[0] is DigestMismatch
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


def _is_network_error(e: OSError) -> bool:
    # requests' connection errors are OSErrors too; disk errors (ENOSPC, EACCES) are not retried.
    return e.errno is None
