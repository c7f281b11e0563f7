"""A resumable upload to an upload session (docs/upload.md, "Resumable uploads").

The server keeps an interrupted upload: ``HEAD /upload`` says how many bytes it
holds (``Upload-Offset``) and ``PUT`` with ``Content-Range: bytes N-LAST/TOTAL``
feeds the rest. So after a dropped connection the client asks, and sends only
what is missing; failures that made no progress are retried with exponential
backoff up to a bound. The file is read in 1 MiB pieces and hashed (SHA-256)
exactly once, as it is first sent.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from ai_models_cli.progress import Progress

CHUNK = 1 << 20
# Statuses worth another try with the same URL and token: the registry behind the
# server failed (502), a proxy in between (503/504), or our own dead connection still
# holds the session (409 while the server waits out its read timeout).
RETRYABLE = frozenset({409, 416, 500, 502, 503, 504})


class UploadError(Exception):
    """The upload cannot succeed by retrying: the message says why."""


@dataclass(frozen=True)
class Target:
    url: str
    token: str
    ca_file: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class ServerState:
    state: str  # idle | receiving | interrupted | published
    offset: int
    total: int | None


@dataclass
class Outcome:
    result: dict[str, Any] | None  # the server's result JSON; None when it was lost (published earlier)
    sha256: str  # of the local file
    size: int
    attempts: int
    resumed_from: list[int] = field(default_factory=list)


@dataclass
class Uploader:
    target: Target
    path: Path
    filename: str | None = None  # ?filename= (archives); default: the file's name unless it is a .gguf
    retries: int = 8  # consecutive attempts without progress
    backoff: float = 0.5
    max_backoff: float = 30.0
    timeout: float = 120.0
    progress: Progress | None = None
    sleep: Callable[[float], None] = time.sleep
    _hasher: Any = field(default_factory=hashlib.sha256, init=False)
    _hashed: int = field(default=0, init=False)

    # -- HTTP
    def _conn(self) -> http.client.HTTPConnection:
        u = urlsplit(self.target.url)
        if u.scheme == "https":
            ctx = ssl.create_default_context(cafile=self.target.ca_file)
            if self.target.insecure:
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            return http.client.HTTPSConnection(u.hostname or "", u.port, timeout=self.timeout, context=ctx)
        if u.scheme != "http":
            raise UploadError(f"unsupported URL scheme in {self.target.url!r}: use http or https")
        return http.client.HTTPConnection(u.hostname or "", u.port, timeout=self.timeout)

    def _path(self) -> str:
        u = urlsplit(self.target.url)
        path = u.path or "/upload"
        name = self.filename
        if name is None and not self.path.name.lower().endswith(".gguf"):
            name = self.path.name
        query = [q for q in u.query.split("&") if q and not q.startswith("filename=")]
        if name:
            query.append("filename=" + quote(name))
        return path + ("?" + "&".join(query) if query else "")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.target.token}"}

    def head(self) -> ServerState:
        conn = self._conn()
        try:
            conn.request("HEAD", self._path(), headers=self._headers())
            r = conn.getresponse()
            r.read()
        finally:
            conn.close()
        if r.status != 200:
            raise UploadError(_refusal(r.status, b"", "HEAD"))
        total = r.getheader("Upload-Length")
        return ServerState(
            r.getheader("Upload-State", "idle"),
            int(r.getheader("Upload-Offset", "0")),
            int(total) if total else None,
        )

    def _put(self, offset: int, size: int) -> tuple[int, bytes]:
        """One PUT of bytes [offset, size); ``OSError`` or ``HTTPException`` when the connection drops."""
        conn = self._conn()
        try:
            conn.putrequest("PUT", self._path(), skip_accept_encoding=True)
            for k, v in self._headers().items():
                conn.putheader(k, v)
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(size - offset))
            if offset:
                conn.putheader("Content-Range", f"bytes {offset}-{size - 1}/{size}")
            conn.endheaders()
            try:
                self._send_from(conn, offset, size)
            except OSError:
                # The server may have answered early (a refusal) and closed: read it if it is there.
                r = conn.getresponse()
                return r.status, r.read()
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def _send_from(self, conn: http.client.HTTPConnection, offset: int, size: int) -> None:
        with self.path.open("rb") as f:
            if offset > self._hashed:  # resuming an upload an earlier run started: hash what it sent
                f.seek(self._hashed)
                while self._hashed < offset:
                    piece = f.read(min(CHUNK, offset - self._hashed))
                    if not piece:
                        raise UploadError(f"{self.path} is shorter than the server's offset {offset}")
                    self._hasher.update(piece)
                    self._hashed += len(piece)
            f.seek(offset)
            pos = offset
            while pos < size:
                piece = f.read(min(CHUNK, size - pos))
                if not piece:
                    raise UploadError(f"{self.path} shrank while it was being uploaded")
                conn.send(piece)
                if pos <= self._hashed < pos + len(piece):
                    self._hasher.update(piece[self._hashed - pos :])
                    self._hashed = pos + len(piece)
                pos += len(piece)
                if self.progress:
                    self.progress.moved(pos, len(piece))

    # -- the loop
    def run(self) -> Outcome:
        size = self.path.stat().st_size
        attempts, failures, best = 0, 0, -1
        resumed: list[int] = []
        while True:
            attempts += 1
            try:
                st = self.head()
                if st.state == "published":
                    if self._hashed == size and best >= 0:  # our last bytes went out; the answer was lost
                        return Outcome(None, self._digest(), size, attempts, resumed)
                    raise UploadError("this upload session has already published a model")
                if st.state == "receiving":
                    raise _Retry("the server is still receiving the previous attempt")
                offset = st.offset if st.state == "interrupted" and st.total == size else 0
                if offset > best:
                    failures, best = 0, offset
                if offset:
                    resumed.append(offset)
                    self._note(f"resuming at byte {offset} of {size}")
                if self.progress:
                    self.progress.moved(offset)
                status, body = self._put(offset, size)
                if status == 201:
                    self._finish_hash(size)
                    return Outcome(json.loads(body), self._digest(), size, attempts, resumed)
                if status == 202 or status in RETRYABLE:
                    raise _Retry(_refusal(status, body, "PUT"))
                raise UploadError(_refusal(status, body, "PUT"))
            except (OSError, http.client.HTTPException, _Retry) as e:
                failures += 1
                if failures > self.retries:
                    raise UploadError(f"giving up after {attempts} attempts: {e}") from None
                delay = min(self.max_backoff, self.backoff * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
                self._note(f"attempt {attempts}: {_brief(e)}; retrying in {delay:.1f} s")
                self.sleep(delay)

    def _finish_hash(self, size: int) -> None:
        if self._hashed < size:
            with self.path.open("rb") as f:
                f.seek(self._hashed)
                while piece := f.read(CHUNK):
                    self._hasher.update(piece)
                    self._hashed += len(piece)

    def _digest(self) -> str:
        return "sha256:" + self._hasher.hexdigest()

    def _note(self, message: str) -> None:
        if self.progress:
            self.progress.note(message)


class _Retry(Exception):
    pass


def _brief(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _refusal(status: int, body: bytes, method: str) -> str:
    try:
        err = json.loads(body)["error"]
        detail = f"{err['reason']}: {err['message']}" if isinstance(err, dict) else str(err)
    except (ValueError, KeyError, TypeError):
        detail = body.decode(errors="replace")[:300] or http.client.responses.get(status, "")
    return f"{method} answered {status}: {detail}"


def verify(outcome: Outcome) -> list[str]:
    """What the result says against what was sent; empty when everything that can be compared agrees.

    The result names the ModelPack manifest (``artifact.digest``), which cannot be
    computed locally; the file's own digest is compared when the result carries it
    (``source.remoteDigest``), and the artifact digest must be a well-formed SHA-256.
    """
    problems: list[str] = []
    res = outcome.result or {}
    digest = (res.get("artifact") or {}).get("digest", "")
    if outcome.result is not None and not (digest.startswith("sha256:") and len(digest) == 71):
        problems.append(f"the result names no artifact digest: {json.dumps(res)[:200]}")
    remote = (res.get("source") or {}).get("remoteDigest")
    if remote and remote != outcome.sha256:
        problems.append(f"the server received {remote}, the file is {outcome.sha256}")
    return problems
