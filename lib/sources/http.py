"""A resilient streaming GET shared by the internet source adapters.

Model files are gigabytes pulled over the internet through rate limits and
flaky CDNs, and the publish pipeline reads each file exactly once. So this
module, not the pipeline, hides transient failure:

- connection errors and 5xx answers are retried with exponential backoff
  (with jitter); a stream cut mid-file resumes with ``Range: bytes=<n>-``
  from the byte reached, so the caller sees one uninterrupted byte stream;
- 429 waits as the server says (``Retry-After``, ``RateLimit: ...;t=<s>``,
  ``RateLimit: ..., reset=<s>``, ``RateLimit-Reset``), bounded: a server
  that asks for more than ``max_rate_limit_wait`` makes the request fail as
  unavailable at once (the controller retries the publish later, which is
  cheaper than a pod sleeping);
- connect and read timeouts apply to every socket read, so a stalled read
  fails (and is retried/resumed) instead of hanging;
- redirects are followed here, not by ``requests``: the ``Authorization``
  header goes only to the origins it was given for, never to a CDN or object
  store a redirect points to (and ``.netrc`` is never consulted).

Errors are this module's own (``HttpStatusError``, ``Unavailable``,
``ContentMismatch``); adapters translate them into ``SourceError`` with
context a user can act on.
"""

from __future__ import annotations

import email.utils
import json
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from lib.byte_ranges import parse_content_range
from lib.retry import Attempts, RetryPolicy

CHUNK_SIZE = 1 << 20  # bytes per read while streaming a file
READ_AHEAD = 8  # chunks the adapters let a file stream read ahead of its consumer
MAX_DOCUMENT = 64 << 20  # largest JSON/manifest answer read into memory
MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({500, 502, 503, 504})
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


# Sources pull gigabytes from the internet: more tries than the cluster's registry, with jitter.
SOURCE_RETRY = RetryPolicy(attempts=6, base_delay=1.0, max_delay=30.0, total=math.inf, jitter=True)


@dataclass(frozen=True)
class HttpPolicy:
    """How hard a source's GETs try: the retry policy plus what only these GETs need."""

    retry: RetryPolicy = SOURCE_RETRY  # per request (or per resume without progress), errors and 5xx
    rate_limit_attempts: int = 10  # 429 answers tolerated per request
    max_rate_limit_wait: float = 300.0  # longer waits fail as Unavailable
    connect_timeout: float = 15.0
    read_timeout: float = 60.0  # per socket read: a stalled stream fails after this
    max_resumes: int = 1000  # resumes per stream in total, even when each one made progress


class HttpError(Exception):
    def __init__(self, url: str, message: str):
        super().__init__(message)
        self.url = url
        self.message = message


class HttpStatusError(HttpError):
    """A final, non-retryable HTTP error answer."""

    def __init__(self, url: str, status: int, headers: Mapping[str, str], body: str):
        self.status = status
        self.error_code = headers.get("X-Error-Code", "")
        self.error_message = headers.get("X-Error-Message", "") or body.strip()[:300]
        self.headers = dict(headers)
        detail = f" ({self.error_code})" if self.error_code else ""
        super().__init__(url, f"HTTP {status}{detail} from {_safe_url(url)}: {self.error_message}")


class Unavailable(HttpError):
    """Retries exhausted (transport errors, 5xx, 429): transient by nature."""


class ContentMismatch(HttpError):
    """The server described different content than expected (size, Range answer)."""


def _safe_url(url: str) -> str:
    """The URL without its query (presigned CDN URLs carry credentials there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


# --------------------------------------------------------------------------
# Pure helpers: how long to wait.
# --------------------------------------------------------------------------

_RATELIMIT_T = re.compile(r"(?:^|[;,\s])(?:t|reset)\s*=\s*(\d+(?:\.\d+)?)")


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds a 429/503 answer asks us to wait, or None when it does not say."""
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None:
                return max(0.0, when.timestamp() - now)
    for name in ("RateLimit", "RateLimit-Reset", "X-RateLimit-Reset-After"):
        value = headers.get(name)
        if not value:
            continue
        if name == "RateLimit":
            m = _RATELIMIT_T.search(value)
            if m:
                return float(m.group(1))
            continue
        try:
            return max(0.0, float(value.strip()))
        except ValueError:
            continue
    return None


# --------------------------------------------------------------------------
# The client.
# --------------------------------------------------------------------------


class HttpClient:
    """GETs with retries, redirects that drop credentials, and resumable streams.

    ``authorization`` (a full header value, e.g. ``Bearer hf_...``) is sent
    only to URLs whose origin is in ``auth_origins``.
    """

    def __init__(
        self,
        *,
        authorization: str | None = None,
        auth_origins: frozenset[str] | set[str] = frozenset(),
        verify: bool | str = True,
        policy: HttpPolicy = HttpPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = "ai-models-worker",
    ):
        self.authorization = authorization
        self.auth_origins = frozenset(origin(o) for o in auth_origins)
        self.policy = policy
        self.sleep = sleep
        self.session = requests.Session()
        self.session.verify = verify
        # Proxies from the environment still apply; .netrc credentials never do (see _send).
        self.session.headers["User-Agent"] = user_agent

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request, redirects followed by hand -------------------------------

    def _headers_for(self, url: str, headers: Mapping[str, str]) -> dict[str, str]:
        out = dict(headers)
        if self.authorization and origin(url) in self.auth_origins:
            out["Authorization"] = self.authorization
        return out

    def _send(self, url: str, headers: Mapping[str, str], stream: bool) -> requests.Response:
        timeout = (self.policy.connect_timeout, self.policy.read_timeout)
        for _ in range(MAX_REDIRECTS + 1):
            # A no-op auth callable keeps requests from adding .netrc
            # credentials; redirects are ours, so nothing re-adds a header.
            req = requests.Request("GET", url, headers=self._headers_for(url, headers), auth=_no_auth)
            prepared = self.session.prepare_request(req)
            resp = self.session.send(prepared, stream=stream, timeout=timeout, allow_redirects=False)
            if resp.status_code not in REDIRECT_STATUSES:
                return resp
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                raise HttpStatusError(url, resp.status_code, resp.headers, "redirect without Location")
            url = urljoin(url, location)
        raise HttpError(url, f"more than {MAX_REDIRECTS} redirects from {_safe_url(url)}")

    def request(self, url: str, *, headers: Mapping[str, str] | None = None, stream: bool = False
                ) -> requests.Response:
        """GET ``url`` until it answers < 400; raise on a final error or when retries run out.

        With ``stream=True`` the caller owns (and must close) the response.
        """
        headers = dict(headers or {})
        where = _safe_url(url)
        errors = Attempts(self.policy.retry, sleep=self.sleep)
        rate_limited = replace(self.policy.retry, attempts=self.policy.rate_limit_attempts)
        limited = Attempts(rate_limited, sleep=self.sleep)
        while True:
            try:
                resp = self._send(url, headers, stream)
            except _TRANSPORT_ERRORS as e:
                if not errors.failed():
                    message = f"{where} unreachable after {errors.failures} attempts: {e}"
                    raise Unavailable(url, message) from e
                continue
            status = resp.status_code
            if status < 400:
                return resp
            body = _short_body(resp, stream)
            if status != 429 and status not in RETRY_STATUSES:
                raise HttpStatusError(url, status, resp.headers, body)
            wait = rate_limit_wait(resp.headers, time.time())
            if wait is not None and wait > self.policy.max_rate_limit_wait:
                raise Unavailable(url, f"{where} asks to retry after {wait:.0f} s (HTTP {status})")
            if status == 429 and not limited.failed(wait):
                raise Unavailable(url, f"{where} still rate limited after {limited.failures} waits")
            if status != 429 and not errors.failed(wait):
                raise Unavailable(url, f"HTTP {status} from {where} after {errors.failures} attempts")

    def get_bytes(self, url: str, *, headers: Mapping[str, str] | None = None, limit: int = MAX_DOCUMENT
                  ) -> tuple[bytes, Mapping[str, str]]:
        """A small document (at most ``limit`` bytes) and the answer's headers."""
        tries = Attempts(self.policy.retry, sleep=self.sleep)
        while True:
            resp = self.request(url, headers=headers, stream=True)
            try:
                body = resp.raw.read(limit + 1, decode_content=True)
            except _TRANSPORT_ERRORS as e:
                if not tries.failed():
                    raise Unavailable(url, f"reading {_safe_url(url)} failed: {e}") from e
                continue
            finally:
                resp.close()
            if len(body) > limit:
                raise ContentMismatch(url, f"{_safe_url(url)} answered more than {limit} bytes")
            return body, resp.headers

    def get_json(self, url: str, *, headers: Mapping[str, str] | None = None) -> object:
        body, _ = self.get_bytes(url, headers={"Accept": "application/json", **(headers or {})})
        try:
            return json.loads(body)
        except ValueError as e:
            raise ContentMismatch(url, f"{_safe_url(url)} did not answer JSON: {e}") from e

    # -- a resumable byte stream ----------------------------------------------

    @contextmanager
    def open_stream(
        self,
        url: str,
        *,
        offset: int = 0,
        size: int | None = None,
        headers: Mapping[str, str] | None = None,
        read_ahead: int = 0,
    ) -> Iterator[Iterator[bytes]]:
        """Yield an iterator of the bytes of ``url`` from ``offset`` on.

        Transport failures mid-stream resume with ``Range`` from the byte
        reached. When ``size`` is given, a server announcing another total
        raises ``ContentMismatch`` before any byte is yielded, and so does a
        stream that ends early or runs long. ``read_ahead`` > 0 reads up to
        that many chunks ahead on a helper thread (see ``ReadAhead``).
        """
        stream = _Stream(self, url, offset, size, dict(headers or {}))
        ahead = ReadAhead(stream.chunks(), read_ahead) if read_ahead > 0 else None
        try:
            yield iter(ahead) if ahead is not None else stream.chunks()
        finally:
            if ahead is not None:
                ahead.stop()
            stream.close()
            if ahead is not None:
                ahead.join()


class ReadAhead:
    """Pull a chunk iterator on a helper thread, at most ``depth`` chunks ahead.

    The publish pipeline reads a chunk, hashes it and blocks in ``sendall``
    to the registry; without read-ahead the source's socket sits idle
    meanwhile, so source time and registry time add up. With it they overlap
    (bounded memory: ``depth`` × ``CHUNK_SIZE``). Errors, including
    ``SourceError``s raised by wrappers, surface in the consumer at the
    position they happened.
    """

    _DONE = object()

    def __init__(self, chunks: Iterator[bytes], depth: int):
        self._chunks = chunks
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="read-ahead", daemon=True)
        self._started = False

    def _put(self, item: object) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self) -> None:
        try:
            for chunk in self._chunks:
                if not self._put(chunk):
                    return
            self._put(self._DONE)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(_Raised(e))

    def __iter__(self) -> Iterator[bytes]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            assert isinstance(item, bytes)
            yield item

    def stop(self) -> None:
        """Make the helper thread give up (it may be blocked in a read until the stream closes)."""
        self._stopped.set()

    def join(self) -> None:
        if self._started:
            self._thread.join(timeout=5)


@dataclass(frozen=True)
class _Raised:
    error: BaseException


class _Stream:
    def __init__(self, client: HttpClient, url: str, offset: int, size: int | None, headers: dict[str, str]):
        self.client = client
        self.url = url
        self.where = _safe_url(url)
        self.pos = offset
        self.size = size
        # Hash and count the file's bytes, not a compressed transfer encoding.
        self.headers = {"Accept-Encoding": "identity", **headers}
        self.resp: requests.Response | None = None

    def close(self) -> None:
        # Called from the consumer and (with read-ahead) from the reading thread.
        resp, self.resp = self.resp, None
        if resp is not None:
            resp.close()

    def _open(self) -> tuple[requests.Response, int, int | None]:
        """Open at ``self.pos``; return the response, bytes to skip, and the total size."""
        headers = dict(self.headers)
        if self.pos:
            headers["Range"] = f"bytes={self.pos}-"
        resp = self.client.request(self.url, headers=headers, stream=True)
        skip = 0
        total: int | None = None
        length = resp.headers.get("Content-Length")
        if resp.status_code == 206:
            try:
                cr = parse_content_range(resp.headers.get("Content-Range", ""))
            except ValueError:
                cr = None
            if cr is None or cr.start != self.pos:
                resp.close()
                raise ContentMismatch(self.url, f"{self.where} answered a wrong range for byte {self.pos}")
            total = cr.total
        elif resp.status_code == 200:
            # Range ignored: read from the start and drop what we already have.
            skip = self.pos
            total = int(length) if length and length.isdigit() else None
        else:
            resp.close()
            raise ContentMismatch(self.url, f"unexpected HTTP {resp.status_code} from {self.where}")
        if self.size is not None and total is not None and total != self.size:
            resp.close()
            raise ContentMismatch(
                self.url, f"{self.where} serves {total} bytes, expected {self.size}"
            )
        return resp, skip, total

    def chunks(self) -> Iterator[bytes]:
        policy = self.client.policy
        tries = Attempts(policy.retry, sleep=self.client.sleep)
        resumes = 0
        if self.size is not None and self.pos > self.size:
            raise ContentMismatch(self.url, f"offset {self.pos} is past the end ({self.size} bytes)")
        if self.size is not None and self.pos == self.size:
            return
        while True:
            resp, skip, total = self._open()
            self.resp = resp
            progressed = False
            try:
                for chunk in resp.iter_content(CHUNK_SIZE):
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk = chunk[skip:]
                        skip = 0
                    self.pos += len(chunk)
                    if self.size is not None and self.pos > self.size:
                        raise ContentMismatch(self.url, f"{self.where} sent more than {self.size} bytes")
                    progressed = True
                    yield chunk
                end = total if total is not None else self.size
                if end is not None and self.pos < end:
                    raise requests.exceptions.ChunkedEncodingError(
                        f"stream ended at byte {self.pos} of {end}"
                    )
                return
            except _TRANSPORT_ERRORS as e:
                if progressed:
                    tries.succeeded()  # progress: a new streak
                resumes += 1
                if resumes > policy.max_resumes or not tries.failed():
                    raise Unavailable(
                        self.url, f"reading {self.where} failed at byte {self.pos}: {e}"
                    ) from e
            finally:
                self.close()


def _no_auth(r: requests.PreparedRequest) -> requests.PreparedRequest:
    return r


def _short_body(resp: requests.Response, streamed: bool) -> str:
    """The start of an error answer's body (read in full only when small and not streamed)."""
    try:
        if not streamed:
            raw = resp.content[:2048]
        else:
            raw = resp.raw.read(2048, decode_content=True) if resp.raw is not None else b""
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    except Exception:  # an error body we cannot read is no reason to hide the status
        return ""
    finally:
        resp.close()
