"""Blob transfer in distribution's vocabulary: a ``BlobWriter`` per upload session, ``Mounted``.

A writer owns one upload session (``POST /v2/<repo>/blobs/uploads/``) from
its opening to its end, which is exactly one of:

- ``commit(digest)`` — ``PUT <Location>&digest=…``; a provisional digest
  that the bytes written do not hash to is refused before the PUT is sent
  (``DigestMismatch``; the session is cancelled, nothing is committed);
- ``cancel()`` — ``DELETE <Location>``; safe to call again, and after a
  commit (then it does nothing). Leaving a ``with`` block without a commit
  cancels, so an error never leaves a session open.

``write(chunks, size=None)`` streams bytes in PATCH requests of up to
``segment_size`` bytes (``lib.oci.upload`` holds the state: hashing each byte
once, the held window for resumes). After a connection error, a timeout, a
5xx or a 401 during a PATCH it asks the registry where the session stands and
resumes from there while the bytes are held (docs/oci-client.md, "What is
resumable"). A failed ``write`` cancels the session.

A cross-repository mount is an outcome of its own, not an error:
``POST …?mount=<digest>&from=<repo>`` answers 201 (``Mounted``) or 202 with an
upload session opened instead, which ``mount`` hands back as a writer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import requests

from lib.oci import media_types as mt
from lib.oci import upload, urls
from lib.oci.challenge import Scope, repository_scope
from lib.oci.descriptor import Descriptor
from lib.oci.errors import (
    AuthError,
    DigestMismatch,
    InsufficientStorage,
    RegistryError,
    Unreachable,
    UploadInterrupted,
)
from lib.oci.exchange import Exchange
from lib.oci.transport import TRANSPORT_ERRORS, Transient
from lib.retry import Attempts

READ_CHUNK = 4 << 20  # bytes per read when streaming a blob down (larger reads: fewer Python iterations)
RETRY_ON_PATCH = (400, 404, 416)  # a PATCH the session refused: ask the registry where it stands


def push_scopes(repo: str) -> tuple[Scope, ...]:
    return (repository_scope(repo, "pull", "push"),)


@dataclass(frozen=True)
class Mounted:
    """A cross-repository mount that succeeded (201): ``repo`` has the blob, no byte was sent."""

    repo: str
    digest: str


def open_session(ex: Exchange, repo: str) -> str:
    """``POST /v2/<repo>/blobs/uploads/``; the session's absolute ``Location``."""
    url = urls.upload_start_url(ex.transport.base, repo)
    resp = ex.call("POST", url, push_scopes(repo), what=f"start upload in {repo}", ok=(202,))
    return session_location(ex, url, resp)


def session_location(ex: Exchange, url: str, resp: requests.Response) -> str:
    loc = resp.headers.get("Location")
    if not loc:
        raise RegistryError(f"registry {ex.registry} opened an upload without a Location header")
    return urls.resolve_location(url, loc)


class BlobWriter:
    """One upload session: ``write`` (repeatable), then ``commit`` or ``cancel``."""

    def __init__(self, ex: Exchange, repo: str, location: str, *, segment_size: int, window: int) -> None:
        self.repo = repo
        self._ex = ex
        self._segment_size = segment_size
        self._window = window
        self._up = upload.UploadState(window)
        self._up.location = location
        self._committed: Descriptor | None = None

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()  # a no-op after commit

    @property
    def location(self) -> str:
        """The session's URL; empty once committed or cancelled."""
        return self._up.location

    @property
    def size(self) -> int:
        """Bytes written (and acknowledged by the registry) so far."""
        return self._up.offset

    @property
    def digest(self) -> str:
        """The sha256 digest of the bytes written so far."""
        return self._up.digest

    # ------------------------------------------------------------------ write

    def write(self, chunks: Iterable[bytes], *, size: int | None = None) -> int:
        """Stream ``chunks`` (exactly ``size`` bytes when given) into the session; the total written.

        A source that raises has its error re-raised unchanged; one that yields fewer or more
        than ``size`` bytes is a ``DigestMismatch``. Either way the session is cancelled.
        """
        if not self.location:
            raise RegistryError(f"the upload to {self.repo} is already committed or cancelled")
        if size is not None and size < 0:
            raise ValueError("size must be >= 0")
        start = self._up.read_total
        self._up.feed(chunks, size)
        try:
            self._send_all()
            if size is not None and self._up.read_total - start != size:
                raise upload.SourceSizeMismatch(self._up.read_total)
        except upload.SourceSizeMismatch as e:
            self.cancel()
            got = f"more than {size}" if e.count - start > (size or 0) else str(e.count - start)
            raise DigestMismatch(
                f"the source yielded {got} bytes, but {size} were expected; upload cancelled, "
                "nothing committed: the source is truncated or changed"
            ) from None
        except upload.SourceFailed as e:
            self.cancel()
            raise e.error from None
        except BaseException:
            self.cancel()
            raise
        return self._up.offset

    def _send_all(self) -> None:
        """PATCH segment after segment; on failure resume from the registry's Range."""
        up = self._up
        send_from = up.offset
        tries = self._ex.attempts()
        while True:
            if up.offset == up.read_total and (up.offset - up.seg_start) >= self._patch_size():
                up.seg_start = send_from = up.offset  # the PATCH range is done: start the next one
            seg_end = self._segment_end()
            if up.offset >= seg_end:
                # Everything pulled so far is acknowledged and the segment is not full: the end.
                if up.has_more():
                    raise upload.SourceSizeMismatch(up.read_total + 1)
                return
            try:
                self._patch(send_from, seg_end)
                tries.succeeded()
                send_from = up.offset
            except Transient as t:
                send_from = self._resume(tries, t.error)

    def _resume(self, tries: Attempts, err: RegistryError) -> int:
        """Ask the registry where the session stands, with bounded backoff; the offset to send from."""
        while True:
            # A fresh token needs no wait.
            if not tries.failed(wait=0.0 if isinstance(err, AuthError) else None):
                raise UploadInterrupted(
                    f"upload to {self.repo} at {self._ex.registry} failed after {tries.failures} "
                    f"attempts: {err}; retry the publish",
                    err.status,
                )
            try:
                return self._resume_point()
            except Transient as t:
                err = t.error

    def _patch_size(self) -> int:
        # Unknown total: read a PATCH ahead (so Content-Range is exact), hence at most a window.
        return self._segment_size if self._up.size is not None else min(self._segment_size, self._window)

    def _segment_end(self) -> int:
        up = self._up
        if up.size is not None:
            return min(up.size, up.seg_start + self._segment_size)
        up.fill(self._patch_size())
        return up.read_total

    def _patch(self, send_from: int, end: int) -> None:
        """One PATCH of bytes ``send_from..end``; ``Transient`` when a resume may continue."""
        if end <= send_from:
            return
        up = self._up
        headers = {"Content-Type": mt.OCTET_STREAM, "Content-Range": f"{send_from}-{end - 1}"}
        what = f"upload bytes {send_from}-{end - 1} to {self.repo}"
        resp = self._ex.send(
            "PATCH", up.location, push_scopes(self.repo), what=what, replayable=False,
            data=upload.PatchBody(up, send_from, end), headers=headers,
        )
        if resp.status_code == 202:
            self._moved(resp)
            got = upload.range_end(resp.headers.get("Range"))
            if got is not None and got != end:
                raise Transient(RegistryError(f"registry acknowledged {got} bytes, expected {end}"))
            up.acknowledge(end)
            return
        err = self._ex.error(resp.status_code, resp.content[:65536], what)
        if not isinstance(err, InsufficientStorage | AuthError) and (
            resp.status_code >= 500 or resp.status_code in RETRY_ON_PATCH
        ):
            raise Transient(err)
        raise err

    def _moved(self, resp: requests.Response) -> None:
        loc = resp.headers.get("Location")
        if loc:
            self._up.location = urls.resolve_location(self._up.location, loc)

    def _resume_point(self) -> int:
        """GET Location → 204 + Range: the offset to send from (``Transient`` while unreachable or 5xx)."""
        up = self._up
        what = f"upload status in {self.repo}"
        resp = self._ex.send("GET", up.location, push_scopes(self.repo), what=what)
        if resp.status_code == 204:
            self._moved(resp)
            rng = resp.headers.get("Range", "").strip()
            # distribution: "0-0" is an empty session
            got = 0 if rng in ("", "0-0", "bytes=0-0") else (upload.range_end(rng) or 0)
            return self._continue_at(got)
        failure = self._ex.failure(resp, what)
        if isinstance(failure, Transient) or isinstance(failure, InsufficientStorage | AuthError):
            raise failure
        assert isinstance(failure, RegistryError)
        return self._restart(failure)

    def _continue_at(self, got: int) -> int:
        up = self._up
        if up.held_start <= got <= up.read_total:
            up.acknowledge(got)
            return got
        if got > up.read_total:
            raise RegistryError(
                f"upload session in {self.repo} claims {got} bytes, but only {up.read_total} were sent"
            )
        raise UploadInterrupted(
            f"upload session in {self.repo} stands at byte {got}, but bytes before {up.held_start} "
            "are no longer held; retry the publish"
        )

    def _restart(self, err: RegistryError) -> int:
        """The session is gone; start over in a new one if every byte since 0 is still held.

        distribution refuses (and deletes) a session whose stored size differs from the offset
        signed into its Location after a cut mid-PATCH.
        """
        up = self._up
        if up.held_start == 0:
            up.location = open_session(self._ex, self.repo)
            up.restart()
            return 0
        up.location = ""  # lost: nothing left to cancel
        raise UploadInterrupted(
            f"upload session in {self.repo} was lost at {self._ex.registry} ({err.message}) after "
            f"{up.offset} bytes; bytes before {up.held_start} are no longer held, retry the publish",
            err.status,
        )

    # ------------------------------------------------------------------ end of the session

    def commit(self, digest: str | None = None, *, media_type: str = mt.OCTET_STREAM) -> Descriptor:
        """Complete the blob; ``digest`` is the provisional digest the bytes must hash to."""
        if self._committed is not None:
            return self._committed
        if not self.location:
            raise RegistryError(f"the upload to {self.repo} was cancelled; nothing to commit")
        computed = self._up.digest
        if digest is not None and digest.startswith("sha256:") and digest != computed:
            self.cancel()
            raise DigestMismatch(
                f"blob content hashes to {computed}, but {digest} was expected; "
                "upload cancelled, nothing committed: the source changed or is corrupt"
            )
        self._put(computed)
        self._up.location = ""
        self._committed = Descriptor(media_type, computed, self._up.offset)
        return self._committed

    def _put(self, digest: str) -> None:
        """``PUT <Location>&digest=``; after a failed PUT a HEAD tells whether it landed anyway."""
        what = f"commit blob {digest} in {self.repo}"
        url = urls.upload_complete_url(self.location, digest)
        tries = self._ex.attempts()
        while True:
            try:
                resp = self._ex.send(
                    "PUT", url, push_scopes(self.repo), what=what, headers={"Content-Length": "0"}
                )
                if resp.status_code in (201, 204):
                    return
                raise self._ex.failure(resp, what)
            except Transient:
                if blob_size(self._ex, self.repo, digest, quiet=True) is not None:
                    return
            if not tries.failed():
                raise UploadInterrupted(
                    f"{what} at {self._ex.registry} did not succeed after retries; retry the publish"
                )

    def cancel(self) -> None:
        """Best-effort DELETE of the session; safe to repeat, a no-op after commit."""
        location, self._up.location = self._up.location, ""
        if not location:
            return
        try:
            what = f"cancel upload in {self.repo}"
            self._ex.send("DELETE", location, push_scopes(self.repo), what=what).close()
        except (RegistryError, Transient):
            pass


def mount(ex: Exchange, repo: str, digest: str, from_repo: str, *, segment_size: int, window: int
          ) -> Mounted | BlobWriter:
    """``POST …?mount=&from=``: 201 → ``Mounted``; 202 → a writer on the session opened instead."""
    scopes = (repository_scope(repo, "pull", "push"), repository_scope(from_repo, "pull"))
    url = urls.upload_start_url(ex.transport.base, repo, mount=digest, from_repo=from_repo)
    resp = ex.call("POST", url, scopes, what=f"mount {digest} from {from_repo} into {repo}", ok=(201, 202))
    if resp.status_code == 201:
        return Mounted(repo, digest)
    location = session_location(ex, url, resp)
    return BlobWriter(ex, repo, location, segment_size=segment_size, window=window)


# ---------------------------------------------------------------------- reading


def blob_size(ex: Exchange, repo: str, digest: str, *, quiet: bool = False) -> int | None:
    """HEAD: the blob's size when ``repo`` has it, else None (also on errors when ``quiet``)."""
    try:
        resp = ex.call(
            "HEAD", urls.blob_url(ex.transport.base, repo, digest), (repository_scope(repo, "pull"),),
            what=f"HEAD blob {digest} in {repo}", ok=(200, 404), allow_redirects=True,
        )
    except RegistryError:
        if quiet:
            return None
        raise
    return None if resp.status_code == 404 else int(resp.headers.get("Content-Length", "0"))


def iter_blob(
    resp: requests.Response, digest: str, *, registry: str, verify: bool, skip: int
) -> Iterator[bytes]:
    """The body in ``READ_CHUNK`` pieces from ``skip``; with ``verify`` the digest is checked at the end."""
    h = hashlib.sha256() if verify and digest.startswith("sha256:") else None
    try:
        for chunk in resp.iter_content(READ_CHUNK):
            if h is not None:
                h.update(chunk)
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk, skip = chunk[skip:], 0
            yield chunk
    except TRANSPORT_ERRORS as e:
        raise Unreachable(f"download of {digest} from {registry} broke off: {e}; retry") from e
    if h is not None and "sha256:" + h.hexdigest() != digest:
        raise DigestMismatch(
            f"blob {digest} from {registry} hashes to sha256:{h.hexdigest()}; the registry's copy is corrupt"
        )
