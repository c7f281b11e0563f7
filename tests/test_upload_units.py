"""The upload package's parts without a socket or a registry: pipe, framing, session, streaming publish."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from lib.archive import ArchiveError, ArchiveKind
from lib.byte_ranges import ContentRange, parse_content_range
from lib.oci.reference import Reference
from lib.publish import PublishError, publish
from lib.sources.base import SourceFile, SourceSnapshot
from lib.upload.framing import RequestHead, parse_put, protocol_message
from lib.upload.pipe import Aborted, Feed
from lib.upload.session import Refusal, Session, SessionConfig

# ---------------------------------------------------------------- the pipe


def test_feed_reads_across_chunks_and_counts_what_it_accepted():
    feed = Feed()
    for piece in (b"ab", b"cde", b"f"):
        assert feed.write(piece)
    feed.end()
    assert [feed.read(4), feed.read(4), feed.read(4)] == [b"abcd", b"ef", b""]
    assert feed.received == 6


def test_a_full_feed_blocks_the_writer_until_the_reader_takes():
    feed = Feed(capacity=4)
    feed.write(b"1234")
    wrote = threading.Event()
    t = threading.Thread(target=lambda: (feed.write(b"5"), wrote.set()), daemon=True)
    t.start()
    assert not wrote.wait(0.1)
    assert feed.read(2) == b"12"
    assert wrote.wait(5)


def test_abort_stops_the_reader_and_a_finished_consumer_refuses_writes():
    feed = Feed()
    feed.abort("replaced")
    with pytest.raises(Aborted, match="replaced"):
        feed.read()
    feed.consumer_finished()
    assert feed.write(b"x") is False and feed.received == 0


# ---------------------------------------------------------------- framing


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-9/10", ContentRange(0, 9, 10)),
        ("bytes 10-*/*", ContentRange(10, None, None)),
        ("bytes 10-19/*", ContentRange(10, 19, None)),
        ("bytes 4-*/100", ContentRange(4, None, 100)),
    ],
    ids=["whole", "chunked-part", "unknown-total", "open-end"],
)
def test_content_range(value, expected):
    assert parse_content_range(value) == expected


@pytest.mark.parametrize(
    "value", ["bytes 9-0/10", "bytes 0-10/10", "items 0-1/2", "bytes=0-1/2"], ids=["reversed", "past", "unit", "eq"]
)
def test_bad_content_range(value):
    with pytest.raises(ValueError, match="Content-Range"):
        parse_content_range(value)
    with pytest.raises(ArchiveError) as e:
        parse_put(head(content_range=value, content_length="2"))
    assert e.value.status == 400


def head(target: str = "/upload", **headers: str) -> RequestHead:
    pairs = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return RequestHead.from_wire(b"PUT", target.encode(), pairs)


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (head(Content_Length="4", Transfer_Encoding="chunked"), 400),
        (head(), 411),
        (head("/upload?filename=a.tar&filename=b.tar", Content_Length="1"), 400),
        (head(Content_Length="5", Content_Range="bytes 0-3/4"), 400),
        (head("/upload?filename=m.safetensors", Content_Length="1"), 415),
    ],
    ids=["both-framings", "no-framing", "two-filenames", "range-vs-length", "bare-safetensors"],
)
def test_refused_put_heads(request_head, status):
    with pytest.raises(ArchiveError) as e:
        parse_put(request_head)
    assert e.value.status == status


def test_put_head_of_a_resumed_chunked_part():
    req = parse_put(head("/upload?filename=b.tar.gz", Transfer_Encoding="chunked", Content_Range="bytes 8-*/*"))
    assert (req.kind, req.length, req.total, req.announced_end()) == (ArchiveKind.TAR_GZ, None, None, 0)


def test_protocol_messages_are_the_uploaders_words():
    assert "more than once" in protocol_message("conflicting Content-Length headers")
    assert protocol_message("illegal chunk header") == "malformed HTTP request: illegal chunk header"


# ---------------------------------------------------------------- the session and its clock


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def session(tmp_path, clock: Clock, **config) -> Session:
    cfg = SessionConfig(token="t0ken", scratch_dir=str(tmp_path), max_spool_bytes=1 << 20, **config)
    return Session(cfg, publisher=lambda snap: pytest.fail("nothing is published here"), clock=clock)


def test_expiry_follows_the_injected_clock(tmp_path):
    clock = Clock()
    s = session(tmp_path, clock, expires_at=clock.now + timedelta(minutes=5))
    assert not s.due()
    clock.now += timedelta(minutes=5)
    assert s.due() and s.expire()  # nothing in flight: the server may stop
    with pytest.raises(Refusal) as e:
        s.begin(parse_put(head(Content_Length="4")))
    assert e.value.status == 410 and s.state() == ("idle", 0, None)


def test_token_and_announced_size_are_refused_from_the_head(tmp_path):
    s = session(tmp_path, Clock(), max_upload_bytes=100)
    assert s.authorized("Bearer t0ken") and not s.authorized("Bearer t0ke") and not s.authorized(None)
    with pytest.raises(Refusal) as e:
        s.begin(parse_put(head(Content_Length="101")))
    assert e.value.status == 413 and "at most 100 bytes" in e.value.message


def test_a_resume_without_an_interrupted_upload_is_416(tmp_path):
    s = session(tmp_path, Clock())
    with pytest.raises(Refusal) as e:
        s.begin(parse_put(head(Content_Length="4", Content_Range="bytes 4-7/8")))
    assert e.value.status == 416 and e.value.headers == {"Upload-Offset": "0"}


# ---------------------------------------------------------------- streaming publish


class LoudClient:
    """The registry client must not be reached: any call fails the test."""

    def __getattr__(self, name: str):
        pytest.fail(f"the registry was called ({name}) before the layout was checked")


class ListedStream:
    """A ``FileStream`` that knows its names up front and records what was read."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.opened, self.closed = files, [], 0

    def listing(self) -> list[str]:
        return list(self.files)

    def __iter__(self) -> Iterator[SourceFile]:
        for path, data in self.files.items():

            @contextlib.contextmanager
            def opener(offset: int, path: str = path, data: bytes = data) -> Iterator[Iterator[bytes]]:
                self.opened.append(path)
                yield iter([data])

            yield SourceFile(path=path, open=opener, size=len(data))

    def close(self) -> None:
        self.closed += 1


def test_a_streaming_snapshot_is_explicit():
    stream = ListedStream({"m.gguf": b"GGUF"})
    assert SourceSnapshot("Upload", [], stream=stream).streaming
    assert not SourceSnapshot("Local", []).streaming
    with pytest.raises(ValueError, match="not both"):
        SourceSnapshot("Upload", [SourceFile("m.gguf", open=lambda offset: contextlib.nullcontext(iter(())))],
                       stream=stream)  # fmt: skip


def test_a_listed_stream_without_a_layout_is_refused_before_the_registry_is_reached():
    stream = ListedStream({"config.json": b"{}", "README.md": b"# card"})
    snap = SourceSnapshot("Upload", [], stream=stream)
    with pytest.raises(PublishError, match="no \\*.safetensors weights"):
        publish(snap, Reference.parse("registry.test/models/x"), LoudClient())  # type: ignore[arg-type]
    assert stream.opened == []
