"""The state of one upload session, shared by the request threads.

A session accepts one upload at a time. An upload is ``receiving`` while a
request feeds it, ``interrupted`` when that request was cut (its publishing
thread waits, registry blob session open, for a resume), and the session is
``published`` once a pipeline succeeded. A refused upload ends with an
``Outcome`` (status and JSON body) and the session goes back to ``idle``, so
the user can retry with the same URL and token. Expiry is read from an
injected clock so the state machine is tested without sleeping.

Reasons are the CRD's vocabulary; how a registry error maps to one is the
command line's business (``registry_reason``, injected).
"""

from __future__ import annotations

import hmac
import shutil
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lib import result as results
from lib.api.types import Reason, WorkerResult
from lib.archive import ArchiveError, ArchiveKind, Limits
from lib.capacity import Capacity, InsufficientCapacity
from lib.formats.errors import FormatError
from lib.oci import errors as oci_errors
from lib.progress import Progress
from lib.publish import PublishError
from lib.sources import upload as upload_source
from lib.sources.base import SourceError, SourceSnapshot
from lib.upload.framing import PutRequest
from lib.upload.pipe import Aborted, Feed

Publisher = Callable[[SourceSnapshot], WorkerResult]
Clock = Callable[[], datetime]
RegistryReason = Callable[[oci_errors.RegistryError], str]
ABANDON_WAIT = 30.0  # seconds to wait for an abandoned upload's pipeline to stop


def utc_now() -> datetime:
    return datetime.now(UTC)


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


class Refusal(Exception):
    """A request the session refuses from its headers: the status, message and extra headers."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, *, reason: str = ""
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.reason = reason  # "": UploadRejected (UploadExpired for 410)


def human_bytes(n: int) -> str:
    """``1 TiB``, ``1.5 GiB``: the limit as an uploader reads it."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.4g} {unit}"
    return f"{n} bytes"


def _default_registry_reason(exc: oci_errors.RegistryError) -> str:
    """Coarse; the command line injects the worker's full mapping (``jobs.common.registry_reason``)."""
    if isinstance(exc, oci_errors.InsufficientStorage):
        return Reason.INSUFFICIENT_STORAGE
    return Reason.REGISTRY_UNAVAILABLE


def outcome_for(exc: BaseException, registry_reason: RegistryReason = _default_registry_reason) -> Outcome:
    """HTTP status and body for whatever stopped a publish."""
    if isinstance(exc, ArchiveError):
        return Outcome(exc.status, results.error(Reason.UPLOAD_REJECTED, exc.message))
    if isinstance(exc, (PublishError, FormatError)):
        message = str(getattr(exc, "message", exc))
        return Outcome(422, results.error(Reason.UPLOAD_REJECTED, message))
    if isinstance(exc, SourceError):
        status = 507 if exc.reason == Reason.INSUFFICIENT_STORAGE else 400
        return Outcome(status, results.error(exc.reason, exc.message))
    if isinstance(exc, oci_errors.RegistryError):
        status = 507 if isinstance(exc, oci_errors.InsufficientStorage) else 502
        return Outcome(status, results.error(registry_reason(exc), f"registry: {exc}"))
    if isinstance(exc, Aborted):
        return Outcome(409, results.error(Reason.UPLOAD_REJECTED, f"upload abandoned: {exc}"))
    return Outcome(500, results.error(Reason.WORKER_FAILED, f"{type(exc).__name__}: {exc}"))


@dataclass(frozen=True)
class SessionConfig:
    """What the command line decides about a session."""

    token: str
    scratch_dir: str
    max_spool_bytes: int
    max_upload_bytes: int = 0  # 0: no limit
    expires_at: datetime | None = None
    limits: Limits = Limits()
    capacity: Capacity | None = None  # DMCR's capacity check (lib/capacity.py); None: no check


class Session:
    """One upload session's state machine; every method is safe from any request thread."""

    def __init__(
        self,
        config: SessionConfig,
        publisher: Publisher,
        *,
        clock: Clock = utc_now,
        on_percent: Callable[[int], None] | None = None,
        registry_reason: RegistryReason = _default_registry_reason,
    ):
        self.config = config
        self.publisher = publisher
        self.clock = clock
        self.on_percent = on_percent
        self.registry_reason = registry_reason
        self._token = config.token.encode()
        self._lock = threading.Lock()
        self.current: Upload | None = None
        self.expired = False
        self.result: WorkerResult | None = None
        self.finished = threading.Event()

    # -- auth and size
    def authorized(self, header: str | None) -> bool:
        """The bearer token, compared in constant time."""
        scheme, _, value = (header or "").partition(" ")
        given = value.strip().encode() if scheme.lower() == "bearer" else b""
        return hmac.compare_digest(given, self._token) and bool(self._token)

    def over_limit(self, size: int) -> bool:
        return 0 < self.config.max_upload_bytes < size

    def too_large(self, size: int | None = None) -> str:
        """The 413 message: the size seen (when known) and the limit, in bytes and readable."""
        limit = self.config.max_upload_bytes
        what = f"is {size} bytes" if size is not None else "is larger than that"
        return (
            f"this upload session accepts at most {limit} bytes ({human_bytes(limit)}); the upload {what}. "
            "Ask the cluster administrator to raise the limit (AI_MODELS_UPLOAD_MAX_BYTES)"
        )

    def due(self) -> bool:
        """The session's expiry time has passed (by the injected clock)."""
        return self.config.expires_at is not None and self.clock() >= self.config.expires_at

    # -- state
    def _live(self) -> Upload | None:
        cur = self.current
        if cur is not None and cur.done.is_set() and not cur.attached:
            self.current = cur = None
        return cur

    def state(self) -> tuple[str, int, int | None]:
        """``(state, offset, total)`` as ``HEAD /upload`` reports them."""
        with self._lock:
            cur = self._live()
            if self.result is not None:
                return "published", 0, None
            if cur is None:
                return "idle", 0, None
            return ("receiving" if cur.attached else "interrupted"), cur.feed.received, cur.total

    def check_capacity(self, req: PutRequest) -> None:
        """Refuse (507) a fresh upload whose announced size DMCR cannot hold, from its headers.

        Outside the lock: reading DMCR's usage is an API call. A resumed part was admitted
        with its first request; a chunked body without a declared total is not checked here
        (DMCR's own 507 still answers it).
        """
        fresh = req.range is None or req.range.start == 0
        size = req.announced_end()
        if self.config.capacity is None or not fresh or size <= 0:
            return
        try:
            self.config.capacity.admit(size)
        except InsufficientCapacity as e:
            raise Refusal(507, e.message, reason=e.reason) from None

    def begin(self, req: PutRequest) -> Upload:
        """Start a fresh upload or resume the interrupted one; ``Refusal`` otherwise."""
        self.check_capacity(req)
        with self._lock:
            cur = self._admit(req)
            if req.range is not None and req.range.start > 0:
                return self._resume(cur, req)
            self._check_spool(req)
            replaced, self.current = cur, self._start(req)
            new = self.current
        if replaced is not None:  # an interrupted upload the client chose to restart
            replaced.feed.abort("replaced by a new upload")
            replaced.done.wait(ABANDON_WAIT)
        return new

    def _admit(self, req: PutRequest) -> Upload | None:
        """Refuse what the session's state or the size limit forbids; the live upload, if any."""
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
        return cur

    def _check_spool(self, req: PutRequest) -> None:
        """A zip is spooled: refuse one that cannot fit before its body is read."""
        if req.kind != ArchiveKind.ZIP or req.total is None:
            return
        limit = self.config.max_spool_bytes
        if req.total > limit:
            raise Refusal(413, f"zip archives are limited to {limit} bytes (they are spooled)")
        try:
            free: int | None = shutil.disk_usage(self.config.scratch_dir).free
        except OSError:
            free = None
        if free is not None and req.total > free:
            raise Refusal(507, f"the upload volume has {free} bytes free, the zip needs {req.total}")

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
        """The publishing thread: the feed through the upload source into the publisher."""
        meta = upload_source.Upload(kind=up.kind, filename=up.filename, size=up.total)
        snap = upload_source.snapshot(
            up.feed,
            meta,
            limits=self.config.limits,
            scratch_dir=self.config.scratch_dir,
            max_spool_bytes=self.config.max_spool_bytes,
        )
        try:
            up.outcome = Outcome(201, dict(self.publisher(snap)))
        except BaseException as e:  # every failure becomes an answer; the session goes on
            if not isinstance(e, (ArchiveError, PublishError, FormatError, SourceError, Aborted)):
                traceback.print_exc()
            up.outcome = outcome_for(e, self.registry_reason)
        finally:
            snap.close()
            up.feed.consumer_finished()
            up.done.set()

    def detach(self, up: Upload) -> None:
        """No request feeds ``up`` any more (cut, refused, or answered)."""
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
            cur.done.wait(ABANDON_WAIT)
        return True
