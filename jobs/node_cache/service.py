"""The CSI Identity and Node services: ephemeral inline volumes of model artifacts.

A publish mounts ``<cache-dir>/<digest>/`` read-only at the target. Before
any mount, hit or miss, the pod's own pull credential (the Secret the kubelet
hands over in ``secrets``) must be able to read the artifact's manifest from
the registry: the cache is shared by every namespace on the node, so having
the bytes on disk grants nothing by itself.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import wrappers_pb2

from jobs.node_cache import csi_pb2 as pb
from jobs.node_cache import csi_pb2_grpc as pb_grpc
from jobs.node_cache import mounts
from jobs.node_cache.cache import CacheFull, NodeCache
from jobs.node_cache.metrics import Metrics
from lib.oci.auth import credentials_from_docker_config
from lib.oci.client import RegistryClient
from lib.oci.errors import AuthError, DigestMismatch, NotFound, RegistryError, TLSError, Unreachable
from lib.oci.reference import InvalidReference, Reference
from lib.pull import CorruptBlob, Layers, MaterializeError, materialize, read_manifest
from lib.retry import RetryPolicy

DRIVER = "models.ai.deckhouse.io"
VERSION = "0.1.0"
ARTIFACT = "artifact"  # volumeAttributes key: REGISTRY/REPOSITORY@sha256:DIGEST
DOCKERCONFIG, CA = ".dockerconfigjson", "ca.crt"  # keys of the pull Secret (nodePublishSecretRef)
EPHEMERAL = "csi.storage.k8s.io/ephemeral"
POD_NAMESPACE, POD_NAME = "csi.storage.k8s.io/pod.namespace", "csi.storage.k8s.io/pod.name"
_LOCK_STRIPES = 64


class Failure(Exception):
    """A publish/unpublish refusal: the gRPC code and a message for ``kubectl describe pod``."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Options:
    registry_ca_file: str | None = None  # node-level trust of DMCR; else the Secret's ca.crt
    insecure: bool = False
    registry: str | None = None  # when set, the only registry artifacts may come from


def _log(msg: str) -> None:
    print(f"node-cache: {msg}", file=sys.stderr, flush=True)


class Identity(pb_grpc.IdentityServicer):
    def __init__(self, ready: Callable[[], bool]) -> None:
        self._ready = ready

    def GetPluginInfo(self, request: pb.GetPluginInfoRequest, context: grpc.ServicerContext
                      ) -> pb.GetPluginInfoResponse:
        return pb.GetPluginInfoResponse(name=DRIVER, vendor_version=VERSION)

    def GetPluginCapabilities(self, request: pb.GetPluginCapabilitiesRequest, context: grpc.ServicerContext
                              ) -> pb.GetPluginCapabilitiesResponse:
        return pb.GetPluginCapabilitiesResponse()  # a node plugin only: no controller service

    def Probe(self, request: pb.ProbeRequest, context: grpc.ServicerContext) -> pb.ProbeResponse:
        ready = self._ready()
        if not ready:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the cache directory is not writable")
        return pb.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))


class Node(pb_grpc.NodeServicer):
    def __init__(self, node_id: str, cache: NodeCache, metrics: Metrics, options: Options) -> None:
        self.node_id, self.cache, self.metrics, self.options = node_id, cache, metrics, options
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    # ------------------------------------------------------------------ RPCs

    def NodeGetInfo(self, request: pb.NodeGetInfoRequest, context: grpc.ServicerContext
                    ) -> pb.NodeGetInfoResponse:
        return pb.NodeGetInfoResponse(node_id=self.node_id)

    def NodeGetCapabilities(self, request: pb.NodeGetCapabilitiesRequest, context: grpc.ServicerContext
                            ) -> pb.NodeGetCapabilitiesResponse:
        return pb.NodeGetCapabilitiesResponse()  # no staging, no stats, no expansion

    def NodePublishVolume(self, request: pb.NodePublishVolumeRequest, context: grpc.ServicerContext
                          ) -> pb.NodePublishVolumeResponse:
        started = time.monotonic()
        try:
            result = self._publish(request)
        except Failure as f:
            self.metrics.errors.labels(f.code.name).inc()
            self.metrics.publish_seconds.labels("error").observe(time.monotonic() - started)
            _log(f"publish {request.target_path} ({_who(request)}): {f.code.name}: {f.message}")
            context.abort(f.code, f.message)
        self.metrics.publish_seconds.labels(result).observe(time.monotonic() - started)
        return pb.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request: pb.NodeUnpublishVolumeRequest, context: grpc.ServicerContext
                            ) -> pb.NodeUnpublishVolumeResponse:
        try:
            self._unpublish(request)
        except Failure as f:
            _log(f"unpublish {request.target_path}: {f.code.name}: {f.message}")
            context.abort(f.code, f.message)
        return pb.NodeUnpublishVolumeResponse()

    # ------------------------------------------------------------------ publish

    def _publish(self, req: pb.NodePublishVolumeRequest) -> str:
        target = _target(req.volume_id, req.target_path)
        if not req.HasField("volume_capability"):
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT, "volume_capability is required")
        if req.volume_capability.HasField("block"):
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{DRIVER} publishes a directory of model files, not a block device")
        if req.volume_context.get(EPHEMERAL) == "false":
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{DRIVER} serves only inline (ephemeral) csi volumes in a pod spec, "
                          "not PersistentVolumes")
        if not req.readonly:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          "set readOnly: true on the csi volume: model files are shared by the node's pods")
        ref = self._reference(req.volume_context.get(ARTIFACT, ""))
        digest = ref.digest or ""
        with self._target_lock(str(target)):
            current = self.cache.target_digest(str(target))
            if mounts.is_mount_point(target):
                if current is None:
                    raise Failure(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"{target} is already a mount point that this plugin did not make")
                if current != digest:
                    raise Failure(grpc.StatusCode.ALREADY_EXISTS,
                                  f"{target} already holds {current}, not {digest}")
                with self._client(ref.registry, req.secrets) as client:
                    self._authorize(client, ref)  # a repeated publish is checked like a new one
                return "repeat"
            if current is not None:
                self.cache.detach(str(target))  # its mount is gone (e.g. a node reboot)
            with self.cache.use(digest):
                with self._client(ref.registry, req.secrets) as client:
                    layers = self._authorize(client, ref)
                    entry = self.cache.lookup(digest)
                    if entry is not None:
                        self.metrics.hits.inc()
                        self.metrics.bytes_served.inc(sum(int(d["size"]) for _, d in layers))
                        result = "hit"
                    else:
                        self._download(client, ref, layers)
                        result = "miss"
                self._mount(digest, target)
        _log(f"published {digest} at {target} ({_who(req)}, {result})")
        return result

    def _reference(self, value: str) -> Reference:
        if not value:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          f"volumeAttributes.{ARTIFACT} is required: REGISTRY/REPOSITORY@sha256:DIGEST")
        try:
            ref = Reference.parse(value)
        except InvalidReference as e:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          f"volumeAttributes.{ARTIFACT} {value!r} is not "
                          f"REGISTRY/REPOSITORY@sha256:DIGEST: {e}") from None
        if not ref.digest or not ref.digest.startswith("sha256:"):
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          f"volumeAttributes.{ARTIFACT} {value!r} must be pinned by digest (…@sha256:…)")
        if self.options.registry and ref.registry != self.options.registry:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          f"volumeAttributes.{ARTIFACT} names registry {ref.registry}; this node cache "
                          f"serves only {self.options.registry}")
        return ref

    def _client(self, registry: str, secrets: Mapping[str, str]) -> RegistryClient:
        creds = None
        raw = secrets.get(DOCKERCONFIG)
        if raw:
            try:
                doc = json.loads(raw)
                creds = credentials_from_docker_config(doc if isinstance(doc, dict) else {}, registry)
            except (ValueError, AuthError) as e:
                raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                              f"the pull Secret's {DOCKERCONFIG} (nodePublishSecretRef) is not a Docker "
                              f"config JSON: {e}") from None
        ca = self.options.registry_ca_file or self._ca_file(secrets.get(CA))
        try:
            return RegistryClient(
                registry,
                username=creds.username if creds else None,
                password=creds.password if creds else None,
                ca_file=ca,
                insecure=self.options.insecure,
                retry=RetryPolicy(attempts=3, total=30.0),
            )
        except RegistryError as e:
            raise Failure(grpc.StatusCode.FAILED_PRECONDITION, str(e)) from None

    def _ca_file(self, pem: str | None) -> str | None:
        """The Secret's ``ca.crt`` as a file (content-addressed, written once)."""
        if not pem:
            return None
        folder = self.cache.root / ".ca"
        folder.mkdir(exist_ok=True)
        path = folder / (hashlib.sha256(pem.encode()).hexdigest() + ".pem")
        if not path.exists():
            tmp = path.with_name(path.name + f".{threading.get_ident()}")
            tmp.write_text(pem)
            os.replace(tmp, path)
        return str(path)

    def _authorize(self, client: RegistryClient, ref: Reference) -> Layers:
        """Read the manifest with the pod's credential: the check that runs on every mount."""
        try:
            return read_manifest(client, ref.repository, ref.digest or "")
        except (MaterializeError, RegistryError) as e:
            raise _failure(e, ref, client) from None

    def _download(self, client: RegistryClient, ref: Reference, layers: Layers) -> None:
        digest = ref.digest or ""
        size = sum(int(desc["size"]) for _, desc in layers)
        try:
            self.cache.reserve(digest, size)
        except CacheFull as e:
            raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)) from None
        staged = self.cache.staging_dir(digest)
        try:
            started = time.monotonic()
            summary = materialize(client, ref.repository, digest, staged, layers=layers,
                                  log=lambda m: _log(f"{digest}: {m}"))
            self.metrics.bytes_fetched.inc(summary.downloaded_bytes)
            self.cache.commit(digest, staged)
            self.metrics.misses.inc()
            _log(f"cached {digest}: {summary.files} files, {summary.downloaded_bytes} bytes in "
                 f"{time.monotonic() - started:.1f}s")
        except (MaterializeError, RegistryError, OSError) as e:
            self.cache.discard_staging(staged)
            raise _failure(e, ref, client) from None
        except BaseException:
            self.cache.discard_staging(staged)
            raise
        finally:
            self.cache.unreserve(size)

    def _mount(self, digest: str, target: Path) -> None:
        created = False
        try:
            try:
                target.mkdir()
                created = True
            except FileExistsError:
                if not target.is_dir():
                    raise Failure(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"{target} exists and is not a directory") from None
            mounts.bind_readonly(self.cache.path(digest), target)
        except OSError as e:
            if created:
                target.rmdir()
            code = grpc.StatusCode.NOT_FOUND if e.errno == errno.ENOENT else grpc.StatusCode.INTERNAL
            raise Failure(code, f"cannot mount {digest} at {target}: {e}") from None
        self.cache.attach(str(target), digest)

    # ------------------------------------------------------------------ unpublish

    def _unpublish(self, req: pb.NodeUnpublishVolumeRequest) -> None:
        target = _target(req.volume_id, req.target_path)
        with self._target_lock(str(target)):
            try:
                for _ in range(8):  # stacked mounts: undo every one of them
                    if not mounts.is_mount_point(target):
                        break
                    mounts.unmount(target)
                else:
                    raise Failure(grpc.StatusCode.INTERNAL, f"{target} stays mounted after 8 unmounts")
                if target.is_symlink() or target.is_file():
                    target.unlink()
                elif target.is_dir():
                    target.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise Failure(grpc.StatusCode.INTERNAL, f"cannot unpublish {target}: {e}") from None
            digest = self.cache.detach(str(target))
        if digest:
            _log(f"unpublished {digest} from {target}")

    def _target_lock(self, target: str) -> threading.Lock:
        return self._stripes[int(hashlib.sha256(target.encode()).hexdigest()[:8], 16) % _LOCK_STRIPES]


def _target(volume_id: str, target_path: str) -> Path:
    if not volume_id:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, "volume_id is required")
    if not target_path:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, "target_path is required")
    if not os.path.isabs(target_path):
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, f"target_path {target_path!r} must be absolute")
    return Path(os.path.normpath(target_path))


def _who(req: pb.NodePublishVolumeRequest) -> str:
    ns, name = req.volume_context.get(POD_NAMESPACE), req.volume_context.get(POD_NAME)
    return f"pod {ns}/{name}" if ns and name else f"volume {req.volume_id}"


def _failure(e: Exception, ref: Reference, client: RegistryClient) -> Failure:
    """A registry, verification or disk error as the gRPC status the kubelet reports on the pod."""
    what = f"{ref.registry}/{ref.repository}@{ref.digest}"
    if isinstance(e, AuthError):
        who = "the pod's pull Secret (nodePublishSecretRef)"
        if client.auth.credentials is None:
            who += f" has no credential for {ref.registry}, so anonymous access"
        return Failure(grpc.StatusCode.PERMISSION_DENIED, f"{who} may not pull {what}: {e}")
    if isinstance(e, NotFound):
        return Failure(grpc.StatusCode.NOT_FOUND, f"{what}: {e}")
    if isinstance(e, CorruptBlob | DigestMismatch):
        return Failure(grpc.StatusCode.DATA_LOSS,
                       f"{what}: {e}; nothing was cached. The registry's copy is damaged: "
                       "republish the model")
    if isinstance(e, MaterializeError):
        return Failure(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {e}")
    if isinstance(e, TLSError):
        return Failure(grpc.StatusCode.FAILED_PRECONDITION, f"{what}: {e}")
    if isinstance(e, Unreachable):
        return Failure(grpc.StatusCode.UNAVAILABLE, f"{what}: {e}")
    if isinstance(e, RegistryError):
        code = grpc.StatusCode.UNAVAILABLE if (e.status or 0) >= 500 else grpc.StatusCode.INTERNAL
        return Failure(code, f"{what}: {e}")
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return Failure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                       f"{what}: the node's model cache disk is full ({e}); lower the node cache budget "
                       "below the disk's free space")
    return Failure(grpc.StatusCode.INTERNAL, f"{what}: {e}")
