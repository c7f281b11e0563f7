"""The kubelet's part for inline CSI volumes: the node plugin's NodePublish/NodeUnpublish calls.

``CsiNode`` runs the real plugin (``python -m jobs node-cache``) on a Unix
socket and, for a pod whose spec names ``csi`` volumes of its driver, makes
the calls the kubelet makes for inline ephemeral volumes
(``pkg/volume/csi/csi_mounter.go``): volume handle ``csi-<sha256(pod uid +
volume name)>``, the volume's ``volumeAttributes`` plus the pod information
``podInfoOnMount`` adds, ``readonly`` from the volume, and the keys of the
Secret named by ``nodePublishSecretRef`` (read from the pod's namespace) as
``secrets``. The target is the folder the kubelet stand-in maps that volume to
(``<pod dir>/volumes/<name>``), so a container's view of its mount is the
plugin's real read-only bind mount of the node cache.

Publishing needs mount(2) (root); ``mount_problem()`` says why not when it
cannot. ``stop()`` unpublishes every target it published, then stops the
plugin.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from devstack.store import Obj, Store
from jobs.node_cache import csi_pb2 as pb
from jobs.node_cache import csi_pb2_grpc as pb_grpc
from jobs.node_cache import mounts

ROOT = Path(__file__).resolve().parents[1]
DRIVER = "models.ai.deckhouse.io"


def mount_problem() -> str:
    """Empty when this process may make read-only bind mounts; otherwise why not."""
    if os.geteuid() != 0:
        return "bind mounts need root"
    a, b = tempfile.mkdtemp(), tempfile.mkdtemp()
    try:
        mounts.bind_readonly(Path(a), Path(b))
        mounts.unmount(Path(b))
        return ""
    except OSError as e:
        return f"mount(2) is not permitted here: {e}"
    finally:
        os.rmdir(a)
        os.rmdir(b)


def csi_volumes(pod: Obj) -> list[Obj]:
    """The pod's inline volumes served by this driver."""
    return [v for v in pod["spec"].get("volumes") or [] if (v.get("csi") or {}).get("driver") == DRIVER]


class PublishError(RuntimeError):
    """NodePublishVolume failed: the kubelet would leave the pod in ContainerCreating with this event."""


@dataclass
class CsiNode:
    cache_dir: Path
    node_id: str = "ai-models-local"
    extra_args: tuple[str, ...] = ("--insecure-registry",)
    proc: subprocess.Popen | None = None
    channel: grpc.Channel | None = None
    published: list[tuple[Path, str]] = field(default_factory=list)  # (target, volume id)
    _sock_dir: Path | None = None

    def start(self) -> CsiNode:
        self._sock_dir = Path(tempfile.mkdtemp(prefix="csi", dir="/tmp"))  # sun_path holds 108 bytes
        sock = self._sock_dir / "csi.sock"
        log = open(self._sock_dir / "plugin.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobs", "node-cache", "--csi-endpoint", f"unix://{sock}",
             "--node-id", self.node_id, "--cache-dir", str(self.cache_dir), *self.extra_args],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.channel = grpc.insecure_channel(f"unix://{sock}")
        deadline = time.monotonic() + 30
        while True:
            try:
                pb_grpc.IdentityStub(self.channel).Probe(pb.ProbeRequest(), timeout=2)
                return self
            except grpc.RpcError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"node plugin did not start:\n{self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        path = (self._sock_dir or Path("/nonexistent")) / "plugin.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def publish_pod(self, pod: Obj, volumes_dir: Path, store: Store) -> dict[str, Path]:
        """NodePublishVolume for each of the pod's csi volumes; volume name → target folder.

        ``PublishError`` names the volume and the plugin's gRPC code and message.
        """
        assert self.channel is not None, "start() first"
        node = pb_grpc.NodeStub(self.channel)
        md = pod["metadata"]
        uid = md.get("uid") or md["name"]
        out: dict[str, Path] = {}
        for v in csi_volumes(pod):
            csi = v["csi"]
            target = volumes_dir / v["name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            request = pb.NodePublishVolumeRequest(
                volume_id="csi-" + hashlib.sha256((uid + v["name"]).encode()).hexdigest(),
                target_path=str(target),
                volume_capability=pb.VolumeCapability(
                    mount=pb.VolumeCapability.MountVolume(),
                    access_mode=pb.VolumeCapability.AccessMode(
                        mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER)),
                readonly=bool(csi.get("readOnly")),
                secrets=self._secrets(csi, md["namespace"], store),
                volume_context={
                    **(csi.get("volumeAttributes") or {}),
                    "csi.storage.k8s.io/ephemeral": "true",
                    "csi.storage.k8s.io/pod.name": md["name"],
                    "csi.storage.k8s.io/pod.namespace": md["namespace"],
                    "csi.storage.k8s.io/pod.uid": uid,
                    "csi.storage.k8s.io/serviceAccount.name": pod["spec"].get("serviceAccountName") or "default",
                },
            )
            try:
                node.NodePublishVolume(request, timeout=120)
            except grpc.RpcError as e:
                raise PublishError(f"volume {v['name']}: {e.code().name}: {e.details()}") from None
            self.published.append((target, request.volume_id))
            out[v["name"]] = target
        return out

    @staticmethod
    def _secrets(csi: Obj, namespace: str, store: Store) -> dict[str, str]:
        ref = csi.get("nodePublishSecretRef")
        if not ref:
            return {}
        secret: Any = store.get("Secret", ref["name"], namespace)
        if secret is None:
            raise PublishError(f"Secret {namespace}/{ref['name']} not found")
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    def stop(self) -> None:
        if self.channel is not None:
            node = pb_grpc.NodeStub(self.channel)
            for target, volume_id in reversed(self.published):
                try:
                    node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(
                        volume_id=volume_id, target_path=str(target)), timeout=30)
                except grpc.RpcError:
                    if mounts.is_mount_point(target):
                        mounts.unmount(target)
            self.published.clear()
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None
