"""lib.oci against the real registry (Debian docker-registry 2.8): uploads, resume, auth, TLS."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devstack.registry import RegistryServer
from lib.oci.client import RegistryClient, RetryPolicy
from lib.oci.errors import AuthError, DigestMismatch, NotFound, TLSError, Unreachable, UploadInterrupted

MIB = 1 << 20
FAST = RetryPolicy(attempts=8, base_delay=0.1, max_delay=1.0, total=30.0)


def repo() -> str:
    return f"oci-test/{uuid.uuid4().hex[:12]}"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chunked(data: bytes, n: int = 100_003) -> Iterator[bytes]:
    for i in range(0, len(data), n):
        yield data[i : i + n]


class Recorder:
    """Counts requests by method through a requests response hook."""

    def __init__(self, client: RegistryClient):
        self.calls: list[tuple[str, int, dict]] = []
        self.urls: list[str] = []
        client.session.hooks["response"].append(self)

    def __call__(self, resp: requests.Response, *args, **kwargs) -> None:
        self.calls.append((resp.request.method, resp.status_code, dict(resp.request.headers)))
        self.urls.append(resp.request.url or "")

    def count(self, method: str) -> int:
        return sum(1 for m, _, _ in self.calls if m == method)

    def patch_ranges(self) -> list[str]:
        return [h.get("Content-Range", "") for m, s, h in self.calls if m == "PATCH" and s == 202]


@pytest.fixture
def client(registry: RegistryServer) -> RegistryClient:
    return RegistryClient(registry.host, insecure=True, segment_size=MIB, retry=FAST)


def read_all(client: RegistryClient, r: str, digest: str, offset: int = 0) -> bytes:
    with client.open_blob(r, digest, offset=offset) as it:
        return b"".join(it)


def test_chunked_push_and_pull_round_trip(client):
    data = os.urandom(2 * MIB + 12345)
    rec = Recorder(client)
    r = repo()
    desc = client.push_blob(r, chunked(data), size=len(data), media_type="application/x-test")
    assert (desc.digest, desc.size, desc.media_type) == (digest_of(data), len(data), "application/x-test")
    # Three PATCHes of at most one segment each, contiguous Content-Ranges, then one PUT.
    assert rec.patch_ranges() == [f"0-{MIB - 1}", f"{MIB}-{2 * MIB - 1}", f"{2 * MIB}-{len(data) - 1}"]
    assert rec.count("PUT") == 1
    assert client.blob_exists(r, desc.digest) == len(data)
    assert read_all(client, r, desc.digest) == data
    assert read_all(client, r, desc.digest, offset=MIB + 7) == data[MIB + 7 :]


def test_memory_is_bounded_by_the_window(registry):
    """A 48 MiB blob in one PATCH holds at most a 4 MiB window of fresh 1 MiB chunks."""
    import tracemalloc

    c = RegistryClient(registry.host, insecure=True, window=4 * MIB, retry=FAST)
    h = hashlib.sha256()

    def source():
        for i in range(48):
            chunk = bytes([i]) * MIB
            h.update(chunk)
            yield chunk

    tracemalloc.start()
    try:
        desc = c.push_blob(repo(), source(), size=48 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert desc.digest == "sha256:" + h.hexdigest()
    assert peak < 8 * MIB, peak


def test_unknown_size_reads_ahead_one_segment(client):
    data = os.urandom(MIB + 5)
    r = repo()
    desc = client.push_blob(r, chunked(data, 4096))
    assert desc.digest == digest_of(data) and desc.size == len(data)
    assert read_all(client, r, desc.digest) == data


def test_empty_blob(client):
    r = repo()
    desc = client.push_blob(r, iter([b"", b""]), size=0)
    assert desc.digest == digest_of(b"") and desc.size == 0
    assert client.blob_exists(r, desc.digest) == 0


def test_present_blob_is_skipped_without_sending_bytes(client):
    data = os.urandom(MIB + 1)
    r = repo()
    client.push_blob(r, chunked(data), digest=digest_of(data), size=len(data))
    rec = Recorder(client)
    consumed = []

    def source():
        consumed.append(1)
        yield data

    desc = client.push_blob(r, source(), digest=digest_of(data), size=len(data))
    assert desc.size == len(data)
    assert rec.count("PATCH") == 0 and rec.count("POST") == 0 and rec.count("PUT") == 0
    assert rec.count("HEAD") == 1 and consumed == []
    with pytest.raises(DigestMismatch, match="expected"):
        client.push_blob(r, source(), digest=digest_of(data), size=len(data) + 1)


def test_push_bytes_and_mount(client):
    a, b = repo(), repo()
    desc = client.push_bytes(a, b'{"x": 1}', "application/json")
    assert client.blob_exists(b, desc.digest) is None
    assert client.mount_blob(b, desc.digest, a) is True
    assert client.blob_exists(b, desc.digest) == desc.size
    rec = Recorder(client)
    missing = digest_of(b"never pushed")
    assert client.mount_blob(b, missing, a) is False
    # The upload session the registry opened instead is cancelled.
    assert [(m, s) for m, s, _ in rec.calls] == [("POST", 202), ("DELETE", 204)]


def test_digest_mismatch_commits_nothing(client):
    data = os.urandom(MIB + 100)
    wrong = digest_of(b"something else")
    r = repo()
    rec = Recorder(client)
    with pytest.raises(DigestMismatch) as ei:
        client.push_blob(r, chunked(data), digest=wrong, size=len(data))
    assert wrong in ei.value.message and digest_of(data) in ei.value.message
    assert rec.count("PUT") == 0 and rec.count("DELETE") == 1
    assert client.blob_exists(r, digest_of(data)) is None
    assert client.blob_exists(r, wrong) is None


@pytest.mark.parametrize("delta", [1, -1], ids=["source-short", "source-long"])
def test_size_mismatch_commits_nothing(client, delta):
    data = os.urandom(MIB + 100)
    r = repo()
    rec = Recorder(client)
    said = f"yielded {len(data)} bytes" if delta > 0 else f"yielded more than {len(data) - 1} bytes"
    with pytest.raises(DigestMismatch, match=f"{said}, but {len(data) + delta} were expected"):
        client.push_blob(r, chunked(data), size=len(data) + delta)
    assert rec.count("PUT") == 0
    assert client.blob_exists(r, digest_of(data)) is None


def test_source_error_cancels_upload(client):
    r = repo()
    rec = Recorder(client)

    def source():
        yield os.urandom(MIB + 10)
        raise OSError("disk read failed")

    with pytest.raises(OSError, match="disk read failed"):
        client.push_blob(r, source(), size=3 * MIB)
    assert rec.count("DELETE") == 1 and rec.count("PUT") == 0


def test_manifests_and_tags(client):
    r = repo()
    cfg = client.push_bytes(r, b"{}", "application/vnd.oci.empty.v1+json")
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cfg.to_json(),
            "layers": [],
        }
    ).encode()
    digest = client.put_manifest(r, "v1", body, "application/vnd.oci.image.manifest.v1+json")
    assert digest == digest_of(body)
    for ref in ("v1", digest):
        m = client.get_manifest(r, ref)
        assert (m.body, m.digest, m.media_type) == (
            body,
            digest,
            "application/vnd.oci.image.manifest.v1+json",
        )
    assert client.list_tags(r) == ["v1"]
    client.delete_manifest(r, digest)
    with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
        client.get_manifest(r, "v1")
    with pytest.raises(NotFound):
        client.list_tags(repo())


def test_open_blob_detects_corrupt_registry_copy(registry, client):
    data = os.urandom(300_000)
    r = repo()
    d = client.push_blob(r, [data]).digest
    path = registry.workdir / "storage/docker/registry/v2/blobs/sha256" / d[7:9] / d[7:] / "data"
    path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # differs whatever the random data
    with pytest.raises(DigestMismatch, match="corrupt"):
        read_all(client, r, d)
    assert read_all(client, r, d, offset=1) == data[1:]  # a ranged read cannot be verified
    path.write_bytes(data)


def test_plain_http_refused_without_insecure(registry):
    with pytest.raises(TLSError, match="insecure"):
        RegistryClient(registry.host, retry=FAST).blob_exists("a", digest_of(b""))


def test_unreachable_after_bounded_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    c = RegistryClient(
        f"127.0.0.1:{port}",
        insecure=True,
        retry=RetryPolicy(attempts=3, base_delay=0.01),
        sleep=sleeps.append,
    )
    with pytest.raises(Unreachable) as ei:
        c.blob_exists("a", digest_of(b""))
    assert ei.value.status is None
    assert sleeps == [0.01, 0.02]


# --------------------------------------------------------------------- resume


def test_resume_after_registry_restart_between_segments(registry_factory):
    """Killed while the next PATCH is starting: the session resumes from the registry's Range."""
    reg = registry_factory()
    patient = RetryPolicy(attempts=30, base_delay=0.1, max_delay=1.0, total=60.0)  # restart may be slow
    c = RegistryClient(reg.host, insecure=True, segment_size=MIB, retry=patient)
    rec = Recorder(c)
    data = os.urandom(3 * MIB + 999)
    restarter: list[threading.Thread] = []

    def source():
        for i in range(0, len(data), 256 * 1024):
            if i == 2 * MIB:  # the PATCH of the third segment has sent its headers
                reg.kill()
                t = threading.Thread(target=reg.start)
                t.start()
                restarter.append(t)
            yield data[i : i + 256 * 1024]

    r = repo()
    desc = c.push_blob(r, source(), size=len(data))
    restarter[0].join()
    assert desc.digest == digest_of(data)
    assert read_all(c, r, desc.digest) == data
    statuses = [(m, s) for m, s, _ in rec.calls]
    assert ("GET", 204) in statuses  # asked the registry for the session's Range
    assert rec.patch_ranges() == [
        f"0-{MIB - 1}",
        f"{MIB}-{2 * MIB - 1}",
        f"{2 * MIB}-{3 * MIB - 1}",
        f"{3 * MIB}-{len(data) - 1}",
    ]


class CuttingProxy:
    """A loopback TCP proxy that cuts every connection once ``budget`` client bytes have passed."""

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.budget: int | None = None
        self.cuts = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, budget: int) -> None:
        with self.lock:
            self.budget = budget

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(65536):
                cut = False
                if counted:
                    with self.lock:
                        if self.budget is not None:
                            if len(data) >= self.budget:
                                data, cut, self.budget = data[: self.budget], True, None
                                self.cuts += 1
                            else:
                                self.budget -= len(data)
                dst.sendall(data)
                if cut:
                    break
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("cut_segment", [0, 1], ids=["first-segment", "later-segment"])
def test_connection_cut_mid_patch(registry, cut_segment):
    """distribution drops a session whose stored size differs from its signed offset (a cut mid-PATCH).

    In the first segment every byte is still held, so the client starts a new session and succeeds;
    later, the earlier segments are gone and the client says so (transient UploadInterrupted).
    """
    proxy = CuttingProxy(registry.port)
    try:
        c = RegistryClient(f"127.0.0.1:{proxy.port}", insecure=True, segment_size=MIB, retry=FAST)
        data = os.urandom(2 * MIB + 10)

        def source():
            for i in range(0, len(data), 128 * 1024):
                if i == cut_segment * MIB:
                    proxy.arm(300_000)
                yield data[i : i + 128 * 1024]

        r = repo()
        if cut_segment == 0:
            desc = c.push_blob(r, source(), size=len(data))
            assert proxy.cuts == 1
            assert read_all(c, r, desc.digest) == data
        else:
            with pytest.raises(UploadInterrupted):
                c.push_blob(r, source(), size=len(data))
            assert proxy.cuts == 1
            assert c.blob_exists(r, digest_of(data)) is None
    finally:
        proxy.close()


# --------------------------------------------------------------------- TLS + basic auth


def test_tls_basic_auth_round_trip(tls_registry):
    c = RegistryClient(
        tls_registry.host,
        username="alice",
        password="wonderland",
        ca_file=tls_registry.tls_cert_ca,
        segment_size=MIB,
        retry=FAST,
    )
    data = os.urandom(MIB + 3)
    r = repo()
    desc = c.push_blob(r, chunked(data), digest=digest_of(data), size=len(data))
    assert read_all(c, r, desc.digest) == data


def test_tls_wrong_password(tls_registry):
    c = RegistryClient(
        tls_registry.host, username="alice", password="nope", ca_file=tls_registry.tls_cert_ca, retry=FAST
    )
    with pytest.raises(AuthError, match="credentials"):
        c.push_bytes(repo(), b"x", "application/octet-stream")
    anonymous = RegistryClient(tls_registry.host, ca_file=tls_registry.tls_cert_ca, retry=FAST)
    with pytest.raises(AuthError):
        anonymous.list_tags(repo())


def test_tls_untrusted_ca(tls_registry, tmp_path):
    from devstack.tls import make_ca_and_cert

    other = make_ca_and_cert(tmp_path / "other")
    for ca in (None, other.ca_cert):
        c = RegistryClient(tls_registry.host, username="alice", password="wonderland", ca_file=ca, retry=FAST)
        with pytest.raises(TLSError, match="CA file"):
            c.blob_exists("a", digest_of(b""))
    with pytest.raises(TLSError, match="does not exist"):
        RegistryClient(tls_registry.host, ca_file=tmp_path / "missing.pem")


def test_docker_config_credentials(tls_registry, tmp_path: Path):
    import base64

    auth = tmp_path / "config.json"
    auth.write_text(
        json.dumps(
            {
                "auths": {
                    f"https://{tls_registry.host}": {"auth": base64.b64encode(b"alice:wonderland").decode()}
                }
            }
        )
    )
    c = RegistryClient.from_docker_config(
        tls_registry.host, auth, ca_file=tls_registry.tls_cert_ca, retry=FAST
    )
    r = repo()
    d = c.push_bytes(r, b"hello", "text/plain")
    assert c.blob_exists(r, d.digest) == 5
    auth.write_text(json.dumps({"auths": {tls_registry.host: {"username": "alice", "password": "bad"}}}))
    bad = RegistryClient.from_docker_config(
        tls_registry.host, auth, ca_file=tls_registry.tls_cert_ca, retry=FAST
    )
    with pytest.raises(AuthError):
        bad.blob_exists(r, d.digest)
