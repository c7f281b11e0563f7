"""``python -m jobs upload-server``: receive one model upload and publish it while it arrives.

One process serves one upload session (docs/upload.md). ``PUT /upload``
with the session's bearer token streams the body through a bounded in-memory
``Feed`` into a publishing thread, which walks it (``lib.sources.upload``)
and pushes every file into its own blob. The request that completes the body
is answered with the pipeline's result: 201 and the result JSON (then the
process writes its result file and exits 0), or a 4xx/5xx with the reason,
after which the session keeps waiting for a better upload.

Resumable uploads: a request cut mid-body does not fail the upload. The
publishing thread simply waits for more bytes, with the registry's blob
session open and the hash state in memory; ``HEAD /upload`` reports
``Upload-Offset`` and a ``PUT`` with ``Content-Range: bytes N-LAST/TOTAL``
(what ``curl -C N -T FILE`` sends) feeds the rest. Nothing is spooled, so
resumption works for every upload type with the same memory bound.

Size: ``--max-upload-bytes`` caps the body's bytes (0: no cap). A request
announcing more (``Content-Length``, ``Content-Range``, offset + part) is
answered 413 before its body is read; a chunked body, or a resumed part, is
counted as it arrives and the upload is dropped at the first byte past the
cap, before that byte reaches the pipeline (nothing is tagged).

Expiry: once ``--expires-at`` has passed and no request is feeding an upload
(an interrupted one included), the server exits with ``UploadExpired``. A
request in flight at that moment is allowed to finish.
"""

from __future__ import annotations

import argparse
import collections
import hmac
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jobs.common import fail, finish, registry_client, registry_reason
from jobs.progress_annotation import reporter
from lib import result as results
from lib.api.types import Reason, WorkerResult
from lib.archive import ArchiveError, ArchiveKind, Limits, kind_from_filename
from lib.formats.errors import FormatError
from lib.oci import errors as oci_errors
from lib.oci.reference import Reference
from lib.progress import Progress
from lib.publish import PublishError, publish
from lib.sources import upload as upload_source
from lib.sources.base import SourceError, SourceSnapshot

CHUNK = 1 << 20
FEED_CAPACITY = 8 << 20  # bytes buffered between the socket and the pipeline
READ_TIMEOUT = 60.0  # a client silent this long counts as disconnected (resumable)
DISCARD_LIMIT = 256 << 10  # body bytes read and dropped after a refusal, so the client sees the answer
DISCARD_SECONDS = 1.0
MAX_CHUNK_LINE = 1024
UPLOAD_PATH = "/upload"

Publisher = Callable[[SourceSnapshot], WorkerResult]


class Aborted(Exception):
    """The upload was abandoned (replaced, expired): the pipeline must stop."""


class _Cut(Exception):
    """The request body ended before its announced length."""


# ---------------------------------------------------------------- the feed


class Feed:
    """The body of one upload, across requests, from the HTTP threads to the publishing thread.

    Bounded (``capacity`` bytes) so a fast client waits for a slow registry
    instead of filling memory. ``received`` counts every byte accepted: it is
    the resume offset, because an accepted byte is never lost (it is either
    in the buffer or already consumed by the pipeline).
    """

    def __init__(self, capacity: int = FEED_CAPACITY):
        self.capacity = capacity
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self.received = 0
        self._eof = False
        self._aborted: str | None = None
        self._consumer_done = False

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False (nothing queued) once the consumer has stopped."""
        with self._cond:
            while self._buffered >= self.capacity and not self._consumer_done:
                self._cond.wait()
            if self._consumer_done:
                return False
            self._chunks.append(data)
            self._buffered += len(data)
            self.received += len(data)
            self._cond.notify_all()
            return True

    def end(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def abort(self, why: str) -> None:
        with self._cond:
            self._aborted = why
            self._cond.notify_all()

    def consumer_finished(self) -> None:
        with self._cond:
            self._consumer_done = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes, blocking until some arrive; b"" at the end of the upload."""
        if n is None or n < 0:
            n = CHUNK
        with self._cond:
            while not self._chunks and not self._eof and self._aborted is None:
                self._cond.wait()
            if self._aborted is not None:
                raise Aborted(self._aborted)
            if not self._chunks:
                return b""
            first = self._chunks[0]
            if len(first) >= n or len(self._chunks) == 1:
                out = first[:n] if len(first) > n else first
                if len(first) > n:
                    self._chunks[0] = first[n:]
                else:
                    self._chunks.popleft()
            else:
                parts, size = [], 0
                while self._chunks and size < n:
                    c = self._chunks.popleft()
                    if size + len(c) > n:
                        self._chunks.appendleft(c[n - size :])
                        c = c[: n - size]
                    parts.append(c)
                    size += len(c)
                out = b"".join(parts)
            self._buffered -= len(out)
            self._cond.notify_all()
            return out


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class ContentRange:
    start: int
    last: int | None  # inclusive; None for '*'
    total: int | None


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+|\*)/(\d+|\*)$")


def parse_content_range(value: str) -> ContentRange:
    m = _CONTENT_RANGE.match(value.strip())
    if not m:
        raise ArchiveError(400, f"Content-Range {value!r}: expected 'bytes START-LAST/TOTAL'")
    start = int(m.group(1))
    last = None if m.group(2) == "*" else int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if last is not None and last < start:
        raise ArchiveError(400, f"Content-Range {value!r}: LAST is before START")
    if total is not None and last is not None and last >= total:
        raise ArchiveError(400, f"Content-Range {value!r}: LAST is beyond TOTAL")
    return ContentRange(start, last, total)


@dataclass(frozen=True)
class PutRequest:
    filename: str | None
    kind: ArchiveKind
    length: int | None  # Content-Length; None when chunked
    range: ContentRange | None

    @property
    def total(self) -> int | None:
        """The whole upload's size, when the request says it."""
        if self.range is not None:
            return self.range.total
        return self.length

    def announced_end(self) -> int:
        """The most bytes the upload will hold after this request, by its headers (0: unknown)."""
        start = self.range.start if self.range is not None else 0
        ends = [self.total or 0]
        if self.length is not None:
            ends.append(start + self.length)
        if self.range is not None and self.range.last is not None:
            ends.append(self.range.last + 1)
        return max(ends)


def parse_put(headers: Any, query: str) -> PutRequest:
    """Everything the PUT's headers and query say, checked before a body byte is read."""
    names = parse_qs(query, keep_blank_values=True).get("filename", [])
    if len(names) > 1:
        raise ArchiveError(400, "give ?filename= once")
    filename = names[0] if names else None
    kind = kind_from_filename(filename)
    te = (headers.get("Transfer-Encoding") or "").lower()
    length: int | None = None
    if te:
        if headers.get("Content-Length") is not None:
            # Both framings at once is how requests get smuggled; refuse rather than guess.
            raise ArchiveError(400, "send Content-Length or Transfer-Encoding: chunked, not both")
        if te != "chunked":
            raise ArchiveError(501, f"Transfer-Encoding {te!r} is not supported")
    else:
        raw = headers.get("Content-Length")
        if len({v.strip() for v in headers.get_all("Content-Length") or []}) > 1:
            # Two lengths: a proxy may frame by one and we by the other (smuggling, or a size lie).
            raise ArchiveError(400, "Content-Length is given more than once with different values")
        if raw is None or not raw.strip().isdigit():
            raise ArchiveError(411, "the upload needs a Content-Length or chunked transfer encoding")
        length = int(raw)
    cr = headers.get("Content-Range")
    rng = parse_content_range(cr) if cr else None
    if rng and length is not None and rng.last is not None and rng.last - rng.start + 1 != length:
        raise ArchiveError(400, f"Content-Range {cr!r} does not match Content-Length {length}")
    return PutRequest(filename, kind, length, rng)


def body_chunks(rfile: Any, length: int | None) -> Iterator[bytes]:
    """The request body as it arrives; ``_Cut`` when it ends early."""
    if length is None:
        yield from _dechunked(rfile)
        return
    remaining = length
    while remaining:
        # read() fills whole chunks (fewer, larger pieces downstream). If the
        # socket fails inside a read, that read's bytes are dropped, but they
        # never reached the feed, so the resume offset stays exact.
        b = rfile.read(min(CHUNK, remaining))
        if not b:
            raise _Cut(f"{length - remaining} of {length} bytes")
        remaining -= len(b)
        yield b


def _dechunked(rfile: Any) -> Iterator[bytes]:
    while True:
        line = rfile.readline(MAX_CHUNK_LINE)
        if not line:
            raise _Cut("chunked body cut")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ArchiveError(400, "malformed chunked transfer encoding") from None
        if size == 0:
            while True:  # trailers
                t = rfile.readline(MAX_CHUNK_LINE)
                if not t:
                    raise _Cut("chunked body cut in trailers")
                if t in (b"\r\n", b"\n"):
                    return
        while size:
            b = rfile.read(min(CHUNK, size))
            if not b:
                raise _Cut("chunked body cut")
            size -= len(b)
            yield b
        if rfile.readline(MAX_CHUNK_LINE) not in (b"\r\n", b"\n"):
            raise ArchiveError(400, "malformed chunked transfer encoding")


# ---------------------------------------------------------------- the session


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status < 300


@dataclass
class Upload:
    """One upload attempt: its feed, its publishing thread and, at the end, its outcome."""

    kind: ArchiveKind
    filename: str | None
    total: int | None
    feed: Feed
    progress: Progress
    attached: bool = True  # a request is feeding it or waiting for its outcome
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    paths: list[str] = field(default_factory=list)


class Refusal(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _error_body(reason: str, message: str) -> dict[str, Any]:
    return results.error(reason, message)


def human_bytes(n: int) -> str:
    """``1 TiB``, ``1.5 GiB``: the limit as an uploader reads it."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.4g} {unit}"
    return f"{n} bytes"


def outcome_for(exc: BaseException, paths: list[str]) -> Outcome:
    """HTTP status and body for whatever stopped a publish."""
    if isinstance(exc, ArchiveError):
        return Outcome(exc.status, _error_body(Reason.UPLOAD_REJECTED, exc.message))
    if isinstance(exc, (PublishError, FormatError)):
        message = str(getattr(exc, "message", exc))
        return Outcome(422, _error_body(Reason.UPLOAD_REJECTED, message))
    if isinstance(exc, SourceError):
        status = 507 if exc.reason == Reason.INSUFFICIENT_STORAGE else 400
        return Outcome(status, _error_body(exc.reason, exc.message))
    if isinstance(exc, oci_errors.RegistryError):
        status = 507 if isinstance(exc, oci_errors.InsufficientStorage) else 502
        return Outcome(status, _error_body(registry_reason(exc, destination=True), f"registry: {exc}"))
    if isinstance(exc, Aborted):
        return Outcome(409, _error_body(Reason.UPLOAD_REJECTED, f"upload abandoned: {exc}"))
    return Outcome(500, _error_body(Reason.WORKER_FAILED, f"{type(exc).__name__}: {exc}"))


class Session:
    """The state of one upload session, shared by the request threads."""

    def __init__(
        self,
        *,
        token: str,
        publisher: Publisher,
        scratch_dir: str,
        max_spool_bytes: int,
        max_upload_bytes: int = 0,
        limits: Limits = Limits(),
        on_percent: Callable[[int], None] | None = None,
    ):
        self._token = token.encode()
        self.publisher = publisher
        self.scratch_dir = scratch_dir
        self.max_spool_bytes = max_spool_bytes
        self.max_upload_bytes = max_upload_bytes  # 0: no limit
        self.limits = limits
        self.on_percent = on_percent
        self._lock = threading.Lock()
        self.current: Upload | None = None
        self.expired = False
        self.result: WorkerResult | None = None
        self.finished = threading.Event()

    # -- auth
    def authorized(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        given = value.strip().encode() if scheme.lower() == "bearer" else b""
        return hmac.compare_digest(given, self._token) and bool(self._token)

    # -- size
    def over_limit(self, size: int) -> bool:
        return 0 < self.max_upload_bytes < size

    def too_large(self, size: int | None = None) -> str:
        """The 413 message: the size seen (when known) and the limit, in bytes and readable."""
        limit = self.max_upload_bytes
        what = f"is {size} bytes" if size is not None else "is larger than that"
        return (
            f"this upload session accepts at most {limit} bytes ({human_bytes(limit)}); the upload {what}. "
            "Ask the cluster administrator to raise the limit (AI_MODELS_UPLOAD_MAX_BYTES)"
        )

    # -- state
    def _live(self) -> Upload | None:
        cur = self.current
        if cur is not None and cur.done.is_set() and not cur.attached:
            self.current = cur = None
        return cur

    def state(self) -> tuple[str, int, int | None]:
        with self._lock:
            cur = self._live()
            if self.result is not None:
                return "published", 0, None
            if cur is None:
                return "idle", 0, None
            return ("receiving" if cur.attached else "interrupted"), cur.feed.received, cur.total

    def begin(self, req: PutRequest) -> Upload:
        """Start a fresh upload or resume the interrupted one; ``Refusal`` otherwise."""
        replaced: Upload | None = None
        with self._lock:
            if self.result is not None:
                raise Refusal(409, "this session has already published a model")
            if self.expired:
                raise Refusal(410, "the upload session has expired; ask for a new session")
            cur = self._live()
            if cur is not None and cur.attached:
                raise Refusal(409, "another upload is in progress in this session")
            if self.over_limit(req.announced_end()):
                headers = {"Upload-Offset": str(cur.feed.received)} if cur is not None else {}
                raise Refusal(413, self.too_large(req.announced_end()), headers)
            if req.range is not None and req.range.start > 0:
                return self._resume(cur, req)
            if req.kind == ArchiveKind.ZIP and req.total is not None and req.total > self.max_spool_bytes:
                raise Refusal(
                    413, f"zip archives are limited to {self.max_spool_bytes} bytes (they are spooled)"
                )
            if req.kind == ArchiveKind.ZIP and req.total is not None:
                try:
                    free = shutil.disk_usage(self.scratch_dir).free
                except OSError:
                    free = None
                if free is not None and req.total > free:
                    raise Refusal(507, f"the upload volume has {free} bytes free, the zip needs {req.total}")
            replaced, self.current = cur, self._start(req)
            new = self.current
        if replaced is not None:  # an interrupted upload the client chose to restart
            replaced.feed.abort("replaced by a new upload")
            replaced.done.wait(30)
        return new

    def _resume(self, cur: Upload | None, req: PutRequest) -> Upload:
        assert req.range is not None
        offset = cur.feed.received if cur is not None else 0
        headers = {"Upload-Offset": str(offset)}
        if cur is None:
            raise Refusal(416, "there is no interrupted upload to resume: upload from the start", headers)
        if req.range.start != offset:
            raise Refusal(416, f"the server has {offset} bytes of this upload: resume from there", headers)
        if req.kind != cur.kind or req.filename != cur.filename:
            raise Refusal(400, "resume with the same ?filename= as the interrupted upload", headers)
        if req.range.total is not None and cur.total is not None and req.range.total != cur.total:
            raise Refusal(400, f"the interrupted upload is {cur.total} bytes, not {req.range.total}", headers)
        if cur.total is None and req.range.total is not None:
            cur.total = req.range.total
        cur.attached = True
        return cur

    def _start(self, req: PutRequest) -> Upload:
        up = Upload(
            kind=req.kind,
            filename=req.filename,
            total=req.total,
            feed=Feed(),
            progress=Progress(total=req.total, on_percent=self.on_percent),
        )
        threading.Thread(target=self._publish, args=(up,), name="publish", daemon=True).start()
        return up

    def _publish(self, up: Upload) -> None:
        meta = upload_source.Upload(kind=up.kind, filename=up.filename, size=up.total)
        snap = upload_source.snapshot(
            up.feed,
            meta,
            limits=self.limits,
            scratch_dir=self.scratch_dir,
            max_spool_bytes=self.max_spool_bytes,
        )
        gen = snap.files

        def recorded() -> Iterator[Any]:
            for f in gen:
                up.paths.append(f.path)
                yield f

        snap.files = recorded()  # type: ignore[assignment]
        try:
            result = self.publisher(snap)
            up.outcome = Outcome(201, dict(result))
        except BaseException as e:  # every failure becomes an answer; the session goes on
            if not isinstance(e, (ArchiveError, PublishError, FormatError, SourceError, Aborted)):
                traceback.print_exc()
            up.outcome = outcome_for(e, up.paths)
        finally:
            gen.close()  # type: ignore[attr-defined]
            up.feed.consumer_finished()
            up.done.set()

    def detach(self, up: Upload) -> None:
        with self._lock:
            up.attached = False

    def complete(self, up: Upload, result: WorkerResult) -> None:
        with self._lock:
            self.result = result
            up.attached = False
        self.finished.set()

    def expire(self) -> bool:
        """Mark the session expired; True when nothing is in flight (the server may stop)."""
        with self._lock:
            self.expired = True
            cur = self._live()
            if cur is not None and cur.attached:
                return False
        if cur is not None:
            cur.feed.abort("the session expired")
            cur.done.wait(30)
        return True


# ---------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ai-models-upload/1"
    timeout = READ_TIMEOUT
    session: Session  # set on the subclass made by ``make_server``

    def handle_expect_100(self) -> bool:
        # The 100 is sent by do_PUT once the token and headers are accepted,
        # so a refused client never starts sending its multi-GB body.
        return True

    def log_message(self, format: str, *args: Any) -> None:
        print(f"upload-server: {self.address_string()} {format % args}", file=sys.stderr, flush=True)

    # -- answers
    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _refuse(
        self, status: int, message: str, headers: dict[str, str] | None = None, *, reason: str = ""
    ) -> None:
        """Answer without reading the body, then close (never drain a large body)."""
        self.close_connection = True
        reason = reason or (Reason.UPLOAD_EXPIRED if status == 410 else Reason.UPLOAD_REJECTED)
        self._send_json(status, _error_body(reason, message), headers)
        self._linger()

    def _linger(self) -> None:
        """Let a client that sent its body without waiting for 100 read our answer.

        Closing a socket with unread bytes makes the kernel send a reset,
        which can destroy the answer before the client reads it; so the
        server stops sending, drops a bounded amount of the body, then closes.
        """
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(DISCARD_SECONDS / 4)
            deadline = time.monotonic() + DISCARD_SECONDS
            dropped = 0
            while dropped < DISCARD_LIMIT and time.monotonic() < deadline:
                b = self.rfile.read1(65536)
                if not b:
                    break
                dropped += len(b)
        except OSError:
            pass

    def _authorized(self) -> bool:
        if self.session.authorized(self.headers.get("Authorization")):
            return True
        self._refuse(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="upload"'})
        return False

    # -- methods
    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/healthz":
            self._send_json(200, {"status": "ok"})
            return
        self._refuse(404 if urlsplit(self.path).path != UPLOAD_PATH else 405, "use PUT /upload")

    def do_HEAD(self) -> None:
        if urlsplit(self.path).path != UPLOAD_PATH:
            self._refuse(404, "use PUT /upload")
            return
        if not self._authorized():
            return
        state, offset, total = self.session.state()
        headers = {"Upload-Offset": str(offset), "Upload-State": state}
        if total is not None:
            headers["Upload-Length"] = str(total)
        if offset:
            headers["Range"] = f"bytes=0-{offset - 1}"
        self._send_json(200, {"state": state, "offset": offset}, headers)

    def do_POST(self) -> None:
        self._refuse(405, "use PUT /upload")

    do_DELETE = do_PATCH = do_POST

    def do_PUT(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != UPLOAD_PATH:
            self._refuse(404, "use PUT /upload")
            return
        if not self._authorized():
            return
        try:
            req = parse_put(self.headers, parts.query)
            up = self.session.begin(req)
        except ArchiveError as e:
            self._refuse(e.status, e.message)
            return
        except Refusal as e:
            self._refuse(e.status, e.message, e.headers)
            return
        if (self.headers.get("Expect") or "").lower() == "100-continue":
            self.send_response_only(100)
            self.end_headers()
        self._receive(up, req)

    def _drop(self, up: Upload, status: int, message: str) -> None:
        """Abandon the upload (the pipeline stops before tagging anything) and refuse the request."""
        up.feed.abort(message)
        up.done.wait(30)
        self.session.detach(up)
        self._refuse(status, message)

    def _receive(self, up: Upload, req: PutRequest) -> None:
        complete = stopped = False
        try:
            for chunk in body_chunks(self.rfile, req.length):
                held = up.feed.received + len(chunk)
                if up.total is not None and held > up.total:
                    self._drop(up, 400, f"the body has more than the announced {up.total} bytes")
                    return
                if self.session.over_limit(held):  # chunked, or parts that add up
                    self._drop(up, 413, self.session.too_large())
                    return
                if not up.feed.write(chunk):
                    stopped = True  # the pipeline refused the upload: answer now
                    break
                up.progress.advance(len(chunk))
            else:
                complete = True
        except ArchiveError as e:  # malformed chunked encoding
            self._drop(up, e.status, e.message)
            return
        except (_Cut, OSError) as e:
            # Disconnected or silent: keep everything received; HEAD + Content-Range resume it.
            self.close_connection = True
            self.session.detach(up)
            self.log_message("upload interrupted at byte %d (%s); waiting for a resume", up.feed.received, e)
            return
        if complete and not stopped and (up.total is None or up.feed.received == up.total):
            up.feed.end()
        elif complete and not stopped:
            # This request carried a part; the upload continues with the next Content-Range.
            self.session.detach(up)
            if not up.done.is_set():
                self._send_json(202, {"offset": up.feed.received}, {"Upload-Offset": str(up.feed.received)})
                return
        up.done.wait()
        outcome = up.outcome or Outcome(500, _error_body(Reason.WORKER_FAILED, "no outcome"))
        if outcome.ok:
            up.progress.emit()
            self.close_connection = True
            self._send_json(outcome.status, outcome.body)
            self.session.complete(up, outcome.body)  # type: ignore[arg-type]
            return
        self.session.detach(up)
        if stopped:  # the client is still sending: answer, then close
            err = outcome.body["error"]
            self._refuse(outcome.status, err["message"], reason=err["reason"])
            return
        self._send_json(outcome.status, outcome.body)


def make_server(listen: str, session: Session) -> ThreadingHTTPServer:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    handler = type("SessionHandler", (Handler,), {"session": session})

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return Server((host, int(port)), handler)


# ---------------------------------------------------------------- entry point


def parse_expiry(value: str) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def serve(
    session: Session,
    server: ThreadingHTTPServer,
    expires_at: datetime | None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    poll: float = 0.5,
    stop: threading.Event | None = None,
) -> WorkerResult | None:
    """Serve until a model is published (its result) or the session expires (None).

    ``stop`` ends the session as if it expired (tests, signal handlers).
    """
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        while not session.finished.wait(poll):
            due = (expires_at is not None and now() >= expires_at) or (stop is not None and stop.is_set())
            if due and session.expire():
                if session.finished.is_set():  # published at the last moment
                    break
                return None
        return session.result
    finally:
        server.shutdown()
        server.server_close()


def run(args: argparse.Namespace) -> int:
    return run_session(args)


def run_session(args: argparse.Namespace, *, stop: threading.Event | None = None) -> int:
    """``run`` with a ``stop`` event that ends the session early (see ``serve``)."""
    rf = args.result_file
    try:
        dest = Reference.parse(args.destination)
    except ValueError as e:
        return fail(rf, Reason.PUBLICATION_FAILED, f"--destination: {e}")
    try:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        return fail(rf, Reason.WORKER_FAILED, f"--token-file: {e}")
    if not token:
        return fail(rf, Reason.WORKER_FAILED, f"--token-file {args.token_file} is empty")
    try:
        os.makedirs(args.scratch_dir, mode=0o700, exist_ok=True)  # the zip spool, and the free-space check
    except OSError as e:
        return fail(rf, Reason.WORKER_FAILED, f"--scratch-dir: {e}")
    try:
        expires_at = parse_expiry(args.expires_at or "")
    except ValueError:
        return fail(rf, Reason.WORKER_FAILED, f"--expires-at {args.expires_at!r} is not an RFC 3339 time")
    try:
        client = registry_client(
            dest.registry,
            auth_file=args.registry_auth_file,
            ca_file=args.registry_ca_file,
            insecure=args.insecure_registry,
        )
    except (OSError, ValueError, oci_errors.RegistryError) as e:
        return fail(rf, Reason.PUBLICATION_FAILED, f"destination registry credentials: {e}")

    def publisher(snapshot: SourceSnapshot) -> WorkerResult:
        # Progress counts the request bytes (compressed, for archives) in the handler.
        # The Model's name names the model when the upload does not (a GGUF's general.name).
        return publish(snapshot, dest, client, name=getattr(args, "model_name", "") or "")

    session = Session(
        token=token,
        publisher=publisher,
        scratch_dir=args.scratch_dir,
        max_spool_bytes=args.max_spool_bytes,
        max_upload_bytes=args.max_upload_bytes,
        on_percent=reporter(),
    )
    try:
        server = make_server(args.listen, session)
    except (OSError, ValueError) as e:
        return fail(rf, Reason.WORKER_FAILED, f"--listen {args.listen}: {e}")
    host, port = server.server_address[:2]
    print(
        f"upload-server: listening on {host!s}:{port}{UPLOAD_PATH} for {dest.registry}/{dest.repository}"
        + (f", session expires at {expires_at.isoformat()}" if expires_at else ""),
        file=sys.stderr,
        flush=True,
    )
    result = serve(session, server, expires_at, stop=stop)
    if result is None:
        when = expires_at.isoformat() if expires_at else "?"
        return fail(
            rf,
            Reason.UPLOAD_EXPIRED,
            f"the upload session expired at {when} before a model was uploaded; a new session with a "
            "new token is offered in the Model's status.upload",
        )
    return finish(rf, dict(result))
