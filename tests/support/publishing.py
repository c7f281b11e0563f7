"""A publish that can be stopped half-way: the worker's registry client pushing a
ModelPack-shaped artifact whose weight bytes come from a source that pauses
after a given offset until the test lets it go on.

    gate = Gate(data, pause_at=len(data) // 2)
    t = PublishThread(client, repo, gate)   # config + first weights, then the gated ones
    gate.paused.wait(30)                     # mid-upload: a PATCH is open
    ...                                      # kill a replica, run GC, ...
    gate.resume.set(); t.join(60)
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator

from lib.oci.client import RegistryClient

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = b'{"descriptor": {"name": "gated"}}'
CHUNK = 256 << 10


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Gate:
    """Yields ``data`` in chunks, stopping once at ``pause_at`` until ``resume`` is set."""

    def __init__(self, data: bytes, pause_at: int):
        self.data, self.pause_at = data, pause_at
        self.paused, self.resume = threading.Event(), threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), CHUNK):
            if i >= self.pause_at and not self.resume.is_set():
                self.paused.set()
                if not self.resume.wait(120):
                    raise TimeoutError("the test never resumed the gated source")
            yield self.data[i : i + CHUNK]


def manifest(config: str, layers: list[tuple[str, int, str]]) -> bytes:
    """A ModelPack manifest: config + raw weight layers ``(digest, size, filepath)``."""
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": config,
                   "size": len(CONFIG)},
        "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": d, "size": n,
                    "annotations": {"org.cncf.model.filepath": path}} for d, n, path in layers],
    }).encode()


def expected_digest(first: bytes, gated: bytes) -> str:
    """The manifest digest an uninterrupted publish of the same files gets."""
    return sha256(manifest(sha256(CONFIG), [(sha256(first), len(first), "a.gguf"),
                                            (sha256(gated), len(gated), "b.gguf")]))


class PublishThread(threading.Thread):
    """config, ``first`` (whole), then the gate's bytes, then the manifest (by digest)."""

    def __init__(self, client: RegistryClient, repo: str, first: bytes, gate: Gate):
        super().__init__(daemon=True)
        self.client, self.repo, self.first, self.gate = client, repo, first, gate
        self.digest: str | None = None
        self.error: BaseException | None = None
        self.first_done = threading.Event()

    def run(self) -> None:
        try:
            c = self.client.push_bytes(self.repo, CONFIG, "application/vnd.cncf.model.config.v1+json")
            a = self.client.push_blob(self.repo, [self.first], digest=sha256(self.first), size=len(self.first))
            self.first_done.set()
            data = self.gate.data
            b = self.client.push_blob(self.repo, self.gate, size=len(data))
            body = manifest(c.digest, [(a.digest, a.size, "a.gguf"), (b.digest, b.size, "b.gguf")])
            self.digest = self.client.put_manifest(self.repo, sha256(body), body, OCI_MANIFEST)
        except BaseException as e:  # reported to the test
            self.error = e
            self.gate.paused.set()
