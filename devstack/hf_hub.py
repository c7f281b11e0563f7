"""A local stand-in for the Hugging Face Hub HTTP API, serving repos from disk.

It speaks the documented protocol (``references.md``): model info at
``/api/models/{repo}/revision/{rev}?blobs=true`` with ``sha``,
``lastModified`` (the commit's date, ISO 8601 with milliseconds as the Hub
writes it; fixed per commit here) and ``createdAt`` (the repository's), and
``siblings[{rfilename, size, blobId, lfs{sha256, size}}]``; file downloads at
``/{repo}/resolve/{rev}/{file}``, where LFS files answer 302 to a "CDN" on
another host (127.0.0.2 when it binds, else ``localhost``) carrying
``X-Linked-Etag``/``X-Linked-Size``/``X-Repo-Commit``, and small files answer
200 with their git blob sha1 as ``ETag``; ``Range``; ``Authorization: Bearer``;
errors with ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``, ``GatedRepo``) and the Hub's status codes (anonymous
requests for missing or private repos get 401; gated downloads 401 without a
token, 403 with a token not granted). The CDN, like a presigned object store,
refuses requests that carry an ``Authorization`` header. Every request is
recorded (``log``) and every file byte sent counted per repository
(``bytes_served``), so a test can prove a publish fetched nothing.

Faults are switched on per file path (or ``"api"`` for the model-info call)
and consumed as they fire: 429s with rate-limit headers, 5xx, tampered bytes,
a connection cut after K bytes, a stalled read, a file that vanished.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

LFS_PATTERNS = (
    "*.safetensors", "*.gguf", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack",
    "*.onnx", "*.onnx_data", "*.ot", "*.tflite", "*.model", "*.zip", "*.tar.gz",
)
CHUNK = 1 << 20


def commit_date(commit: str) -> str:
    """A commit's date as the Hub writes ``lastModified``: fixed per commit, within 2024."""
    when = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=int(commit[:8], 16) % (365 * 86400))
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class HubFile:
    path: str
    size: int
    blob_id: str  # git blob sha1
    sha256: str
    lfs: bool
    data: bytes | None = None
    disk: Path | None = None

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) in chunks."""
        if self.data is not None:
            for i in range(start, end, CHUNK):
                yield self.data[i : min(end, i + CHUNK)]
            return
        assert self.disk is not None
        with self.disk.open("rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk


def _hash_file(source: bytes | Path) -> tuple[int, str, str]:
    """(size, git blob sha1, sha256)."""
    if isinstance(source, bytes):
        size = len(source)
        sha1 = hashlib.sha1(b"blob %d\x00" % size + source).hexdigest()
        return size, sha1, hashlib.sha256(source).hexdigest()
    size = source.stat().st_size
    h1 = hashlib.sha1(b"blob %d\x00" % size)
    h256 = hashlib.sha256()
    with source.open("rb") as f:
        while chunk := f.read(CHUNK):
            h1.update(chunk)
            h256.update(chunk)
    return size, h1.hexdigest(), h256.hexdigest()


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    commit: str
    refs: dict[str, str]  # revision name -> commit
    private: bool = False
    gated: bool = False
    granted: frozenset[str] = frozenset()  # tokens that may read (private) or download (gated)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    host: str
    path: str
    headers: dict[str, str]


@dataclass
class Faults:
    """Per-key fault switches; each holds how many more times it fires."""

    rate_limit: dict[str, list[Any]] = field(default_factory=dict)  # key -> [times, headers]
    server_error: dict[str, list[int]] = field(default_factory=dict)  # key -> [times, status]
    cut: dict[str, list[int]] = field(default_factory=dict)  # key -> [times, after_bytes]
    stall: dict[str, list[float]] = field(default_factory=dict)  # key -> [times, after_bytes, seconds]
    tamper: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)


class HubStandIn:
    """Start with ``with HubStandIn() as hub:``; ``hub.endpoint`` is the base URL."""

    def __init__(
        self,
        *,
        lfs_threshold: int = 10 * 1024 * 1024,
        tokens: frozenset[str] | set[str] = frozenset(),
        cdn_host: str = "127.0.0.2",
    ):
        self.lfs_threshold = lfs_threshold
        self.tokens = frozenset(tokens)  # every token the Hub accepts as valid
        self.repos: dict[str, HubRepo] = {}
        self.faults = Faults()
        self.log: list[RecordedRequest] = []
        self.bytes_served: dict[str, int] = {}  # repo id -> file body bytes sent (resolve + CDN)
        self.lock = threading.Lock()
        self._cdn_host = cdn_host
        self._servers: list[http.server.ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.endpoint = ""
        self.cdn = ""

    # -- content -------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Path | Mapping[str, bytes | Path],
        *,
        private: bool = False,
        gated: bool = False,
        granted: frozenset[str] | set[str] = frozenset(),
        refs: tuple[str, ...] = ("main",),
        **info: Any,
    ) -> HubRepo:
        """Serve ``files`` (a directory, or path -> bytes/Path) as ``repo_id``.

        ``info`` goes into the model-info answer (``pipeline_tag``,
        ``library_name``, ``tags``, ``cardData``, ...).
        """
        if isinstance(files, Path):
            files = {p.relative_to(files).as_posix(): p for p in sorted(files.rglob("*")) if p.is_file()}
        entries: dict[str, HubFile] = {}
        for path, source in sorted(files.items()):
            size, blob_id, sha256 = _hash_file(source)
            lfs = size >= self.lfs_threshold or any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p)
                                                    for p in LFS_PATTERNS)
            entries[path] = HubFile(
                path, size, blob_id, sha256, lfs,
                data=source if isinstance(source, bytes) else None,
                disk=source if isinstance(source, Path) else None,
            )
        commit = hashlib.sha1(
            repo_id.encode() + b"".join(f"{p}\0{f.blob_id}\n".encode() for p, f in entries.items())
        ).hexdigest()
        repo = HubRepo(repo_id, entries, commit, {r: commit for r in refs}, private, gated,
                       frozenset(granted), dict(info))
        self.repos[repo_id] = repo
        return repo

    # -- fault switches --------------------------------------------------------

    def rate_limit(self, key: str, times: int, headers: Mapping[str, str] | None = None) -> None:
        self.faults.rate_limit[key] = [times, dict(headers or {"Retry-After": "1"})]

    def server_error(self, key: str, times: int, status: int = 503) -> None:
        self.faults.server_error[key] = [times, status]

    def cut(self, key: str, after_bytes: int, times: int = 1) -> None:
        self.faults.cut[key] = [times, after_bytes]

    def stall(self, key: str, after_bytes: int, seconds: float, times: int = 1) -> None:
        self.faults.stall[key] = [times, after_bytes, seconds]

    def _take(self, table: dict[str, list[Any]], key: str) -> list[Any] | None:
        """Consume one firing of a fault, returning its parameters."""
        with self.lock:
            entry = table.get(key)
            if not entry or entry[0] <= 0:
                return None
            entry[0] -= 1
            return entry[1:]

    def requests_to(self, host: str) -> list[RecordedRequest]:
        return [r for r in self.log if r.host.split(":")[0] == host]

    def served(self, repo_id: str | None = None) -> int:
        """File body bytes sent so far, for one repository or all of them."""
        with self.lock:
            return sum(n for r, n in self.bytes_served.items() if repo_id in (None, r))

    def _count(self, repo_id: str, n: int) -> None:
        with self.lock:
            self.bytes_served[repo_id] = self.bytes_served.get(repo_id, 0) + n

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> HubStandIn:
        main = self._serve("127.0.0.1")
        self.endpoint = f"http://127.0.0.1:{main.server_address[1]}"
        try:
            cdn = self._serve(self._cdn_host)
            self.cdn = f"http://{self._cdn_host}:{cdn.server_address[1]}"
        except OSError:
            # No second loopback address: a different host name still counts as another host.
            self.cdn = f"http://localhost:{main.server_address[1]}"
        return self

    def _serve(self, host: str) -> http.server.ThreadingHTTPServer:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        server = http.server.ThreadingHTTPServer((host, 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)
        return server

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- helpers ---------------------------------------------------------------

    def _token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[7:].strip() if value.startswith("Bearer ") else None

    def _error(self, status: int, code: str = "", message: str = "", headers: Mapping[str, str] | None = None
               ) -> None:
        body = (f'{{"error": "{message}"}}').encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        if message:
            self.send_header("X-Error-Message", message)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, doc: Any) -> None:
        import json

        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _injected(self, key: str) -> bool:
        """Answer with an injected 429/5xx if one is armed for ``key``."""
        hub = self.hub
        limited = hub._take(hub.faults.rate_limit, key)
        if limited is not None:
            self._error(429, "", "rate limited", limited[0])
            return True
        failed = hub._take(hub.faults.server_error, key)
        if failed is not None:
            self._error(int(failed[0]), "", "internal error")
            return True
        return False

    def _repo_access(self, repo_id: str) -> HubRepo | None:
        """The repo if the caller may see it; otherwise answer the Hub's error and return None."""
        hub = self.hub
        token = self._token()
        if token is not None and token not in hub.tokens:
            self._error(401, "", "Invalid credentials in Authorization header")
            return None
        repo = hub.repos.get(repo_id)
        if repo is None or (repo.private and token not in repo.granted):
            # Anonymous callers cannot tell missing from private: both are 401.
            self._error(401 if token is None else 404, "RepoNotFound", "Repository not found")
            return None
        return repo

    # -- routes ------------------------------------------------------------------

    def do_GET(self) -> None:
        hub = self.hub
        with hub.lock:
            hub.log.append(RecordedRequest(self.headers.get("Host", ""), self.path, dict(self.headers)))
        path = urlsplit(self.path).path
        parts = [unquote(p) for p in path.split("/")[1:]]
        if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "revision":
            return self._model_info(f"{parts[2]}/{parts[3]}", "/".join(parts[5:]))
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        if len(parts) == 4 and parts[0] == "cdn":
            return self._cdn(f"{parts[1]}/{parts[2]}", parts[3])
        self._error(404, "", "no such route")

    def _model_info(self, repo_id: str, revision: str) -> None:
        if self._injected("api"):
            return
        repo = self._repo_access(repo_id)
        if repo is None:
            return
        commit = repo.refs.get(revision) or (revision if revision == repo.commit else None)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        siblings = []
        for f in repo.files.values():
            entry: dict[str, Any] = {"rfilename": f.path, "size": f.size, "blobId": f.blob_id}
            if f.lfs:
                entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            siblings.append(entry)
        doc = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit,
            "lastModified": commit_date(commit),
            "createdAt": "2022-03-02T23:29:04.000Z",
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "siblings": siblings,
            "usedStorage": sum(f.size for f in repo.files.values()),
            **repo.info,
        }
        self._json(doc)

    def _resolve(self, repo_id: str, revision: str, file: str) -> None:
        if self._injected(file):
            return
        repo = self._repo_access(repo_id)
        if repo is None:
            return
        token = self._token()
        if repo.gated and token not in repo.granted:
            if token is None:
                self._error(401, "GatedRepo", "Access to this model is restricted. You must be authenticated.")
            else:
                self._error(403, "GatedRepo", "Access to this model is restricted and you are not in the list.")
            return
        commit = repo.refs.get(revision) or (revision if revision == repo.commit else None)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        entry = repo.files.get(file)
        if entry is None or file in self.hub.faults.missing:
            self._error(404, "EntryNotFound", f"{file} does not exist on \"{revision}\"")
            return
        if entry.lfs:
            self.send_response(302)
            self.send_header("Location", f"{self.hub.cdn}/cdn/{quote(repo_id)}/{entry.sha256}?X-Amz-Signature=s3cr3t")
            self.send_header("X-Linked-Etag", f'"{entry.sha256}"')
            self.send_header("X-Linked-Size", str(entry.size))
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{entry.sha256}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_file(repo_id, entry, {"ETag": f'"{entry.blob_id}"', "X-Repo-Commit": commit})

    def _cdn(self, repo_id: str, sha256: str) -> None:
        if "Authorization" in self.headers:
            # Presigned object storage refuses a second auth mechanism.
            self._error(400, "", "Only one auth mechanism allowed")
            return
        repo = self.hub.repos.get(repo_id)
        entry = next((f for f in (repo.files.values() if repo else []) if f.sha256 == sha256), None)
        if entry is None:
            self._error(404, "", "NoSuchKey")
            return
        if self._injected(entry.path):
            return
        self._send_file(repo_id, entry, {"ETag": f'"{entry.sha256}"'})

    def _send_file(self, repo_id: str, entry: HubFile, extra: Mapping[str, str]) -> None:
        hub = self.hub
        start, end = 0, entry.size
        status = 200
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            first, _, last = header[6:].partition("-")
            start = int(first or 0)
            end = min(entry.size, int(last) + 1) if last else entry.size
            if start >= entry.size and entry.size > 0:
                self._error(416, "", "range not satisfiable", {"Content-Range": f"bytes */{entry.size}"})
                return
            status = 206
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{entry.size}")
        self.end_headers()

        key = entry.path
        faulty = (
            key in hub.faults.tamper
            or hub.faults.cut.get(key, [0])[0] > 0
            or hub.faults.stall.get(key, [0])[0] > 0
        )
        try:
            if not faulty and entry.disk is not None:
                with entry.disk.open("rb") as f:
                    hub._count(repo_id, self.connection.sendfile(f, start, end - start))
                return
            pos = start
            for chunk in entry.read(start, end):
                out = self._faulted(repo_id, entry, pos, chunk)
                if out is None:
                    return
                self.wfile.write(out)
                hub._count(repo_id, len(out))
                pos += len(out)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _faulted(self, repo_id: str, entry: HubFile, pos: int, chunk: bytes) -> bytes | None:
        """Apply tamper/cut/stall to ``chunk`` at file offset ``pos``; None when cut."""
        hub = self.hub
        key = entry.path
        if key in hub.faults.tamper and pos <= entry.size // 2 < pos + len(chunk):
            i = entry.size // 2 - pos
            chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
        cut = hub.faults.cut.get(key)
        if cut and cut[0] > 0 and pos <= cut[1] < pos + len(chunk) and hub._take(hub.faults.cut, key):
            self.wfile.write(chunk[: cut[1] - pos])
            hub._count(repo_id, cut[1] - pos)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        stall = hub.faults.stall.get(key)
        if stall and stall[0] > 0 and pos <= stall[1] < pos + len(chunk):
            params = hub._take(hub.faults.stall, key)
            if params:
                head = int(params[0]) - pos
                self.wfile.write(chunk[:head])
                hub._count(repo_id, head)
                time.sleep(params[1])
                chunk = chunk[head:]
        return chunk
