"""The blob writer and cross-repository mount against the real registry (Debian docker-registry 2.8)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator

import pytest
import requests

from devstack.registry import RegistryServer
from lib.oci.client import BlobWriter, Mounted, RegistryClient, RetryPolicy
from lib.oci.errors import DigestMismatch, RegistryError
from tests.test_oci_registry import Recorder

MIB = 1 << 20
FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2, total=10.0)


def repo() -> str:
    return f"oci-writer/{uuid.uuid4().hex[:12]}"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def client(registry: RegistryServer) -> Iterator[RegistryClient]:
    with RegistryClient(registry.host, insecure=True, segment_size=MIB, retry=FAST) as c:
        yield c


def session_status(location: str) -> int:
    """What the registry says about an upload session now (204 open, 404 gone)."""
    return requests.get(location, timeout=10).status_code


def test_writes_append_and_commit_returns_the_canonical_descriptor(client: RegistryClient) -> None:
    r, first, second = repo(), os.urandom(MIB + 7), os.urandom(3000)
    with client.blob_writer(r) as w:
        assert w.write([first]) == len(first)
        assert w.write(iter([second[:1000], second[1000:]]), size=len(second)) == len(first) + len(second)
        desc = w.commit(digest_of(first + second), media_type="application/x-test")
    assert (desc.digest, desc.size, desc.media_type) == (digest_of(first + second), len(first + second),
                                                         "application/x-test")
    assert client.blob_exists(r, desc.digest) == len(first + second)
    with client.open_blob(r, desc.digest) as chunks:
        assert b"".join(chunks) == first + second


def test_cancel_twice_sends_one_delete(client: RegistryClient) -> None:
    rec = Recorder(client)
    w = client.blob_writer(repo())
    w.write([b"abc"])
    location = w.location
    w.cancel()
    w.cancel()
    assert rec.count("DELETE") == 1 and w.location == ""
    assert session_status(location) == 404
    with pytest.raises(RegistryError, match="already committed or cancelled"):
        w.write([b"more"])
    with pytest.raises(RegistryError, match="cancelled; nothing to commit"):
        w.commit()


def test_cancel_after_commit_does_nothing(client: RegistryClient) -> None:
    r, data = repo(), b"committed"
    rec = Recorder(client)
    with client.blob_writer(r) as w:
        w.write([data])
        desc = w.commit()
        w.cancel()
    w.cancel()
    assert rec.count("DELETE") == 0
    assert w.commit() == desc  # the outcome stays
    assert client.blob_exists(r, digest_of(data)) == len(data)


def test_commit_with_a_wrong_digest_is_refused_and_nothing_is_left(client: RegistryClient) -> None:
    r, data, wrong = repo(), os.urandom(5000), digest_of(b"something else")
    rec = Recorder(client)
    w = client.blob_writer(r)
    w.write([data])
    location = w.location
    with pytest.raises(DigestMismatch, match="nothing committed"):
        w.commit(wrong)
    assert rec.count("PUT") == 0 and rec.count("DELETE") == 1
    assert session_status(location) == 404
    assert client.blob_exists(r, wrong) is None and client.blob_exists(r, digest_of(data)) is None


def test_leaving_the_block_on_an_error_cancels(client: RegistryClient) -> None:
    rec = Recorder(client)
    with pytest.raises(KeyError), client.blob_writer(repo()) as w:
        w.write([b"partial"])
        location = w.location
        raise KeyError("caller failed")
    assert rec.count("DELETE") == 1 and session_status(location) == 404


def test_a_short_write_cancels_the_session(client: RegistryClient) -> None:
    w = client.blob_writer(repo())
    location = w.location
    with pytest.raises(DigestMismatch, match="yielded 3 bytes, but 10 were expected"):
        w.write([b"abc"], size=10)
    assert w.location == "" and session_status(location) == 404


def test_mount_201_is_mounted_and_202_hands_back_a_writer(client: RegistryClient) -> None:
    src, dst, other = repo(), repo(), repo()
    data = os.urandom(4096)
    desc = client.push_blob(src, [data])
    rec = Recorder(client)
    assert client.mount(dst, desc.digest, src) == Mounted(dst, desc.digest)
    assert rec.count("PATCH") == rec.count("PUT") == 0
    assert client.blob_exists(dst, desc.digest) == len(data)

    missing = os.urandom(100)
    opened = client.mount(other, digest_of(missing), src)  # src lacks it: a session instead
    assert isinstance(opened, BlobWriter) and opened.location
    with opened as w:
        w.write([missing])
        got = w.commit(digest_of(missing))
    assert client.blob_exists(other, got.digest) == len(missing)


def test_a_ranged_read_gets_no_more_than_it_asks_for(client):
    """open_blob(length=) is a ranged GET: the registry sends that window only (publish's header reads)."""
    r = repo()
    data = os.urandom(3 << 20)
    client.push_blob(r, [data], digest=digest_of(data), size=len(data))
    with client.open_blob(r, digest_of(data), offset=(1 << 20) + 5, length=1000) as chunks:
        got = b"".join(chunks)
    assert got == data[(1 << 20) + 5:(1 << 20) + 1005]


def test_inspecting_a_present_blob_reads_windows_not_the_blob(client, tmp_path):
    """A Safetensors blob already in the repository: its header is read back in 1 MiB windows."""
    import numpy as np
    from safetensors.numpy import save_file

    from lib import publish as pub
    from lib.formats.inspect import inspector_for

    path = tmp_path / "model.safetensors"
    save_file({"w": np.zeros((4 << 20) // 4, dtype=np.float32)}, str(path))
    data = path.read_bytes()
    r = repo()
    client.push_blob(r, [data], digest=digest_of(data), size=len(data))
    asked: list[tuple[int, int | None]] = []
    real = client.open_blob

    def spy(repo_: str, digest: str, **kw):
        asked.append((kw.get("offset", 0), kw.get("length")))
        return real(repo_, digest, **kw)

    client.open_blob = spy  # type: ignore[method-assign]
    facts = pub._inspect_existing(client, r, digest_of(data), len(data), inspector_for("model.safetensors"))
    assert asked == [(0, pub.INSPECT_WINDOW)]  # one window: the header is at the start
    assert facts.safetensors and facts.safetensors["parameter_count"] == (4 << 20) // 4
