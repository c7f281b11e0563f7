"""lib.oci against in-process fakes, for answers the real registry won't give on cue.

Most cases are tables of request → response (``Script``): the rows the fake
serves, in order, are the exchange the client must make — method, path,
status, headers — including the error answers (507, 5xx, an errcode body, a
wrong ``Range``). The stateful ``Fake`` below covers what a table can't: it
keeps partial PATCH data and reports it in ``Range`` (as the OCI spec allows
and distribution does not), cuts connections mid-body, stalls, and redirects
blob downloads to a second server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from lib.oci.client import Mounted, RegistryClient, RetryPolicy
from lib.oci.errors import (
    DigestMismatch,
    InsufficientStorage,
    NotFound,
    RegistryError,
    Unreachable,
    UploadInterrupted,
)
from lib.oci.media_types import OCI_MANIFEST as OCI

MIB = 1 << 20
FAST = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05, total=10.0)
Fault = Callable[["Handler"], bool]  # returns True when it answered the request itself


class Fake:
    def __init__(self) -> None:
        self.sessions: dict[str, bytearray] = {}
        self.blobs: dict[str, bytes] = {}
        self.log: list[tuple[str, str, dict[str, str]]] = []
        self.faults: list[Fault] = []
        self.basic: str | None = None  # "user:pass" required when set
        self.redirect_blobs_to: str | None = None
        self.ignore_range = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, method: str) -> int:
        return sum(1 for m, _, _ in self.log if m == method)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    @property
    def fake(self) -> Fake:
        return self.server.fake  # type: ignore[attr-defined]

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def handle_any(self) -> None:
        f = self.fake
        f.log.append((self.command, self.path, dict(self.headers)))
        for fault in list(f.faults):
            if fault(self):
                return
        if f.basic:
            want = "Basic " + base64.b64encode(f.basic.encode()).decode()
            if self.headers.get("Authorization") != want:
                self.body()
                self.reply(
                    401,
                    b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                    {"WWW-Authenticate": 'Basic realm="fake"'},
                )
                return
        url = urlsplit(self.path)
        parts = url.path.split("/")
        q = parse_qs(url.query)
        if "/blobs/uploads/" in url.path:
            repo = url.path.split("/v2/")[1].split("/blobs/uploads/")[0]
            uid = url.path.rsplit("/", 1)[1]
            if self.command == "POST":
                uid = uuid.uuid4().hex
                f.sessions[uid] = bytearray()
                self.reply(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}", "Range": "0-0"})
                return
            data = f.sessions.get(uid)
            if data is None:
                self.body()
                self.reply(
                    404, b'{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown"}]}'
                )
                return
            if self.command == "PATCH":
                start = int(self.headers["Content-Range"].split("-")[0])
                if start != len(data):
                    self.body()
                    self.reply(416, headers={"Range": f"0-{len(data) - 1}"})
                    return
                data += self.body()
            elif self.command == "PUT":
                data += self.body()
                digest = q["digest"][0]
                if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                    self.reply(
                        400, b'{"errors":[{"code":"DIGEST_INVALID","message":"digest did not match"}]}'
                    )
                    return
                f.blobs[digest] = bytes(data)
                del f.sessions[uid]
                self.reply(201, headers={"Docker-Content-Digest": digest})
                return
            elif self.command == "DELETE":
                del f.sessions[uid]
                self.reply(204)
                return
            status = 204 if self.command == "GET" else 202
            self.reply(
                status,
                headers={
                    "Location": f"/v2/{repo}/blobs/uploads/{uid}",
                    "Range": f"0-{max(0, len(data) - 1)}",
                },
            )
            return
        if "/blobs/" in url.path:
            digest = parts[-1]
            blob = f.blobs.get(digest)
            if blob is None:
                self.reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
                return
            if f.redirect_blobs_to and self.command == "GET":
                self.reply(307, headers={"Location": f"{f.redirect_blobs_to}/storage/{digest}"})
                return
            self.serve_blob(blob)
            return
        if url.path.endswith("/tags/list"):
            tags = ["a", "b", "c", "d", "e"]
            last = q.get("last", [""])[0]
            page = [t for t in tags if t > last][:2]
            headers = {"Content-Type": "application/json"}
            if page and page[-1] != tags[-1]:
                headers["Link"] = f'<{url.path}?n=2&last={page[-1]}>; rel="next"'
            self.reply(200, json.dumps({"name": "a", "tags": page}).encode(), headers)
            return
        if url.path.startswith("/storage/"):
            self.serve_blob(f.blobs[parts[-1]])
            return
        self.reply(404)

    def serve_blob(self, blob: bytes) -> None:
        rng = self.headers.get("Range")
        if rng and not self.fake.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.reply(206, blob[start:], {"Content-Range": f"bytes {start}-{len(blob) - 1}/{len(blob)}"})
        else:
            self.reply(200, blob)

    do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any


@pytest.fixture
def fake():
    f = Fake()
    yield f
    f.close()


def client_for(f: Fake, **kw) -> RegistryClient:
    return RegistryClient(f.host, insecure=True, segment_size=MIB, retry=FAST, sleep=lambda s: None, **kw)


def once(method: str, action: Callable[[Handler], None], *, times: int = 1) -> Fault:
    left = [times]

    def fault(h: Handler) -> bool:
        if h.command == method and left[0] > 0:
            left[0] -= 1
            action(h)
            return True
        return False

    return fault


# --------------------------------------------------------------------------
# Request → response tables
# --------------------------------------------------------------------------

Row = tuple[str, str, int, dict[str, str]]  # method, path (with query), status, answer headers
D = "sha256:" + "d" * 64
HELLO = "sha256:" + hashlib.sha256(b"hello").hexdigest()
MANIFEST = b'{"schemaVersion":2}'
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
UP = "/v2/a/blobs/uploads/"
ERRCODE = {
    "NAME_INVALID": b'{"errors":[{"code":"NAME_INVALID","message":"invalid repository name"}]}',
    "MANIFEST_UNKNOWN": b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}',
}


class Script:
    """Serves ``rows`` in order, whatever is asked, and records what was asked."""

    def __init__(self, rows: list[Row], bodies: dict[int, bytes]) -> None:
        self.rows, self.bodies = list(rows), bodies
        self.asked: list[tuple[str, str]] = []
        script = self

        class Answer(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                script.asked.append((self.command, self.path))
                i = len(script.asked) - 1
                _, _, status, headers = script.rows[i] if i < len(script.rows) else ("", "", 599, {})
                body = script.bodies.get(i, b"")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def client(self) -> RegistryClient:
        host = f"127.0.0.1:{self.server.server_address[1]}"
        return RegistryClient(host, insecure=True, retry=RetryPolicy(attempts=3, base_delay=0.01),
                              sleep=lambda s: None)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _manifest(c: RegistryClient) -> object:
    return c.get_manifest("a", "v1").digest


def _push_hello(c: RegistryClient) -> object:
    return c.push_blob("a", [b"hello"]).digest


def _mount(c: RegistryClient) -> object:
    out = c.mount("b", D, "a")
    if not isinstance(out, Mounted):
        out.cancel()
        return "writer"
    return out


SESSION = {"Location": f"{UP}s1", "Range": "0-0"}
TABLES = [
    pytest.param(
        _mount, [("POST", f"/v2/b/blobs/uploads/?mount={D.replace(':', '%3A')}&from=a", 201, {})],
        {}, Mounted("b", D), id="mount-201",
    ),
    pytest.param(
        _mount,
        [("POST", f"/v2/b/blobs/uploads/?mount={D.replace(':', '%3A')}&from=a", 202, {"Location": "/v2/b/u/s9"}),
         ("DELETE", "/v2/b/u/s9", 204, {})],
        {}, "writer", id="mount-202-session-opened",
    ),
    pytest.param(
        _push_hello,
        [("POST", UP, 503, {}), ("POST", UP, 503, {}), ("POST", UP, 202, SESSION),
         ("PATCH", f"{UP}s1", 202, {"Location": f"{UP}s1", "Range": "0-4"}),
         ("PUT", f"{UP}s1?digest={HELLO.replace(':', '%3A')}", 201, {})],
        {}, HELLO, id="5xx-retried",
    ),
    pytest.param(
        _push_hello,
        [("POST", UP, 202, SESSION), ("PATCH", f"{UP}s1", 507, {}), ("DELETE", f"{UP}s1", 204, {})],
        {}, InsufficientStorage, id="507-on-patch-cancels",
    ),
    pytest.param(
        _push_hello,
        [("POST", UP, 202, SESSION),
         ("PATCH", f"{UP}s1", 202, {"Location": f"{UP}s1", "Range": "0-1"}),  # acknowledged 2 of 5
         ("GET", f"{UP}s1", 204, {"Location": f"{UP}s1", "Range": "0-1"}),  # ask where it stands
         ("PATCH", f"{UP}s1", 202, {"Location": f"{UP}s1", "Range": "0-4"}),  # the rest
         ("PUT", f"{UP}s1?digest={HELLO.replace(':', '%3A')}", 201, {})],
        {}, HELLO, id="short-range-resumed",
    ),
    pytest.param(
        _push_hello, [("POST", UP, 400, {})], {0: ERRCODE["NAME_INVALID"]}, RegistryError, id="400-errcode",
    ),
    pytest.param(
        lambda c: c.blob_exists("a", D), [("HEAD", f"/v2/a/blobs/{D}", 502, {})] * 3, {}, RegistryError,
        id="5xx-bounded",
    ),
    pytest.param(
        lambda c: c.blob_exists("a", D), [("HEAD", f"/v2/a/blobs/{D}", 404, {})], {}, None, id="head-404",
    ),
    pytest.param(
        _manifest, [("GET", "/v2/a/manifests/v1", 404, {})], {0: ERRCODE["MANIFEST_UNKNOWN"]}, NotFound,
        id="manifest-unknown",
    ),
    pytest.param(
        _manifest,
        [("GET", "/v2/a/manifests/v1", 200, {"Content-Type": OCI, "Docker-Content-Digest": MANIFEST_DIGEST})],
        {0: MANIFEST}, MANIFEST_DIGEST, id="manifest-digest-matches",
    ),
    pytest.param(
        _manifest,
        [("GET", "/v2/a/manifests/v1", 200, {"Content-Type": OCI, "Docker-Content-Digest": D})],
        {0: MANIFEST}, DigestMismatch, id="manifest-digest-differs",
    ),
    pytest.param(
        lambda c: c.list_tags("a"),
        [("GET", "/v2/a/tags/list", 200, {"Link": '</v2/a/tags/list?n=2&last=b>; rel="next"'}),
         ("GET", "/v2/a/tags/list?n=2&last=b", 200, {})],
        {0: b'{"tags":["a","b"]}', 1: b'{"tags":["c"]}'}, ["a", "b", "c"], id="tags-link-pagination",
    ),
]


@pytest.mark.parametrize(("action", "rows", "bodies", "expected"), TABLES)
def test_exchange_table(action: Callable[[RegistryClient], object], rows: list[Row], bodies: dict[int, bytes],
                        expected: object) -> None:
    script = Script(rows, bodies)
    try:
        if isinstance(expected, type) and issubclass(expected, Exception):
            with pytest.raises(expected):
                action(script.client())
        else:
            assert action(script.client()) == expected
        assert script.asked == [(m, p) for m, p, _, _ in rows]
    finally:
        script.close()


def cut_after(n: int) -> Callable[[Handler], None]:
    """Store the first ``n`` body bytes of the PATCH, then drop the connection without answering."""

    def action(h: Handler) -> None:
        uid = urlsplit(h.path).path.rsplit("/", 1)[1]
        h.fake.sessions[uid] += h.rfile.read(n)
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)

    return action


def test_resume_mid_segment_from_registry_range(fake):
    """A registry that kept part of a cut PATCH: continue from its Range with the held bytes."""
    data = os.urandom(2 * MIB + 500)
    calls = [0]

    def second_patch(h: Handler) -> bool:
        if h.command != "PATCH":
            return False
        calls[0] += 1
        if calls[0] == 2:
            cut_after(300_000)(h)
            return True
        return False

    fake.faults.append(second_patch)
    c = client_for(fake)
    d = c.push_blob("a", (data[i : i + 65536] for i in range(0, len(data), 65536)), size=len(data))
    assert fake.blobs[d.digest] == data
    ranges = [h.get("Content-Range") for m, _, h in fake.log if m == "PATCH"]
    assert ranges == [
        f"0-{MIB - 1}",
        f"{MIB}-{2 * MIB - 1}",
        f"{MIB + 300_000}-{2 * MIB - 1}",
        f"{2 * MIB}-{len(data) - 1}",
    ]
    assert [m for m, _, _ in fake.log].count("GET") == 1  # one status query


def test_stalled_registry_times_out(fake):
    fake.faults.append(once("HEAD", lambda h: time.sleep(5), times=10))
    c = RegistryClient(
        fake.host, insecure=True, timeout=(0.5, 0.3), sleep=lambda s: None, retry=RetryPolicy(attempts=2)
    )
    t = time.monotonic()
    with pytest.raises(Unreachable, match="unreachable"):
        c.blob_exists("a", "sha256:" + "0" * 64)
    assert time.monotonic() - t < 3  # two attempts of 0.3 s, not two stalls of 5 s


def test_redirected_download_does_not_forward_authorization(fake):
    storage = Fake()
    try:
        data = os.urandom(3 * MIB + 1)
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        fake.blobs[d] = storage.blobs[d] = data
        fake.basic = "alice:secret"
        fake.redirect_blobs_to = f"http://{storage.host}"
        c = client_for(fake, username="alice", password="secret")
        with c.open_blob("a", d) as it:
            assert b"".join(it) == data
        with c.open_blob("a", d, offset=MIB) as it:
            assert b"".join(it) == data[MIB:]
        registry_gets = [h for m, _, h in fake.log if m == "GET"]
        assert registry_gets[-1]["Authorization"].startswith("Basic ")
        assert [m for m, _, _ in storage.log] == ["GET", "GET"]
        assert all("Authorization" not in h for _, _, h in storage.log)
        assert storage.log[1][2]["Range"] == f"bytes={MIB}-"
    finally:
        storage.close()


def test_download_of_corrupt_blob_raises_at_the_end(fake):
    data = b"a" * 5000
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    fake.blobs[d] = b"b" * 5000
    c = client_for(fake)
    got = []
    with pytest.raises(RegistryError, match="corrupt"), c.open_blob("a", d) as it:
        for chunk in it:
            got.append(chunk)
    assert b"".join(got) == b"b" * 5000  # bytes flow; the verdict comes when the stream ends


def test_resume_needs_bytes_no_longer_held(fake):
    """A registry that dropped a cut PATCH's bytes wants them again; beyond the window they are gone."""
    data = os.urandom(3 * MIB)
    calls = [0]

    def discard_second_patch(h: Handler) -> bool:
        if h.command != "PATCH":
            return False
        calls[0] += 1
        if calls[0] == 2:
            h.rfile.read(600_000)  # read, keep nothing: Range stays at the PATCH start
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return True
        return False

    fake.faults.append(discard_second_patch)
    c = client_for(fake, window=256 * 1024)
    with pytest.raises(UploadInterrupted, match="no longer held") as ei:
        c.push_blob("a", (data[i : i + 65536] for i in range(0, len(data), 65536)), size=len(data))
    assert ei.value.status is None
    assert fake.sessions == {}  # cancelled


def test_patch_to_a_registry_that_stops_reading_times_out_and_resumes(fake):
    fake.faults.append(once("PATCH", lambda h: time.sleep(3)))  # headers read, body never
    data = os.urandom(16 * MIB)
    c = RegistryClient(fake.host, insecure=True, timeout=(0.5, 0.5), retry=FAST, sleep=lambda s: None)
    t = time.monotonic()
    d = c.push_blob("a", (data[i : i + MIB] for i in range(0, len(data), MIB)), size=len(data))
    assert time.monotonic() - t < 2.5
    assert fake.blobs[d.digest] == data
    assert [m for m, _, _ in fake.log].count("PATCH") == 2


def test_ranged_read_from_a_registry_ignoring_range(fake):
    data = os.urandom(3 * MIB)
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    fake.blobs[d] = data
    fake.ignore_range = True
    c = client_for(fake)
    with c.open_blob("a", d, offset=MIB + 3) as it:
        assert b"".join(it) == data[MIB + 3 :]
    fake.blobs[d] = bytes([data[0] ^ 0xFF]) + data[1:]  # the whole body came, so it is verified too
    with pytest.raises(RegistryError, match="corrupt"), c.open_blob("a", d, offset=MIB) as it:
        b"".join(it)
