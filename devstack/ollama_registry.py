"""Put Ollama-shaped models into a real registry, and a redirector in front of it.

``registry.ollama.ai`` is an OCI distribution registry whose layers are raw
files typed ``application/vnd.ollama.image.*`` and whose config blob carries
``model_format``/``model_family``/``model_type``/``file_type``. Tests push
exactly that shape into Debian's ``docker-registry`` with plain ``requests``
(monolithic blob uploads, a Docker v2 or OCI manifest), so the adapter meets
a real registry's answers.

``BlobRedirector`` plays the real registry's habit of answering blob GETs
with 307 to object storage on another host: it listens on 127.0.0.1 (the
"registry", proxying manifests) and on 127.0.0.2 (the "object store",
proxying blob bytes with ``Range``), records the headers each host received,
and can tamper with a blob's bytes.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
OLLAMA = "application/vnd.ollama.image."


@dataclass(frozen=True)
class Pushed:
    repository: str
    tag: str
    digest: str  # manifest digest
    manifest: dict[str, Any]
    blobs: dict[str, bytes | Path]  # digest -> content


def _digest_of(content: bytes | Path) -> tuple[str, int]:
    if isinstance(content, bytes):
        return "sha256:" + hashlib.sha256(content).hexdigest(), len(content)
    h = hashlib.sha256()
    with content.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest(), content.stat().st_size


def push_blob(registry_url: str, repository: str, content: bytes | Path) -> tuple[str, int]:
    """Monolithic upload (POST, then PUT with the digest); returns (digest, size)."""
    digest, size = _digest_of(content)
    if requests.head(f"{registry_url}/v2/{repository}/blobs/{digest}", timeout=10).status_code == 200:
        return digest, size
    r = requests.post(f"{registry_url}/v2/{repository}/blobs/uploads/", timeout=10)
    r.raise_for_status()
    location = r.headers["Location"]
    if location.startswith("/"):
        location = registry_url + location
    sep = "&" if "?" in location else "?"
    if isinstance(content, bytes):
        r = requests.put(f"{location}{sep}digest={digest}", data=content, timeout=60,
                         headers={"Content-Type": "application/octet-stream"})
    else:
        with content.open("rb") as f:
            r = requests.put(f"{location}{sep}digest={digest}", data=f, timeout=600,
                             headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    r.raise_for_status()
    return digest, size


def push_manifest(registry_url: str, repository: str, tag: str, body: bytes, media_type: str) -> str:
    r = requests.put(f"{registry_url}/v2/{repository}/manifests/{tag}", data=body, timeout=10,
                     headers={"Content-Type": media_type})
    r.raise_for_status()
    return r.headers["Docker-Content-Digest"]


def default_config(**overrides: Any) -> dict[str, Any]:
    return {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "1B",
        "file_type": "Q4_K_M",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        **overrides,
    }


def push_ollama_model(
    registry_url: str,
    name: str,
    tag: str = "latest",
    *,
    layers: list[tuple[str, bytes | Path]],
    config: Mapping[str, Any] | bytes | None = None,
    manifest_media_type: str = DOCKER_MANIFEST,
    edit_manifest: Any = None,
) -> Pushed:
    """Push ``layers`` ([(short type like "model", content)]) as ``library/<name>:<tag>``.

    ``edit_manifest(doc)`` may change the manifest dict before it is pushed
    (to build broken ones).
    """
    repository = f"library/{name}"
    blobs: dict[str, bytes | Path] = {}
    descriptors = []
    for kind, content in layers:
        digest, size = push_blob(registry_url, repository, content)
        blobs[digest] = content
        media_type = kind if "/" in kind else OLLAMA + kind
        descriptors.append({"mediaType": media_type, "digest": digest, "size": size})
    config_bytes = config if isinstance(config, bytes) else json.dumps(
        dict(config) if config is not None else default_config()
    ).encode()
    config_digest, config_size = push_blob(registry_url, repository, config_bytes)
    blobs[config_digest] = config_bytes
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": manifest_media_type,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": descriptors,
    }
    if edit_manifest is not None:
        edit_manifest(doc)
    body = json.dumps(doc, indent=3).encode()
    digest = push_manifest(registry_url, repository, tag, body, manifest_media_type)
    return Pushed(repository, tag, digest, doc, blobs)


@dataclass
class Seen:
    host: str
    path: str
    headers: dict[str, str]


@dataclass
class BlobRedirector:
    """127.0.0.1 answers manifests (proxied) and 307s blobs to 127.0.0.2, which proxies their bytes."""

    registry_url: str
    tamper: set[str] = field(default_factory=set)  # blob digests served with one byte flipped
    announce_digest: str | None = None  # a Docker-Content-Digest to announce instead of the real one
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    store_url: str = ""
    _servers: list[http.server.ThreadingHTTPServer] = field(default_factory=list)

    def start(self) -> BlobRedirector:
        front = self._serve("127.0.0.1", self._front)
        store = self._serve("127.0.0.2", self._store)
        self.url = f"http://127.0.0.1:{front.server_address[1]}"
        self.store_url = f"http://127.0.0.2:{store.server_address[1]}"
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()

    def __enter__(self) -> BlobRedirector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, host: str, route: Any) -> http.server.ThreadingHTTPServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner.seen.append(Seen(self.headers.get("Host", ""), self.path, dict(self.headers)))
                route(self)

        server = http.server.ThreadingHTTPServer((host, 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._servers.append(server)
        return server

    def _front(self, h: http.server.BaseHTTPRequestHandler) -> None:
        path = urlsplit(h.path).path
        if "/blobs/" in path:
            h.send_response(307)
            h.send_header("Location", f"{self.store_url}{path}?X-Amz-Signature=abc")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        accept = h.headers.get("Accept", "")
        r = requests.get(f"{self.registry_url}{path}", headers={"Accept": accept}, timeout=10)
        headers = dict(r.headers)
        if self.announce_digest:
            headers["Docker-Content-Digest"] = self.announce_digest
        self._relay(h, r.status_code, headers, r.content)

    def _store(self, h: http.server.BaseHTTPRequestHandler) -> None:
        if "Authorization" in h.headers:
            self._relay(h, 400, {"Content-Type": "text/plain"}, b"presigned URL: no Authorization allowed")
            return
        path = urlsplit(h.path).path
        headers = {"Range": h.headers["Range"]} if "Range" in h.headers else {}
        r = requests.get(f"{self.registry_url}{path}", headers=headers, timeout=10)
        body = r.content
        digest = path.rsplit("/", 1)[-1]
        if digest in self.tamper and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self._relay(h, r.status_code, r.headers, body)

    @staticmethod
    def _relay(h: http.server.BaseHTTPRequestHandler, status: int, headers: Mapping[str, str], body: bytes) -> None:
        h.send_response(status)
        for k in ("Content-Type", "Docker-Content-Digest", "Content-Range", "Accept-Ranges"):
            if k in headers:
                h.send_header(k, headers[k])
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
