"""``python -m jobs node-cache``: the CSI node plugin, called over its Unix socket as the kubelet calls it.

Everything is real except the kubelet: the plugin runs as its own process,
a grpcio client makes the CSI calls, publishes make real read-only bind
mounts, and artifacts come from a real ``docker-registry`` in token mode whose
realm is the real hook app (``tests.support.dmcr``). A throttling TCP proxy
in front of the registry slows downloads where a test must act in the middle
of one. Every mount a test makes is undone by its fixture, also on failure.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from devstack.csi_node import mount_problem
from devstack.registry import free_port
from jobs import cli
from jobs.node_cache import csi_pb2 as pb
from jobs.node_cache import csi_pb2_grpc as pb_grpc
from jobs.node_cache import mounts
from lib import credentials
from tests.support.dmcr import DmcrServer, dmcr_fixture  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
DRIVER = "models.ai.deckhouse.io"
MiB = 1 << 20


# ---------------------------------------------------------------- harness (also used by bench/)


def unmount_under(root: Path) -> None:
    """Unmount every mount point below ``root``, deepest first (test clean-up)."""
    base = os.path.realpath(root)
    for point in sorted(mounts.mount_points(), key=len, reverse=True):
        if point.startswith(base + "/"):
            mounts.unmount(Path(point))


class Plugin:
    """The plugin process on a short socket path, with a channel and stubs for the CSI services."""

    def __init__(self, cache_dir: Path, *extra: str, node_id: str = "node-1") -> None:
        self.cache_dir, self.extra, self.node_id = cache_dir, extra, node_id
        self.sock_dir = Path(tempfile.mkdtemp(prefix="csi", dir="/tmp"))  # sun_path has 108 bytes
        self.sock = self.sock_dir / "csi.sock"
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None
        self.log = self.sock_dir / "plugin.log"

    def start(self) -> Plugin:
        cmd = [sys.executable, "-m", "jobs", "node-cache", "--csi-endpoint", f"unix://{self.sock}",
               "--node-id", self.node_id, "--cache-dir", str(self.cache_dir), "--insecure-registry",
               "--metrics-listen", f"127.0.0.1:{self.metrics_port}", *self.extra]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")
        deadline = time.monotonic() + 30
        while True:
            try:
                self.identity.Probe(pb.ProbeRequest(), timeout=2)
                break
            except grpc.RpcError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"plugin did not start:\n{self.log.read_text()}") from None
                time.sleep(0.05)
        return self

    @property
    def identity(self) -> pb_grpc.IdentityStub:
        return pb_grpc.IdentityStub(self.channel)

    @property
    def node(self) -> pb_grpc.NodeStub:
        return pb_grpc.NodeStub(self.channel)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None

    def restart(self) -> Plugin:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def metrics(self) -> dict[str, float]:
        """Sample name (with labels) → value, from ``--metrics-listen``."""
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
        return out

    def publish(self, target: Path, artifact: str, secrets: dict[str, str] | None = None,
                volume_id: str = "", readonly: bool = True, timeout: float = 120, **context: str) -> Any:
        return self.node.NodePublishVolume(
            publish_request(target, artifact, secrets, volume_id=volume_id, readonly=readonly, **context),
            timeout=timeout,
        )

    def unpublish(self, target: Path, volume_id: str = "vol") -> Any:
        return self.node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target)), timeout=30)


def publish_request(target: Path, artifact: str, secrets: dict[str, str] | None = None, *,
                    volume_id: str = "", readonly: bool = True, **context: str) -> pb.NodePublishVolumeRequest:
    """What the kubelet sends for an inline csi volume (podInfoOnMount: true)."""
    cap = pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(),
        access_mode=pb.VolumeCapability.AccessMode(mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER),
    )
    ctx = {"artifact": artifact, "csi.storage.k8s.io/ephemeral": "true",
           "csi.storage.k8s.io/pod.namespace": "ns", "csi.storage.k8s.io/pod.name": "pod",
           "csi.storage.k8s.io/pod.uid": "uid", "csi.storage.k8s.io/serviceAccount.name": "default"}
    ctx.update({k.replace("__", "/"): v for k, v in context.items()})
    return pb.NodePublishVolumeRequest(
        volume_id=volume_id or "csi-" + hashlib.sha256(str(target).encode()).hexdigest()[:16],
        target_path=str(target), volume_capability=cap, readonly=readonly,
        secrets=secrets or {}, volume_context={k: v for k, v in ctx.items() if v is not None},
    )


class ThrottledProxy:
    """A TCP forwarder to the registry that paces its answers (bytes/s) and counts them."""

    def __init__(self, upstream_port: int, rate: float) -> None:
        self.upstream, self.rate = upstream_port, rate
        self.sent = 0
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, paced: bool) -> None:
        chunk = 64 << 10
        try:
            while data := src.recv(chunk):
                dst.sendall(data)
                if paced:
                    with self._lock:
                        self.sent += len(data)
                    if self.rate:
                        time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()


# ---------------------------------------------------------------- fixtures

MOUNT_PROBLEM = mount_problem()
pytestmark = pytest.mark.skipif(bool(MOUNT_PROBLEM), reason=MOUNT_PROBLEM or "")


@pytest.fixture
def plugins(tmp_path: Path) -> Iterator[list[Plugin]]:
    """Plugins started by a test; all killed and every mount under tmp_path undone afterwards."""
    started: list[Plugin] = []
    yield started
    for p in started:
        p.cleanup()
    unmount_under(tmp_path)


@pytest.fixture
def plugin(tmp_path: Path, plugins: list[Plugin]) -> Plugin:
    p = Plugin(tmp_path / "cache").start()
    plugins.append(p)
    return p


def pod_dir(tmp_path: Path, name: str) -> Path:
    """The kubelet's ``.../volumes/kubernetes.io~csi/<vol>`` folder; the target ``mount`` is ours to make."""
    parent = tmp_path / "pods" / name / "volumes" / "kubernetes.io~csi" / "model"
    parent.mkdir(parents=True, exist_ok=True)
    return parent / "mount"


class Model:
    """An artifact in DMCR with the pull Secret a workload of its namespace gets."""

    def __init__(self, dmcr: DmcrServer, repo: str, data: bytes, host: str | None = None) -> None:
        self.repo, self.data = repo, data
        self.digest, self.layer = dmcr.push_artifact(repo, (), data=data)
        self.host = host or dmcr.host
        self.uri = f"{self.host}/{repo}@{self.digest}"
        user, pw = dmcr.pull_credential([repo])
        self.secrets = {".dockerconfigjson": credentials.dockerconfigjson(self.host, user, pw)}

    def via(self, host: str) -> Model:
        """The same artifact and credential addressed through another host:port (a proxy)."""
        auths = json.loads(self.secrets[".dockerconfigjson"])["auths"]
        entry = next(iter(auths.values()))
        other = copy.copy(self)
        other.host, other.uri = host, f"{host}/{self.repo}@{self.digest}"
        other.secrets = {".dockerconfigjson": credentials.dockerconfigjson(host, entry["username"],
                                                                            entry["password"])}
        return other


def unique(request: pytest.FixtureRequest, suffix: str = "") -> str:
    h = hashlib.sha256((request.node.nodeid + suffix).encode()).hexdigest()[:10]
    return f"ai-models/catalog/namespaced/ns-{h}/model{suffix}/uid"


def assert_mounted(target: Path, model: Model) -> None:
    assert mounts.is_mount_point(target)
    assert (target / "model.gguf").read_bytes() == model.data
    assert (target / ".ai-models-digest").read_text().strip() == model.digest
    with pytest.raises(OSError) as e:
        (target / "new").write_text("x")
    assert e.value.errno == errno.EROFS


def code_of(call, *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call(*args, **kwargs)
    return e.value.code(), e.value.details()


def leftovers(cache: Path) -> list[str]:
    """Anything under the cache that is not a complete entry or bookkeeping."""
    out = [str(p.relative_to(cache)) for p in (cache / ".staging").iterdir()]
    out += [str(p.relative_to(cache)) for p in (cache / ".trash").iterdir()]
    out += [str(p.relative_to(cache)) for p in cache.rglob("*.partial")]
    return out


# ---------------------------------------------------------------- Identity and node info


def test_identity(plugin):
    info = plugin.identity.GetPluginInfo(pb.GetPluginInfoRequest())
    assert info.name == DRIVER and info.vendor_version
    assert plugin.identity.Probe(pb.ProbeRequest()).ready.value is True
    caps = plugin.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest())
    assert not [c for c in caps.capabilities if c.service.type == pb.PluginCapability.Service.CONTROLLER_SERVICE]


def test_node_capabilities_and_info(plugin):
    caps = plugin.node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest()).capabilities
    types = {c.rpc.type for c in caps}
    assert pb.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME not in types  # publish without staging
    assert pb.NodeServiceCapability.RPC.UNKNOWN not in types
    info = plugin.node.NodeGetInfo(pb.NodeGetInfoRequest())
    assert info.node_id == "node-1"


def test_generated_code_matches_the_proto():
    from jobs.node_cache import codegen

    assert codegen.stale() == [], "run .venv/bin/python -m jobs.node_cache.codegen"


def test_proto_speaks_the_csi_v1_wire_names():
    assert pb.DESCRIPTOR.package == "csi.v1"
    svc = pb.DESCRIPTOR.services_by_name
    assert set(svc["Node"].methods_by_name) == {"NodePublishVolume", "NodeUnpublishVolume",
                                                 "NodeGetCapabilities", "NodeGetInfo"}
    fields = {f.name: f.number for f in pb.NodePublishVolumeRequest.DESCRIPTOR.fields}
    assert fields == {"volume_id": 1, "publish_context": 2, "staging_target_path": 3, "target_path": 4,
                      "volume_capability": 5, "readonly": 6, "secrets": 7, "volume_context": 8}


# ---------------------------------------------------------------- publish / unpublish


def test_publish_mounts_read_only_and_unpublish_is_idempotent(plugin, dmcr, request, tmp_path):
    model = Model(dmcr, unique(request), os.urandom(3 * MiB + 17))
    target = pod_dir(tmp_path, "a")
    plugin.publish(target, model.uri, model.secrets)
    assert_mounted(target, model)
    entry = tmp_path / "cache" / model.digest
    assert entry.is_dir() and (entry / "model.gguf").stat().st_mode & 0o777 == 0o644

    plugin.publish(target, model.uri, model.secrets)  # the same call again: OK, still one mount
    assert sum(1 for p in mounts.mount_points() if p == str(target)) == 1

    plugin.unpublish(target)
    assert not target.exists() and not mounts.is_mount_point(target)
    plugin.unpublish(target)  # again: OK
    plugin.unpublish(tmp_path / "never" / "published")  # never published: OK
    assert entry.is_dir(), "the cache keeps the entry for the next pod"
    m = plugin.metrics()
    assert m["ai_models_node_cache_misses_total"] == 1
    assert m["ai_models_node_cache_fetched_bytes_total"] == len(model.data)  # the weights (the config is in the manifest's digest, not a file)
    assert m["ai_models_node_cache_mounts"] == 0


def test_invalid_requests_are_refused_with_invalid_argument(plugin, dmcr, request, tmp_path):
    model = Model(dmcr, unique(request), os.urandom(1024))
    target = pod_dir(tmp_path, "a")
    good = publish_request(target, model.uri, model.secrets)
    bad = {
        "no volume id": pb.NodePublishVolumeRequest(**{**_fields(good), "volume_id": ""}),
        "no target": pb.NodePublishVolumeRequest(**{**_fields(good), "target_path": ""}),
        "relative target": pb.NodePublishVolumeRequest(**{**_fields(good), "target_path": "rel/mount"}),
        "no capability": pb.NodePublishVolumeRequest(**{k: v for k, v in _fields(good).items()
                                                        if k != "volume_capability"}),
        "block": pb.NodePublishVolumeRequest(**{**_fields(good), "volume_capability": pb.VolumeCapability(
            block=pb.VolumeCapability.BlockVolume())}),
        "writable": publish_request(target, model.uri, model.secrets, readonly=False),
        "no artifact": publish_request(target, "", model.secrets),
        "tag": publish_request(target, f"{dmcr.host}/{model.repo}:v1", model.secrets),
        "garbage": publish_request(target, "not a reference", model.secrets),
        "persistent": publish_request(target, model.uri, model.secrets, **{"csi.storage.k8s.io__ephemeral": "false"}),
        "bad secret": publish_request(target, model.uri, {".dockerconfigjson": "{not json"}),
    }
    for why, req in bad.items():
        code, msg = code_of(plugin.node.NodePublishVolume, req)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (why, code, msg)
        assert not target.exists(), why
    for req in (pb.NodeUnpublishVolumeRequest(target_path=str(target)),
                pb.NodeUnpublishVolumeRequest(volume_id="v")):
        assert code_of(plugin.node.NodeUnpublishVolume, req)[0] == grpc.StatusCode.INVALID_ARGUMENT


def _fields(req: pb.NodePublishVolumeRequest) -> dict[str, Any]:
    return {f.name: getattr(req, f.name) for f, _ in req.ListFields()} | {
        "secrets": dict(req.secrets), "volume_context": dict(req.volume_context)}


def test_a_target_holding_another_digest_is_already_exists(plugin, dmcr, request, tmp_path):
    a = Model(dmcr, unique(request, "a"), os.urandom(1024))
    b = Model(dmcr, unique(request, "b"), os.urandom(1024))
    target = pod_dir(tmp_path, "a")
    plugin.publish(target, a.uri, a.secrets)
    code, msg = code_of(plugin.publish, target, b.uri, b.secrets)
    assert code == grpc.StatusCode.ALREADY_EXISTS and a.digest in msg
    assert_mounted(target, a)


# ---------------------------------------------------------------- authorization


def test_a_tenant_cannot_mount_another_namespaces_digest_through_a_warm_cache(plugin, dmcr, request, tmp_path):
    a = Model(dmcr, unique(request, "a"), os.urandom(2 * MiB))
    b = Model(dmcr, unique(request, "b"), os.urandom(1024))  # tenant B's own model and pull Secret
    plugin.publish(pod_dir(tmp_path, "a1"), a.uri, a.secrets)  # namespace A warms the cache

    target = pod_dir(tmp_path, "b1")
    code, msg = code_of(plugin.publish, target, a.uri, b.secrets)  # B's credential, A's artifact
    assert code == grpc.StatusCode.PERMISSION_DENIED, msg
    assert "pull Secret" in msg and a.repo in msg
    assert not target.exists() and not mounts.is_mount_point(target)

    code, msg = code_of(plugin.publish, target, a.uri, {})  # no credential at all
    assert code == grpc.StatusCode.PERMISSION_DENIED and "anonymous" in msg

    # B's own repository with A's digest: the registry has no such manifest there.
    code, msg = code_of(plugin.publish, target, f"{dmcr.host}/{b.repo}@{a.digest}", b.secrets)
    assert code == grpc.StatusCode.NOT_FOUND, msg
    assert not target.exists()

    # A forged credential naming A's repository is refused by the token service.
    forged = {".dockerconfigjson": credentials.dockerconfigjson(dmcr.host, f"pull;{a.repo}", "k1.forged")}
    assert code_of(plugin.publish, target, a.uri, forged)[0] == grpc.StatusCode.PERMISSION_DENIED
    m = plugin.metrics()
    assert m["ai_models_node_cache_hits_total"] == 0 and m["ai_models_node_cache_misses_total"] == 1
    assert m['ai_models_node_cache_publish_errors_total{code=PERMISSION_DENIED}'] == 3

    plugin.publish(pod_dir(tmp_path, "a2"), a.uri, a.secrets)  # A's next pod: a hit, still checked
    m = plugin.metrics()
    assert m["ai_models_node_cache_hits_total"] == 1
    assert m["ai_models_node_cache_served_from_cache_bytes_total"] == 2 * MiB


def test_only_the_configured_registry_is_served(tmp_path, plugins, dmcr, request):
    p = Plugin(tmp_path / "cache", "--registry", "dmcr.example:5000").start()
    plugins.append(p)
    model = Model(dmcr, unique(request), os.urandom(1024))
    code, msg = code_of(p.publish, pod_dir(tmp_path, "a"), model.uri, model.secrets)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "dmcr.example:5000" in msg


# ---------------------------------------------------------------- failures leave nothing


def blob_file(dmcr: DmcrServer, digest: str) -> Path:
    assert dmcr.registry is not None
    hexd = digest.split(":", 1)[1]
    return dmcr.registry.workdir / "storage/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def test_a_corrupted_blob_is_data_loss_and_nothing_is_cached(plugin, dmcr, request, tmp_path):
    model = Model(dmcr, unique(request), os.urandom(2 * MiB))
    path = blob_file(dmcr, model.layer)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    target = pod_dir(tmp_path, "a")
    code, msg = code_of(plugin.publish, target, model.uri, model.secrets)
    assert code == grpc.StatusCode.DATA_LOSS, msg
    assert model.layer in msg and "republish" in msg
    assert not target.exists()
    cache = tmp_path / "cache"
    assert not (cache / model.digest).exists() and leftovers(cache) == []


def test_a_restart_mid_download_discards_the_partial_entry_and_reuses_complete_ones(
        tmp_path, plugins, dmcr, request):
    done = Model(dmcr, unique(request, "done"), os.urandom(MiB))
    slow = Model(dmcr, unique(request, "slow"), os.urandom(24 * MiB))
    assert dmcr.registry is not None
    proxy = ThrottledProxy(dmcr.registry.port, rate=6 * MiB)
    try:
        cache = tmp_path / "cache"
        p = Plugin(cache).start()
        plugins.append(p)
        kept = pod_dir(tmp_path, "kept")
        p.publish(kept, done.uri, done.secrets)

        slow_p = slow.via(proxy.host)
        with futures.ThreadPoolExecutor(1) as pool:
            call = pool.submit(p.publish, pod_dir(tmp_path, "slow"), slow_p.uri, slow_p.secrets)
            deadline = time.monotonic() + 30
            while not any(f.stat().st_size > MiB for f in (cache / ".staging").rglob("*.partial")):
                assert time.monotonic() < deadline, "the download never started"
                time.sleep(0.05)
            p.stop(signal.SIGKILL)  # the node plugin dies in the middle of the download
            with pytest.raises(grpc.RpcError):
                call.result(30)
        assert list((cache / ".staging").iterdir())  # the partial download is on disk …
        p.start()
        assert leftovers(cache) == []  # … and discarded at start-up
        assert not (cache / slow.digest).exists()
        assert_mounted(kept, done)  # the mount made before the restart is untouched

        p.publish(pod_dir(tmp_path, "again"), done.uri, done.secrets)  # complete entry reused
        m = p.metrics()
        assert m["ai_models_node_cache_hits_total"] == 1 and m["ai_models_node_cache_fetched_bytes_total"] == 0

        target = pod_dir(tmp_path, "slow")
        p.publish(target, slow.uri, slow.secrets)  # the next attempt (the kubelet retries) succeeds
        assert_mounted(target, slow)
    finally:
        proxy.close()


def test_concurrent_first_mounts_share_one_download(tmp_path, plugins, dmcr, request):
    model = Model(dmcr, unique(request), os.urandom(16 * MiB))
    assert dmcr.registry is not None
    proxy = ThrottledProxy(dmcr.registry.port, rate=16 * MiB)
    try:
        via = model.via(proxy.host)
        p = Plugin(tmp_path / "cache").start()
        plugins.append(p)
        targets = [pod_dir(tmp_path, f"pod{i}") for i in range(4)]
        with futures.ThreadPoolExecutor(4) as pool:
            for f in [pool.submit(p.publish, t, via.uri, via.secrets) for t in targets]:
                f.result(120)
        for t in targets:
            assert_mounted(t, model)
        m = p.metrics()
        assert m["ai_models_node_cache_misses_total"] == 1 and m["ai_models_node_cache_hits_total"] == 3
        assert m["ai_models_node_cache_fetched_bytes_total"] == len(model.data)
        assert len(model.data) <= proxy.sent < 1.1 * len(model.data), "one download through the proxy"
    finally:
        proxy.close()


# ---------------------------------------------------------------- budget


def test_eviction_under_pressure_removes_lru_unmounted_entries_only(tmp_path, plugins, dmcr, request):
    size = MiB
    a, b, c, d = (Model(dmcr, unique(request, x), os.urandom(size)) for x in "abcd")
    cache = tmp_path / "cache"
    p = Plugin(cache, "--max-cache-bytes", str(int(2.5 * size))).start()
    plugins.append(p)
    ta, tb = pod_dir(tmp_path, "a"), pod_dir(tmp_path, "b")
    p.publish(ta, a.uri, a.secrets)  # oldest, but stays mounted
    p.publish(tb, b.uri, b.secrets)
    p.unpublish(tb)
    p.publish(pod_dir(tmp_path, "c"), c.uri, c.secrets)  # needs room: b goes, a is in use
    assert (cache / a.digest).is_dir() and not (cache / b.digest).exists() and (cache / c.digest).is_dir()
    assert_mounted(ta, a)
    m = p.metrics()
    assert m["ai_models_node_cache_evictions_total"] == 1
    assert m["ai_models_node_cache_limit_bytes"] == int(2.5 * size)
    assert m["ai_models_node_cache_used_bytes"] <= 2.5 * size

    # a and c are both mounted: d cannot get room, and nothing is evicted for it.
    code, msg = code_of(p.publish, pod_dir(tmp_path, "d"), d.uri, d.secrets)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "mounted by running pods" in msg
    assert (cache / a.digest).is_dir() and (cache / c.digest).is_dir() and leftovers(cache) == []

    p.unpublish(ta)  # a is free now: it is the one evicted for d
    p.restart()  # in-use records and LRU order survive a restart
    p.publish(pod_dir(tmp_path, "d"), d.uri, d.secrets)
    assert not (cache / a.digest).exists() and (cache / c.digest).is_dir() and (cache / d.digest).is_dir()


def test_least_recently_used_goes_first_also_after_a_restart(tmp_path, plugins, dmcr, request):
    a, b, c = (Model(dmcr, unique(request, x), os.urandom(MiB)) for x in "abc")
    cache = tmp_path / "cache"
    p = Plugin(cache, "--max-cache-bytes", str(int(2.5 * MiB))).start()
    plugins.append(p)
    for m in (b, a):  # b first; then a
        p.publish(pod_dir(tmp_path, m.repo[-14:]), m.uri, m.secrets)
        p.unpublish(pod_dir(tmp_path, m.repo[-14:]))
    p.publish(pod_dir(tmp_path, "b-again"), b.uri, b.secrets)  # b is used again: a is now the older one
    p.unpublish(pod_dir(tmp_path, "b-again"))
    p.restart()
    p.publish(pod_dir(tmp_path, "c"), c.uri, c.secrets)
    assert not (cache / a.digest).exists() and (cache / b.digest).is_dir() and (cache / c.digest).is_dir()
    assert p.metrics()["ai_models_node_cache_evictions_total"] == 1


def test_a_model_larger_than_the_whole_budget_is_resource_exhausted(tmp_path, plugins, dmcr, request):
    model = Model(dmcr, unique(request), os.urandom(2 * MiB))
    cache = tmp_path / "cache"
    p = Plugin(cache, "--max-cache-bytes", str(MiB)).start()
    plugins.append(p)
    target = pod_dir(tmp_path, "a")
    code, msg = code_of(p.publish, target, model.uri, model.secrets)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "whole model cache" in msg
    assert not target.exists() and not (cache / model.digest).exists() and leftovers(cache) == []


def test_a_full_disk_is_resource_exhausted_and_leaves_nothing(tmp_path, plugins, dmcr, request):
    cache = tmp_path / "tmpfs"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(cache)], check=True)
    try:
        model = Model(dmcr, unique(request), os.urandom(3 * MiB))
        p = Plugin(cache / "c").start()  # no budget configured: the disk itself runs out
        plugins.append(p)
        code, msg = code_of(p.publish, pod_dir(tmp_path, "a"), model.uri, model.secrets)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "disk is full" in msg, msg
        assert leftovers(cache / "c") == [] and not (cache / "c" / model.digest).exists()
    finally:
        for pl in plugins:
            pl.cleanup()
        mounts.unmount(cache)


# ---------------------------------------------------------------- install manifests

NODE_CACHE = ROOT / "deploy" / "node-cache"


def _render() -> list[dict]:
    from tests.test_deploy import render

    return [o for _, o in render(NODE_CACHE)]


def test_install_manifests_validate_and_wire_together():
    objs = _render()
    for o in objs:
        kubernetes_validate.validate(o, "1.33.0", strict=True)
    by_kind = {o["kind"]: o for o in objs}
    drv = by_kind["CSIDriver"]
    assert drv["metadata"]["name"] == DRIVER
    assert drv["spec"]["volumeLifecycleModes"] == ["Ephemeral"]
    assert drv["spec"]["podInfoOnMount"] is True and drv["spec"]["attachRequired"] is False
    assert not {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"} & set(by_kind), "no RBAC needed"

    ds = by_kind["DaemonSet"]
    ns = ds["metadata"]["namespace"]
    assert by_kind["Namespace"]["metadata"]["name"] == ns
    assert by_kind["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    spec = ds["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == by_kind["ServiceAccount"]["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is False
    containers = {c["name"]: c for c in spec["containers"]}
    plugin = containers["plugin"]
    config = by_kind["ConfigMap"]["data"]
    values = {"NODE_NAME": "node-1", **config}
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in plugin["args"]]
    parsed = cli.parser().parse_args(args)  # the command line the DaemonSet runs is one the worker takes
    assert parsed.module == "jobs.node_cache.server" and parsed.max_cache_bytes == int(config[
        "AI_MODELS_NODE_CACHE_MAX_BYTES"]) > 0
    assert parsed.registry == config["AI_MODELS_REGISTRY"] and parsed.csi_endpoint == "unix:///csi/csi.sock"
    assert parsed.cache_dir == next(v["hostPath"]["path"] for v in spec["volumes"] if v["name"] == "cache-dir")
    assert plugin["securityContext"]["privileged"] is True
    assert any(m.get("mountPropagation") == "Bidirectional" and m["mountPath"] == "/var/lib/kubelet/pods"
               for m in plugin["volumeMounts"])
    assert "livenessProbe" in plugin and "liveness-probe" in containers
    registrar = containers["node-driver-registrar"]
    assert any(a.startswith("--kubelet-registration-path=/var/lib/kubelet/plugins/models.ai.deckhouse.io/")
               for a in registrar["args"])
    for c in spec["containers"]:
        image = c["image"]
        assert "@sha256:" in image or image.rsplit(":", 1)[1][0].isdigit() or image.rsplit(":", 1)[1][0] == "v"
    env = {e["name"]: e["valueFrom"] for e in plugin["env"]}
    for key in config:
        assert env[key]["configMapKeyRef"] == {"name": by_kind["ConfigMap"]["metadata"]["name"], "key": key}
