"""RegistryClient: the OCI distribution API over ``requests``, built for large blobs.

Why not oras-py: its single-PUT upload reads the whole blob into memory
(2.1 GB RSS for a 2 GiB file) and it hashes every file in a separate pass
before uploading, so each byte is read twice. Here a blob is streamed once:
bytes are pulled from the caller's chunk iterator, hashed and counted as they
go onto the wire, in PATCH requests of up to ``segment_size`` bytes whose
bodies are generators (no per-chunk round trip, no buffered copy). Only the
last ``window`` bytes not yet acknowledged by the registry are kept (they are
what a resume may need to send again), so memory is bounded by the window.

Resumability (docs/oci-client.md has the details): after a connection error,
a 5xx or a 401 during an upload, the client asks the registry for the
session's ``Range`` (GET on the last upload ``Location``) and continues from
the offset it reports, provided the bytes from there on are still held. While
every byte since 0 is held, a lost session restarts in a new one. Otherwise
``UploadInterrupted`` (transient) is raised.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from lib.oci import media_types as mt
from lib.oci import upload, urls
from lib.oci.auth import Authenticator, Credentials, load_docker_config
from lib.oci.challenge import Scope, repository_scope
from lib.oci.descriptor import Descriptor, Manifest, sha256_digest
from lib.oci.errors import (
    AuthError,
    DigestMismatch,
    InsufficientStorage,
    NotFound,
    RegistryError,
    TLSError,
    Unreachable,
    UploadInterrupted,
    error_from_response,
    is_out_of_space,
)
from lib.oci.reference import validate_digest, validate_repository

__all__ = [
    "AuthError",
    "Descriptor",
    "DigestMismatch",
    "InsufficientStorage",
    "Manifest",
    "NotFound",
    "RegistryClient",
    "RegistryError",
    "RetryPolicy",
    "TLSError",
    "Unreachable",
    "UploadInterrupted",
]

# Bytes per PATCH. Large, because distribution finishes each PATCH (flush, hash state) before it
# answers, a stall per request; the PATCH body streams, so its size costs no memory.
SEGMENT_SIZE = 1 << 30
# Unacknowledged bytes kept for a resume (and read ahead when the size is unknown): the memory bound.
WINDOW = 64 << 20
READ_CHUNK = 4 << 20  # bytes per read when streaming a blob down (larger reads: fewer Python iterations)
MAX_MANIFEST = 4 << 20  # distribution's own limit for manifests
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0  # a PUT that commits a resumed blob may re-hash it server-side
MAX_REDIRECTS = 5  # blob GET/HEAD → object storage (S3 presigned URL); never more than one in practice


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff: ``attempts`` tries within ``total`` seconds."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0
    total: float = 120.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * (2**attempt))


class _Retry(Exception):
    """Internal: the attempt failed in a way worth retrying (carries the error to raise at the end)."""

    def __init__(self, error: RegistryError):
        super().__init__(str(error))
        self.error = error


def _brief(e: BaseException) -> str:
    """A transport error without the URLs urllib3 quotes (upload URLs carry signed state)."""
    text = re.sub(r"https?://\S+|url: \S+", "<url>", str(e))
    text = re.sub(r"\(Caused by (\w+)\(.*", r"(\1)", text)
    return text[:300]


class RegistryClient:
    """One registry (``host[:port]``), optionally authenticated; thread-compatible, not thread-safe."""

    def __init__(
        self,
        registry: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | Path | None = None,
        insecure: bool = False,
        retry: RetryPolicy | None = None,
        segment_size: int = SEGMENT_SIZE,
        window: int = WINDOW,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if segment_size <= 0 or not 0 < window <= WINDOW:
            raise ValueError(f"segment_size must be > 0 and window in 1..{WINDOW}")
        self.registry = registry
        self.base = urls.base_url(registry, insecure=insecure)
        self.session = session or requests.Session()
        if ca_file is not None:
            if not Path(ca_file).is_file():
                raise TLSError(None, f"registry CA file {ca_file} does not exist; mount the CA bundle")
        # Passed on every request: requests lets REQUESTS_CA_BUNDLE override a session-level verify.
        self.verify: str | bool = str(ca_file) if ca_file is not None else True
        self.retry = retry or RetryPolicy()
        self.segment_size = segment_size
        self.window = window
        self.timeout = timeout
        self._sleep = sleep
        creds = Credentials(username, password or "") if username is not None else None
        self.auth = Authenticator(self.session, creds, timeout=timeout, verify=self.verify)

    @classmethod
    def from_docker_config(
        cls,
        registry: str,
        auth_file: str | Path | None,
        *,
        ca_file: str | Path | None = None,
        insecure: bool = False,
        **kwargs: Any,
    ) -> RegistryClient:
        """Credentials for ``registry`` from a Docker config JSON (anonymous when the file has none)."""
        creds = load_docker_config(auth_file, registry) if auth_file else None
        return cls(
            registry,
            username=creds.username if creds else None,
            password=creds.password if creds else None,
            ca_file=ca_file,
            insecure=insecure,
            **kwargs,
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _send(
        self, method: str, url: str, scopes: tuple[Scope, ...], *, what: str, **kwargs: Any
    ) -> requests.Response:
        """One HTTP exchange with auth (one re-auth on 401); transport errors become typed errors."""
        headers = dict(kwargs.pop("headers", None) or {})
        follow = kwargs.pop("allow_redirects", method in ("GET", "HEAD"))
        for attempt in range(3):
            auth = self.auth.header(scopes)
            if auth:
                headers["Authorization"] = auth
            else:
                headers.pop("Authorization", None)
            resp = self._exchange(
                method, url, headers, self.verify, kwargs,
                tls=lambda e: f"TLS verification failed for {what} at {self.registry}: {e}; "
                "pass the registry's CA file (--registry-ca-file), fix its certificate, "
                "or use --insecure-registry if it serves plain HTTP",
                down=lambda e: f"registry {self.registry} unreachable during {what}: {_brief(e)}; "
                "check it is running",
            )
            if (
                resp.status_code == 401
                and attempt < 2
                and not isinstance(kwargs.get("data"), upload.PatchBody)
            ):
                if self.auth.challenged(resp, scopes):
                    resp.close()
                    continue
            break
        if follow and resp.is_redirect:
            return self._follow_redirects(resp, method, headers, what=what, **kwargs)
        return resp

    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        verify: Any,
        kwargs: dict[str, Any],
        *,
        tls: Callable[[BaseException], str],
        down: Callable[[BaseException], str],
    ) -> requests.Response:
        """One request, redirects not followed; TLS and transport failures become typed errors."""
        try:
            return self.session.request(
                method, url, headers=headers, timeout=self.timeout, verify=verify,
                allow_redirects=False, **kwargs,
            )
        except requests.exceptions.SSLError as e:
            raise TLSError(None, tls(e)) from e
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            raise _Retry(Unreachable(None, down(e))) from e

    def _follow_redirects(
        self, resp: requests.Response, method: str, headers: dict[str, str], *, what: str, **kwargs: Any
    ) -> requests.Response:
        """Follow a blob redirect (DMCR on S3 with redirects on) with no credentials.

        The registry's token is never sent to the object store, whatever its host: the
        presigned URL is the only authority it needs. Another origin is verified against
        the system trust store (plus ``REQUESTS_CA_BUNDLE``), not the registry's CA file.
        """
        plain = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        origin = urlsplit(self.base)[:2]
        for _ in range(MAX_REDIRECTS):
            target = urljoin(resp.url, resp.headers["Location"])
            resp.close()
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https"):
                raise RegistryError(
                    None, f"{what}: registry {self.registry} redirected to a {parts.scheme!r} URL"
                )
            verify = self.verify if parts[:2] == origin else True
            host = parts.hostname

            def tls(e: BaseException, host: str | None = host) -> str:
                return (f"TLS verification failed for {what} at the object store {host} that {self.registry} "
                        f"redirected to: {_brief(e)}; trust its CA (REQUESTS_CA_BUNDLE) or turn the "
                        "registry's storage redirect off")

            def down(e: BaseException, host: str | None = host) -> str:
                return (f"object store {host} that {self.registry} redirected {what} to "
                        f"is unreachable: {_brief(e)}")

            resp = self._exchange(method, target, plain, verify, kwargs, tls=tls, down=down)
            if not resp.is_redirect:
                return resp
        resp.close()
        raise RegistryError(None, f"{what}: more than {MAX_REDIRECTS} redirects from {self.registry}")

    def _call(
        self,
        method: str,
        url: str,
        scopes: tuple[Scope, ...],
        *,
        what: str,
        ok: tuple[int, ...],
        **kwargs: Any,
    ) -> requests.Response:
        """``_send`` with bounded retries on connection errors and 5xx; other answers raise typed errors."""
        deadline = time.monotonic() + self.retry.total
        last: RegistryError | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                self._sleep(self.retry.delay(attempt - 1))
            try:
                resp = self._send(method, url, scopes, what=what, **kwargs)
            except _Retry as r:
                last = r.error
            else:
                if resp.status_code in ok:
                    return resp
                body = resp.content[:65536] if not kwargs.get("stream") else resp.raw.read(65536)
                resp.close()
                err = error_from_response(resp.status_code, body, what=what, registry=self.registry)
                if resp.status_code < 500 or is_out_of_space(resp.status_code, body):
                    raise err
                last = err
            if time.monotonic() > deadline:
                break
        assert last is not None
        raise last

    @staticmethod
    def _pull(repo: str) -> tuple[Scope, ...]:
        return (repository_scope(repo, "pull"),)

    @staticmethod
    def _push(repo: str) -> tuple[Scope, ...]:
        return (repository_scope(repo, "pull", "push"),)

    # ------------------------------------------------------------------ blobs

    def blob_exists(self, repo: str, digest: str) -> int | None:
        """The blob's size when ``repo`` has it, else None."""
        validate_repository(repo)
        validate_digest(digest)
        resp = self._call(
            "HEAD",
            urls.blob_url(self.base, repo, digest),
            self._pull(repo),
            what=f"HEAD blob {digest} in {repo}",
            ok=(200, 404),
            allow_redirects=True,
        )
        if resp.status_code == 404:
            return None
        return int(resp.headers.get("Content-Length", "0"))

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount: True when mounted (201); False (202) after closing the opened session."""
        validate_repository(repo)
        validate_repository(from_repo)
        validate_digest(digest)
        scopes = (repository_scope(repo, "pull", "push"), repository_scope(from_repo, "pull"))
        url = urls.upload_start_url(self.base, repo, mount=digest, from_repo=from_repo)
        resp = self._call(
            "POST", url, scopes, what=f"mount {digest} from {from_repo} into {repo}", ok=(201, 202)
        )
        if resp.status_code == 201:
            return True
        loc = resp.headers.get("Location")
        if loc:  # not mounted: close the session the registry opened instead
            self._cancel(urls.resolve_location(url, loc), repo)
        return False

    def push_bytes(self, repo: str, data: bytes, media_type: str) -> Descriptor:
        """A small blob held in memory (configs); skipped when present."""
        return self.push_blob(repo, [data], digest=sha256_digest(data), size=len(data), media_type=media_type)

    def push_blob(
        self,
        repo: str,
        chunks: Iterable[bytes],
        *,
        digest: str | None = None,
        size: int | None = None,
        media_type: str = mt.OCTET_STREAM,
    ) -> Descriptor:
        """Stream ``chunks`` into a new blob of ``repo``, hashing on the way; returns its descriptor.

        With ``digest`` the blob is skipped when present (HEAD), and the upload is cancelled
        (``DigestMismatch``, nothing committed) when the bytes hash otherwise; likewise for ``size``.
        """
        validate_repository(repo)
        if digest is not None:
            validate_digest(digest)
            have = self.blob_exists(repo, digest)
            if have is not None:
                if size is not None and have != size:
                    raise DigestMismatch(
                        None,
                        f"blob {digest} in {repo} has {have} bytes, but {size} were expected; "
                        "the source's size or digest is wrong",
                    )
                return Descriptor(media_type, digest, have)
        if size is not None and size < 0:
            raise ValueError("size must be >= 0")
        up = upload.UploadState(chunks, size, self.window)
        try:
            self._open_session(repo, up)
            self._send_all(repo, up)
            computed = up.digest
            if size is not None and up.read_total != size:
                raise upload.SourceSizeMismatch(up.read_total)
            if digest is not None and computed != digest:
                self._cancel(up.location, repo)
                up.location = ""
                raise DigestMismatch(
                    None,
                    f"blob content hashes to {computed}, but {digest} was expected; "
                    "upload cancelled, nothing committed: the source changed or is corrupt",
                )
            self._commit(repo, up, computed)
        except upload.SourceSizeMismatch as e:
            self._cancel(up.location, repo)
            up.location = ""
            got = f"more than {size}" if e.count > (size or 0) else str(e.count)
            raise DigestMismatch(
                None,
                f"the source yielded {got} bytes, "
                f"but {size} were expected; upload cancelled, nothing committed: "
                "the source is truncated or changed",
            ) from None
        except upload.SourceFailed as e:
            self._cancel(up.location, repo)
            up.location = ""
            raise e.error from None
        except BaseException:
            if up.location:
                self._cancel(up.location, repo)
            raise
        return Descriptor(media_type, computed, up.read_total)

    def _open_session(self, repo: str, up: upload.UploadState) -> None:
        url = urls.upload_start_url(self.base, repo)
        resp = self._call("POST", url, self._push(repo), what=f"start upload in {repo}", ok=(202,))
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(None, f"registry {self.registry} opened an upload without a Location header")
        up.location = urls.resolve_location(url, loc)
        up.offset = 0

    def _send_all(self, repo: str, up: upload.UploadState) -> None:
        """PATCH segment after segment; on failure resume from the registry's Range."""
        failures = 0
        streak_start = 0.0
        send_from = 0
        while True:
            if up.offset == up.read_total and (up.offset - up.seg_start) >= self._patch_size(up):
                up.seg_start = send_from = up.offset  # the PATCH range is done: start the next one
            seg_end = self._segment_end(up)
            if up.offset >= seg_end:
                # Everything pulled so far is acknowledged and the segment is not full: the end.
                if up.has_more():
                    raise upload.SourceSizeMismatch(up.read_total + 1)
                return
            try:
                self._patch(repo, up, send_from, seg_end)
                failures = 0
                send_from = up.offset
                continue
            except _Retry as r:
                err = r.error
            # Resume: ask the registry where the session stands, with bounded backoff.
            while True:
                now = time.monotonic()
                if failures == 0:
                    streak_start = now
                failures += 1
                if failures >= self.retry.attempts or now - streak_start > self.retry.total:
                    raise UploadInterrupted(
                        None,
                        f"upload to {repo} at {self.registry} failed after {failures} attempts: {err}; "
                        "retry the publish",
                        err.status,
                    )
                if not isinstance(err, AuthError):  # a fresh token needs no wait
                    self._sleep(self.retry.delay(failures - 1))
                try:
                    send_from = self._resume_point(repo, up)
                    break
                except _Retry as r:
                    err = r.error

    def _patch_size(self, up: upload.UploadState) -> int:
        # Unknown total: read a PATCH ahead (so Content-Range is exact), hence at most a window.
        return self.segment_size if up.size is not None else min(self.segment_size, self.window)

    def _segment_end(self, up: upload.UploadState) -> int:
        if up.size is not None:
            return min(up.size, up.seg_start + self.segment_size)
        up.fill(self._patch_size(up))
        return up.read_total

    def _patch(self, repo: str, up: upload.UploadState, send_from: int, end: int) -> None:
        if end <= send_from:
            return
        body = upload.PatchBody(up, send_from, end)
        headers = {"Content-Type": mt.OCTET_STREAM, "Content-Range": f"{send_from}-{end - 1}"}
        what = f"upload bytes {send_from}-{end - 1} to {repo}"
        resp = self._send("PATCH", up.location, self._push(repo), what=what, data=body, headers=headers)
        status = resp.status_code
        if status == 202:
            loc = resp.headers.get("Location")
            if loc:
                up.location = urls.resolve_location(up.location, loc)
            got = upload.range_end(resp.headers.get("Range"))
            if got is not None and got != end:
                raise _Retry(RegistryError(None, f"registry acknowledged {got} bytes, expected {end}"))
            up.acknowledge(end)
            return
        body_text = resp.content[:65536]
        err = error_from_response(status, body_text, what=what, registry=self.registry)
        if isinstance(err, InsufficientStorage):
            raise err
        if status == 401:
            if not self.auth.challenged(resp, self._push(repo)):
                raise err
            raise _Retry(err)
        if status >= 500 or status in (400, 404, 416):
            raise _Retry(err)
        raise err

    def _resume_point(self, repo: str, up: upload.UploadState) -> int:
        """Ask the registry where the session stands (GET Location → 204 + Range); the offset to send from.

        Raises ``_Retry`` while the registry is unreachable or answers 5xx.
        """
        what = f"upload status in {repo}"
        resp = self._send("GET", up.location, self._push(repo), what=what)
        body = resp.content[:65536]
        if resp.status_code == 204:
            loc = resp.headers.get("Location")
            if loc:
                up.location = urls.resolve_location(up.location, loc)
            rng = resp.headers.get("Range", "").strip()
            got = (
                0 if rng in ("", "0-0", "bytes=0-0") else (upload.range_end(rng) or 0)
            )  # distribution: 0-0 = empty
            if up.held_start <= got <= up.read_total:
                up.acknowledge(got)
                return got
            if got > up.read_total:
                raise RegistryError(
                    None, f"upload session in {repo} claims {got} bytes, but only {up.read_total} were sent"
                )
            raise UploadInterrupted(
                None,
                f"upload session in {repo} stands at byte {got}, but bytes before {up.held_start} "
                "are no longer held; retry the publish",
            )
        err = error_from_response(resp.status_code, body, what=what, registry=self.registry)
        if isinstance(err, InsufficientStorage | AuthError):
            raise err
        if resp.status_code >= 500:
            raise _Retry(err)
        # The session is gone: distribution refuses (and deletes) a session whose stored size
        # differs from the offset signed into its Location after a cut mid-PATCH. Start over
        # in a new session only if every byte since 0 is still held.
        if up.held_start == 0:
            self._open_session(repo, up)
            up.restart()
            return 0
        raise UploadInterrupted(
            None,
            f"upload session in {repo} was lost at {self.registry} ({err.message}) after "
            f"{up.offset} bytes; bytes before {up.held_start} are no longer held, retry the publish",
            err.status,
        )

    def _commit(self, repo: str, up: upload.UploadState, digest: str) -> None:
        what = f"commit blob {digest} in {repo}"
        for attempt in range(self.retry.attempts):
            if attempt:
                self._sleep(self.retry.delay(attempt - 1))
            try:
                resp = self._send(
                    "PUT",
                    urls.upload_complete_url(up.location, digest),
                    self._push(repo),
                    what=what,
                    headers={"Content-Length": "0"},
                )
            except _Retry:
                if self._exists_quietly(repo, digest):
                    up.location = ""
                    return
                continue
            if resp.status_code in (201, 204):
                up.location = ""
                return
            err = error_from_response(
                resp.status_code, resp.content[:65536], what=what, registry=self.registry
            )
            if resp.status_code < 500 or isinstance(err, InsufficientStorage):
                raise err
            if self._exists_quietly(repo, digest):
                up.location = ""
                return
        raise UploadInterrupted(
            None, f"{what} at {self.registry} did not succeed after retries; retry the publish"
        )

    def _exists_quietly(self, repo: str, digest: str) -> bool:
        try:
            return self.blob_exists(repo, digest) is not None
        except RegistryError:
            return False

    def _cancel(self, location: str, repo: str) -> None:
        """Best effort DELETE of an upload session (idempotent; errors ignored)."""
        if not location:
            return
        try:
            self._send("DELETE", location, self._push(repo), what=f"cancel upload in {repo}").close()
        except (RegistryError, _Retry):
            pass

    @contextmanager
    def open_blob(
        self, repo: str, digest: str, *, offset: int = 0, verify: bool = True
    ) -> Iterator[Iterator[bytes]]:
        """Stream a blob from ``offset``; from 0 the digest is verified when the iterator is drained.

        ``verify=False`` leaves hashing to a caller that does it in another thread
        (materialize), so the network read and the hash overlap on two cores.
        Redirects to storage (S3 presigned URLs) are followed without our Authorization
        header, whatever the host (``_follow_redirects``).
        """
        validate_repository(repo)
        validate_digest(digest)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._call(
            "GET",
            urls.blob_url(self.base, repo, digest),
            self._pull(repo),
            what=f"GET blob {digest} from {repo}",
            ok=(200, 206),
            stream=True,
            headers=headers,
        )
        try:
            # A 200 to a ranged GET is the whole blob: skip to the offset, and it can be verified.
            whole = resp.status_code == 200
            yield self._iter_blob(resp, digest, verify=whole and verify, skip=offset if whole else 0)
        finally:
            resp.close()

    def _iter_blob(self, resp: requests.Response, digest: str, *, verify: bool, skip: int) -> Iterator[bytes]:
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
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            raise Unreachable(None, f"download of {digest} from {self.registry} broke off: {e}; retry") from e
        if h is not None and "sha256:" + h.hexdigest() != digest:
            raise DigestMismatch(
                None,
                f"blob {digest} from {self.registry} hashes to sha256:{h.hexdigest()}; "
                "the registry's copy is corrupt",
            )

    # ------------------------------------------------------------------ manifests and tags

    def get_manifest(self, repo: str, ref: str, accept: Iterable[str] = mt.MANIFEST_ACCEPT) -> Manifest:
        validate_repository(repo)
        resp = self._call(
            "GET",
            urls.manifest_url(self.base, repo, ref),
            self._pull(repo),
            what=f"GET manifest {repo}:{ref}",
            ok=(200,),
            headers={"Accept": ", ".join(accept)},
            stream=True,
        )
        try:
            body = resp.raw.read(MAX_MANIFEST + 1, decode_content=True)
        finally:
            resp.close()
        if len(body) > MAX_MANIFEST:
            raise RegistryError(
                None, f"manifest {repo}:{ref} is larger than {MAX_MANIFEST} bytes; refusing it"
            )
        digest = sha256_digest(body)
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != digest:
            raise DigestMismatch(
                None, f"manifest {repo}:{ref} hashes to {digest} but the registry says {header}"
            )
        if ref.startswith("sha256:") and ref != digest:
            raise DigestMismatch(
                None, f"manifest {repo}@{ref} hashes to {digest}; the registry's copy is wrong"
            )
        media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        if not media_type or media_type in ("application/json", "text/plain"):
            import json

            try:
                media_type = str(json.loads(body).get("mediaType") or media_type)
            except (ValueError, AttributeError):
                pass
        return Manifest(body=body, media_type=media_type, digest=digest)

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or its digest; returns the digest of ``body``."""
        validate_repository(repo)
        digest = sha256_digest(body)
        if ref.startswith("sha256:") and ref != digest:
            raise DigestMismatch(None, f"manifest body hashes to {digest}, not {ref}")
        resp = self._call(
            "PUT",
            urls.manifest_url(self.base, repo, ref),
            self._push(repo),
            what=f"PUT manifest {repo}:{ref}",
            ok=(201, 200, 202),
            data=body,
            headers={"Content-Type": media_type},
        )
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != digest:
            raise DigestMismatch(
                None, f"registry stored manifest {repo}:{ref} as {header}, expected {digest}"
            )
        return digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        validate_repository(repo)
        validate_digest(digest)
        self._call(
            "DELETE",
            urls.manifest_url(self.base, repo, digest),
            (repository_scope(repo, "delete"),),
            what=f"DELETE manifest {repo}@{digest}",
            ok=(202, 200, 204),
        )

    def list_repositories(self, page_size: int = 1000) -> list[str]:
        """Every repository (``/v2/_catalog``, paginated); needs ``registry:catalog:*``."""
        url: str | None = urls.catalog_url(self.base, n=page_size)
        repos: list[str] = []
        pages = 0
        scopes = (Scope("registry", "catalog", ("*",)),)
        while url and pages < 100_000:
            resp = self._call("GET", url, scopes, what="list repositories", ok=(200,))
            repos += [r for r in resp.json().get("repositories") or [] if isinstance(r, str)]
            url = urls.next_page(url, resp.headers.get("Link"))
            pages += 1
        return repos

    def delete_blob(self, repo: str, digest: str) -> bool:
        """Unlink a blob from ``repo`` (its data stays for GC); False when it was not linked."""
        validate_repository(repo)
        validate_digest(digest)
        resp = self._call(
            "DELETE",
            urls.blob_url(self.base, repo, digest),
            (repository_scope(repo, "delete"),),
            what=f"DELETE blob {digest} in {repo}",
            ok=(202, 200, 204, 404),
        )
        return resp.status_code != 404

    def list_tags(self, repo: str) -> list[str]:
        validate_repository(repo)
        url: str | None = urls.tags_url(self.base, repo)
        tags: list[str] = []
        pages = 0
        while url and pages < 1000:
            resp = self._call("GET", url, self._pull(repo), what=f"list tags of {repo}", ok=(200,))
            tags += list(resp.json().get("tags") or [])
            url = urls.next_page(url, resp.headers.get("Link"))
            pages += 1
        return tags
