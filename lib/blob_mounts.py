"""Blobs DMCR already holds elsewhere: mount them instead of fetching them again.

The hook names, in ``--mount-from``, repositories this publish may read (any
ClusterModel's, other Models' of its namespace) that publish the same source;
the publish credential grants pull on exactly those (``lib.credentials``).
Before a file whose digest is known is fetched, each candidate is asked for a
cross-repository mount (``POST /v2/<repo>/blobs/uploads/?mount=&from=``): a
201 links the blob into this repository with no byte moved; a 202 (not
there) opens a session, which is cancelled, and the next candidate is tried.
Any refusal (no pull on the candidate, a candidate deleted meanwhile) only
means "not mounted": the file is fetched as before.

Small Hugging Face files have no sha256 up front, only a git blob id. Their
digest is looked up in the candidates' manifests by path and size, the blob
mounted, then read back from DMCR and checked against the git blob id, so a
candidate's manifest is never trusted: a mismatch fetches the file as usual.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from lib.modelpack import ANNOTATION_FILEPATH
from lib.oci.client import BlobWriter, RegistryClient
from lib.oci.errors import RegistryError
from lib.sources.base import SourceFile

TAG = "latest"
# Files checked by reading them back from DMCR (a git blob id, no sha256): small by nature.
MAX_VERIFIED_READ = 16 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass
class BlobMounts:
    client: RegistryClient
    repo: str
    candidates: tuple[str, ...]
    blobs: int = 0
    bytes: int = 0
    _layers: dict[str, dict[tuple[str, int], str]] = field(default_factory=dict)

    @classmethod
    def of(cls, client: RegistryClient, repo: str, candidates: Sequence[str]) -> BlobMounts | None:
        wanted = tuple(dict.fromkeys(c for c in candidates if c and c != repo))
        return cls(client, repo, wanted) if wanted else None

    def mount(self, digest: str) -> int | None:
        """Mount ``digest`` from the first candidate that has it; its size, or None."""
        for source in self.candidates:
            if self._mount_one(digest, source):
                size = self.client.blob_exists(self.repo, digest)
                if size is not None:
                    self.blobs += 1
                    self.bytes += size
                    return size
        return None

    def _mount_one(self, digest: str, source: str) -> bool:
        try:
            outcome = self.client.mount(self.repo, digest, source)
        except RegistryError:
            return False  # no pull on it, gone, or refused: fetch instead
        if isinstance(outcome, BlobWriter):
            outcome.cancel()
            return False
        return True

    def verified_digest(self, f: SourceFile, path: str) -> str | None:
        """A digest for a file known only by its git blob id, mounted here and checked; else None."""
        if not f.git_blob or f.size is None or f.size > MAX_VERIFIED_READ:
            return None
        for source in self.candidates:
            digest = self._layers_of(source).get((path, f.size))
            if digest is None:
                continue
            present = self.client.blob_exists(self.repo, digest)
            mounted = present is None and self._mount_one(digest, source)
            if mounted:
                present = self.client.blob_exists(self.repo, digest)
            if present is None or not self._git_blob_matches(digest, f):
                continue
            if mounted:
                self.blobs += 1
                self.bytes += present
            return digest
        return None

    def _git_blob_matches(self, digest: str, f: SourceFile) -> bool:
        git = hashlib.sha1(b"blob %d\x00" % (f.size or 0))
        try:
            with self.client.open_blob(self.repo, digest) as chunks:
                for chunk in chunks:
                    git.update(chunk)
        except RegistryError:
            return False
        return git.hexdigest() == f.git_blob

    def _layers_of(self, source: str) -> dict[tuple[str, int], str]:
        """``(path, size) -> digest`` of a candidate's published layers (read once; {} on failure)."""
        if source not in self._layers:
            self._layers[source] = _layers(self.client, source)
        return self._layers[source]


def _layers(client: RegistryClient, source: str) -> dict[tuple[str, int], str]:
    try:
        body = json.loads(client.get_manifest(source, TAG).body)
    except (RegistryError, ValueError):
        return {}
    out: dict[tuple[str, int], str] = {}
    layers = body.get("layers") if isinstance(body, dict) else None
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, dict):
            continue
        path = (layer.get("annotations") or {}).get(ANNOTATION_FILEPATH)
        size, digest = layer.get("size"), layer.get("digest")
        well_formed = isinstance(digest, str) and _DIGEST.fullmatch(digest) is not None
        if isinstance(path, str) and isinstance(size, int) and isinstance(digest, str) and well_formed:
            out[(path, size)] = digest
    return out
