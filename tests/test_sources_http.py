"""The resilient GET: pure wait/range helpers, then behaviours against scripted servers."""

from __future__ import annotations

import email.utils
import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lib.byte_ranges import ContentRange, parse_content_range
from lib.retry import RetryPolicy
from lib.sources.http import (
    ContentMismatch,
    HttpClient,
    HttpError,
    HttpPolicy,
    HttpStatusError,
    Unavailable,
    origin,
    rate_limit_wait,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "12"}, 12.0),
        ({"Retry-After": " 1.5 "}, 1.5),
        ({"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"RateLimit": '"api";r=0;t=55'}, 55.0),
        ({"RateLimit": "limit=100, remaining=0, reset=20"}, 20.0),
        ({"RateLimit": "garbage"}, None),
        ({"RateLimit-Reset": "9"}, 9.0),
        ({"RateLimit": "garbage", "RateLimit-Reset": "9"}, 9.0),
        ({"Retry-After": "3", "RateLimit": '"api";r=0;t=55'}, 3.0),
        ({}, None),
    ],
    ids=["seconds", "fraction", "http-date", "date-past", "junk", "structured", "draft", "bad-ratelimit",
         "reset", "fallthrough", "retry-after-first", "none"],
)
def test_rate_limit_wait(headers: dict[str, str], wait: float | None) -> None:
    assert rate_limit_wait(headers, NOW) == wait


def test_backoff_delay_doubles_with_jitter_and_caps() -> None:
    p = RetryPolicy(base_delay=1.0, max_delay=10.0, jitter=True)
    assert p.delay(1, lambda: 0.0) == 0.5
    assert p.delay(1, lambda: 1.0) == 1.0
    assert p.delay(3, lambda: 1.0) == 4.0
    assert p.delay(20, lambda: 1.0) == 10.0


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("bytes 0-9/10", (0, 9, 10)), ("bytes 5-9/*", (5, 9, None)), ("bytes */10", None), ("items 0-1/2", None)],
)
def test_parse_content_range(value: str, parsed: tuple | None) -> None:
    if parsed is None:
        with pytest.raises(ValueError):
            parse_content_range(value)
    else:
        assert parse_content_range(value) == ContentRange(*parsed)


def test_origin_normalises_default_ports() -> None:
    assert origin("https://Hub.example/x") == origin("https://hub.example:443/y")
    assert origin("http://a:80/") != origin("https://a/")


# --------------------------------------------------------------------------
# Scripted servers
# --------------------------------------------------------------------------

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Scripted:
    """Answers each GET with ``script(path, headers)``; records what arrived."""

    host: str
    script: Callable[[str, dict[str, str]], Answer]
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def __enter__(self) -> Scripted:
        owner = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                headers = dict(self.headers)
                owner.seen.append((self.path, headers))
                status, extra, body = owner.script(self.path, headers)
                self.send_response(status)
                for k, v in extra.items():
                    if v:
                        self.send_header(k, v)
                if "Content-Length" not in extra:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if extra.get("Connection") == "close":
                    self.close_connection = True

        self.server = http.server.ThreadingHTTPServer((self.host, 0), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://{self.host}:{self.server.server_address[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(script: Callable[[str, dict[str, str]], Answer], host: str = "127.0.0.1") -> Scripted:
    return Scripted(host, script)


FAST = HttpPolicy(retry=RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002), connect_timeout=2, read_timeout=2)
BODY = bytes(range(256)) * 40


def client(**kw: Any) -> HttpClient:
    kw.setdefault("policy", FAST)
    kw.setdefault("sleep", lambda s: None)
    return HttpClient(**kw)


@pytest.fixture
def store() -> Iterator[Scripted]:
    """An "object store" on another host that serves BODY with Range."""

    def answer(path: str, headers: dict[str, str]) -> Answer:
        rng = headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            return 206, {"Content-Range": f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"}, BODY[start:]
        return 200, {}, BODY

    with serve(answer, "127.0.0.2") as s:
        yield s


def test_auth_dropped_on_redirect_to_other_host_kept_on_same(store: Scripted, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # A .netrc with credentials for both hosts must not leak into any request.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login u password p\nmachine 127.0.0.2 login u password p\n")
    monkeypatch.setenv("NETRC", str(netrc))

    def front(path: str, headers: dict[str, str]) -> Answer:
        if path == "/start":
            return 302, {"Location": "/moved"}, b""
        return 307, {"Location": f"{store.url}/blob?sig=1"}, b""

    with serve(front) as hub, client(authorization="Bearer t0k", auth_origins={hub.url}) as c:
        with c.open_stream(f"{hub.url}/start", size=len(BODY)) as chunks:
            assert b"".join(chunks) == BODY
        assert [(p, h.get("Authorization")) for p, h in hub.seen] == [("/start", "Bearer t0k"),
                                                                      ("/moved", "Bearer t0k")]
    assert [(p, h.get("Authorization")) for p, h in store.seen] == [("/blob?sig=1", None)]


def test_range_ignored_by_server_skips_prefix() -> None:
    with serve(lambda p, h: (200, {}, BODY)) as s, client() as c:
        with c.open_stream(s.url + "/f", offset=1000, size=len(BODY)) as chunks:
            assert b"".join(chunks) == BODY[1000:]
        assert s.seen[0][1]["Range"] == "bytes=1000-"
        assert s.seen[0][1]["Accept-Encoding"] == "identity"


def test_wrong_content_range_is_a_mismatch() -> None:
    with serve(lambda p, h: (206, {"Content-Range": f"bytes 0-9/{len(BODY)}"}, BODY[:10])) as s, client() as c:
        with pytest.raises(ContentMismatch, match="wrong range"), c.open_stream(s.url, offset=5) as chunks:
            list(chunks)


def test_announced_size_mismatch_fails_before_any_byte() -> None:
    with serve(lambda p, h: (200, {}, BODY)) as s, client() as c:
        got: list[bytes] = []
        with pytest.raises(ContentMismatch, match=f"serves {len(BODY)} bytes, expected 10"):
            with c.open_stream(s.url, size=10) as chunks:
                got.extend(chunks)
        assert got == []


def test_stream_longer_than_size_is_a_mismatch() -> None:
    # No Content-Length: the body runs until the server closes the connection.
    with serve(lambda p, h: (200, {"Connection": "close", "Content-Length": ""}, BODY)) as s, client() as c:
        with pytest.raises(ContentMismatch, match="sent more than 10 bytes"):
            with c.open_stream(s.url, size=10) as chunks:
                list(chunks)


def test_stream_shorter_than_size_is_retried_then_unavailable() -> None:
    with serve(lambda p, h: (200, {"Connection": "close", "Content-Length": ""}, BODY[:10])) as s, client() as c:
        with pytest.raises(Unavailable, match="at byte 10"):
            with c.open_stream(s.url, size=len(BODY)) as chunks:
                list(chunks)
        # Each retry resumed from byte 10.
        assert [h.get("Range") for _, h in s.seen][1:] == ["bytes=10-"] * (len(s.seen) - 1)


def test_final_error_carries_hub_error_code_and_hides_query() -> None:
    def answer(path: str, headers: dict[str, str]) -> Answer:
        return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "no such file"}, b"{}"

    with serve(answer) as s, client() as c:
        with pytest.raises(HttpStatusError) as info:
            c.request(s.url + "/f?X-Amz-Signature=secret")
    e = info.value
    assert (e.status, e.error_code, e.error_message) == (404, "EntryNotFound", "no such file")
    assert "secret" not in e.message


def test_error_body_used_when_no_error_message_header() -> None:
    with serve(lambda p, h: (403, {}, b"forbidden by policy")) as s, client() as c:
        with pytest.raises(HttpStatusError) as info:
            c.request(s.url)
    assert info.value.error_message == "forbidden by policy"


def test_redirect_loop_fails() -> None:
    with serve(lambda p, h: (302, {"Location": "/again"}, b"")) as s, client() as c:
        with pytest.raises(HttpError, match="redirects"):
            c.request(s.url)


def test_redirect_without_location_fails() -> None:
    with serve(lambda p, h: (302, {}, b"")) as s, client() as c:
        with pytest.raises(HttpStatusError):
            c.request(s.url)


def test_503_retry_after_is_honoured_then_gives_up() -> None:
    sleeps: list[float] = []
    with serve(lambda p, h: (503, {"Retry-After": "2"}, b"busy")) as s, client(sleep=sleeps.append) as c:
        with pytest.raises(Unavailable, match="HTTP 503"):
            c.request(s.url)
    assert sleeps == [2.0, 2.0]
    assert len(s.seen) == FAST.retry.attempts


def test_429_without_headers_backs_off_and_gives_up_after_budget() -> None:
    sleeps: list[float] = []
    policy = HttpPolicy(retry=RetryPolicy(base_delay=0.001, max_delay=0.002), rate_limit_attempts=4)
    with serve(lambda p, h: (429, {}, b"")) as s, client(sleep=sleeps.append, policy=policy) as c:
        with pytest.raises(Unavailable, match="rate limited"):
            c.get_json(s.url)
    assert len(sleeps) == 3 and all(0 < x <= 0.002 for x in sleeps)


def test_get_json_rejects_non_json() -> None:
    with serve(lambda p, h: (200, {"Content-Type": "text/html"}, b"<html>")) as s, client() as c:
        with pytest.raises(ContentMismatch, match="JSON"):
            c.get_json(s.url)


def test_zero_length_and_offset_at_end() -> None:
    with serve(lambda p, h: (200, {}, b"")) as s, client() as c:
        with c.open_stream(s.url, size=0) as chunks:
            assert list(chunks) == []
        with c.open_stream(s.url, offset=5, size=5) as chunks:
            assert list(chunks) == []
        with pytest.raises(ContentMismatch, match="past the end"), c.open_stream(s.url, offset=6, size=5) as chunks:
            list(chunks)
        assert s.seen == []  # nothing to fetch, nothing fetched


def test_get_bytes_refuses_oversized_documents() -> None:
    with serve(lambda p, h: (200, {}, BODY)) as s, client() as c:
        body, headers = c.get_bytes(s.url, limit=len(BODY))
        assert body == BODY and headers["Content-Length"] == str(len(BODY))
        with pytest.raises(ContentMismatch, match="more than 100 bytes"):
            c.get_bytes(s.url, limit=100)


def test_read_ahead_yields_in_order_and_raises_where_it_happened() -> None:
    from lib.sources.http import ReadAhead

    def chunks() -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        raise Unavailable("u", "cut")

    got: list[bytes] = []
    with pytest.raises(Unavailable, match="cut"):
        for c in ReadAhead(chunks(), 1):
            got.append(c)
    assert got == [b"a", b"b"]


def test_read_ahead_is_bounded_and_stops_when_the_consumer_does() -> None:
    import time

    from lib.sources.http import ReadAhead

    produced: list[int] = []

    def endless() -> Iterator[bytes]:
        i = 0
        while True:
            produced.append(i)
            i += 1
            yield b"x"

    ahead = ReadAhead(endless(), 3)
    it = iter(ahead)
    assert next(it) == b"x"
    time.sleep(0.2)
    assert len(produced) <= 1 + 3 + 1  # consumed + queued + one blocked in put
    ahead.stop()
    ahead.join()
    assert not ahead._thread.is_alive()


def test_open_stream_with_read_ahead(store: Scripted) -> None:
    with client() as c:
        with c.open_stream(store.url + "/f", size=len(BODY), read_ahead=2) as chunks:
            assert b"".join(chunks) == BODY
        with c.open_stream(store.url + "/f", offset=7, size=len(BODY), read_ahead=2) as chunks:
            assert next(iter(chunks)) == BODY[7:]
