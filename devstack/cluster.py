"""An in-memory API server store: the backend of ``make run``, which needs no cluster.

Just enough of the API server's rules for the stand-ins to behave as they do
against a real one (``devstack/kubestore.py``): uids, resourceVersions
with optimistic concurrency on update, generations that move only on spec
changes, status only through ``set_status``, ``stringData`` folded into
``data``, NamespaceLifecycle (no create in a missing or terminating
namespace), owner references with cascading deletion, finalizers and
deletion timestamps, and an ``admission`` callback standing in for the
mutating webhook. Every change is logged as a watch event.
"""

from __future__ import annotations

import base64
import builtins
import copy
import datetime as dt
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from devstack.memory_api import MemoryApi
from devstack.store import (
    CLUSTER_SCOPED,
    NO_STATUS,
    AlreadyExists,
    ApiError,
    Conflict,
    Event,
    NotFound,
    Obj,
    key_of,
)

__all__ = ["CLUSTER_SCOPED", "Cluster", "Obj", "now_rfc3339"]

SYSTEM_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp")


def now_rfc3339(clock: dt.datetime | None = None) -> str:
    t = clock or dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fold_string_data(obj: Obj) -> None:
    if obj.get("kind") == "Secret" and "stringData" in obj:
        data = dict(obj.get("data") or {})
        data.update({k: base64.b64encode(str(v).encode()).decode() for k, v in obj.pop("stringData").items()})
        obj["data"] = data


@dataclass
class Cluster:
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _rv: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    log: list[Event] = field(default_factory=list)
    # The mutating webhook: (object, old object or None) -> admitted object.
    admission: Callable[[Obj, Obj | None], Obj] | None = None
    # What worker pods talk to (started on first use: devstack/memory_api.py).
    api: MemoryApi | None = None

    # -- what pods see -------------------------------------------------------------------------
    def _pod_api(self) -> MemoryApi:
        with self.lock:
            if self.api is None:
                self.api = MemoryApi(self).start()
                for ns in self.list("Namespace"):
                    self._publish_root_ca(ns["metadata"]["name"])
            return self.api

    def _publish_root_ca(self, namespace: str) -> None:
        """What kube-controller-manager's root-ca publisher does: ``kube-root-ca.crt`` in every namespace."""
        if self.api is None or ("ConfigMap", namespace, "kube-root-ca.crt") in self.objects:
            return
        self.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "kube-root-ca.crt", "namespace": namespace},
                     "data": {"ca.crt": self.api.ca_pem}})

    def stop(self) -> None:
        """Close what pods talked to (LocalModule.stop calls it)."""
        if self.api is not None:
            self.api.stop()

    def in_cluster(self) -> tuple[str, int]:
        api = self._pod_api()
        return api.host, api.port

    def service_account_token(self, namespace: str, account: str, pod: Obj, expiration: int) -> str:
        return self._pod_api().issue_token(namespace, account)

    # -- reads -----------------------------------------------------------------------------------
    def _key(self, kind: str, name: str, namespace: str) -> tuple[str, str, str]:
        return kind, "" if kind in CLUSTER_SCOPED else (namespace or "default"), name

    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        with self.lock:
            o = self.objects.get(self._key(kind, name, namespace))
            return copy.deepcopy(o) if o else None

    def list(self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> list[Obj]:
        with self.lock:
            out = []
            for (k, ns, _), o in sorted(self.objects.items()):
                if k != kind or (namespace is not None and kind not in CLUSTER_SCOPED and ns != namespace):
                    continue
                have = o["metadata"].get("labels") or {}
                if labels and any(have.get(a) != b for a, b in labels.items()):
                    continue
                out.append(copy.deepcopy(o))
            return out

    def events_since(self, cursor: int) -> tuple[int, builtins.list[Event]]:
        with self.lock:
            return len(self.log), self.log[cursor:]

    # -- writes ----------------------------------------------------------------------------------
    def _emit(self, kind: str, obj: Obj) -> None:
        self.log.append(Event(kind, copy.deepcopy(obj)))

    def _admit(self, obj: Obj, old: Obj | None) -> Obj:
        return self.admission(obj, old) if self.admission else obj

    def _check_namespace(self, obj: Obj) -> None:
        if obj["kind"] in CLUSTER_SCOPED:
            obj["metadata"].pop("namespace", None)
            return
        ns = obj["metadata"].get("namespace")
        if not ns:
            raise ApiError(400, "BadRequest", f"{obj['kind']} {obj['metadata'].get('name')}: a namespace is required")
        nso = self.objects.get(("Namespace", "", ns))
        if nso is None:
            raise NotFound(f"namespaces {ns!r} not found")
        if nso["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", f"namespace {ns} is being terminated")

    def create(self, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        with self.lock:
            self._check_namespace(obj)
            k = key_of(obj)
            if k in self.objects:
                raise AlreadyExists(f"{k[0]} {k[1]}/{k[2]} already exists")
            obj = self._admit(obj, None)
            _fold_string_data(obj)
            md = obj["metadata"]
            for f in SYSTEM_METADATA:
                md.pop(f, None)
            md["uid"] = str(uuid.uuid4())
            md["creationTimestamp"] = now_rfc3339()
            md["generation"] = 1
            md["resourceVersion"] = str(next(self._rv))
            if obj["kind"] in NO_STATUS:
                obj.pop("status", None)
            else:
                obj["status"] = {"phase": "Active"} if obj["kind"] == "Namespace" else {}
            self.objects[k] = obj
            self._emit("ADDED", obj)
            if obj["kind"] == "Namespace":
                self._publish_root_ca(md["name"])
                # What kube-controller-manager's serviceaccount controller does.
                self.create({"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": "default", "namespace": md["name"]}})
            return copy.deepcopy(obj)

    def _store_update(self, old: Obj, new: Obj) -> Obj:
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if new != old:
            new["metadata"]["resourceVersion"] = str(next(self._rv))
            k = key_of(new)
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                self.objects[k] = new
                self._remove(k)
            else:
                self.objects[k] = new
                self._emit("MODIFIED", new)
        return copy.deepcopy(new)

    def update(self, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        with self.lock:
            k = key_of(obj)
            old = self.objects.get(k)
            if old is None:
                raise NotFound(f"{k[0]} {k[1]}/{k[2]} not found")
            rv = obj["metadata"].get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise Conflict(f"{k[0]} {k[1]}/{k[2]}: the object has been modified")
            obj = self._admit(obj, copy.deepcopy(old))
            _fold_string_data(obj)
            new = copy.deepcopy(obj)
            for f in SYSTEM_METADATA:
                if f in old["metadata"]:
                    new["metadata"][f] = old["metadata"][f]
                else:
                    new["metadata"].pop(f, None)
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
            return self._store_update(old, new)

    def apply(self, obj: Obj) -> Obj:
        """Create, or update spec/data/metadata of, an object (not its status)."""
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        if obj["kind"] not in CLUSTER_SCOPED:
            md.setdefault("namespace", "default")
        with self.lock:
            old = self.objects.get(key_of(obj))
            if old is None:
                return self.create(obj)
            new = copy.deepcopy(old)
            for part, val in obj.items():
                if part in ("metadata", "status", "apiVersion", "kind"):
                    continue
                new[part] = val
            for mk in ("labels", "annotations", "ownerReferences", "finalizers"):
                if mk in md:
                    new["metadata"][mk] = md[mk]
            new = self._admit(new, copy.deepcopy(old))
            _fold_string_data(new)
            return self._store_update(old, new)

    def set_status(self, kind: str, name: str, namespace: str, status: Obj) -> Obj | None:
        with self.lock:
            k = self._key(kind, name, namespace)
            o = self.objects.get(k)
            if o is None:
                return None
            if o.get("status") != status:
                o["status"] = copy.deepcopy(status)
                o["metadata"]["resourceVersion"] = str(next(self._rv))
                self._emit("MODIFIED", o)
            return copy.deepcopy(o)

    def patch_metadata(self, kind: str, name: str, namespace: str, **changes: Any) -> Obj | None:
        with self.lock:
            o = self.objects.get(self._key(kind, name, namespace))
            if o is None:
                return None
            new = copy.deepcopy(o)
            for mk, val in changes.items():
                if isinstance(val, dict) and isinstance(new["metadata"].get(mk), dict):
                    merged = {**new["metadata"][mk], **val}
                    new["metadata"][mk] = {a: b for a, b in merged.items() if b is not None}
                else:
                    new["metadata"][mk] = val
            return self._store_update(o, new)

    def bind(self, pod: Obj, node: str) -> None:
        with self.lock:
            o = self.objects.get(key_of(pod))
            if o is None:
                raise NotFound(f"pod {pod['metadata']['name']} not found")
            if o["spec"].get("nodeName"):
                raise Conflict(f"pod {pod['metadata']['name']} is already assigned to a node")
            new = copy.deepcopy(o)
            new["spec"]["nodeName"] = node
            new["metadata"]["resourceVersion"] = str(next(self._rv))
            self.objects[key_of(new)] = new
            self._emit("MODIFIED", new)

    def delete(self, kind: str, name: str, namespace: str = "", uid: str | None = None,
               grace_period: int | None = None) -> None:
        """Mark for deletion; remove at once when no finalizers hold it (no grace periods here)."""
        with self.lock:
            k = self._key(kind, name, namespace)
            o = self.objects.get(k)
            if o is None:
                raise NotFound(f"{kind} {namespace}/{name} not found")
            if uid and o["metadata"]["uid"] != uid:
                raise Conflict(f"{kind} {namespace}/{name}: uid precondition failed")
            if kind == "Namespace":
                o["metadata"]["deletionTimestamp"] = now_rfc3339()
                for ok in [ok for ok in self.objects if ok[1] == name]:
                    self.delete(ok[0], ok[2], ok[1])
                self._remove(k)
                return
            if o["metadata"].get("finalizers"):
                if not o["metadata"].get("deletionTimestamp"):
                    o["metadata"]["deletionTimestamp"] = now_rfc3339()
                    o["metadata"]["resourceVersion"] = str(next(self._rv))
                    self._emit("MODIFIED", o)
                return
            self._remove(k)

    def _remove(self, k: tuple[str, str, str]) -> None:
        o = self.objects.pop(k, None)
        if o is None:
            return
        self._emit("DELETED", o)
        uid = o["metadata"].get("uid")
        # Garbage collection: cascade to dependents.
        for dk, d in list(self.objects.items()):
            if any(r.get("uid") == uid for r in d["metadata"].get("ownerReferences") or []):
                self.delete(dk[0], dk[2], dk[1])

    def remove_finalizer(self, kind: str, name: str, namespace: str, finalizer: str) -> None:
        with self.lock:
            o = self.objects.get(self._key(kind, name, namespace))
            if o is None:
                return
            new = copy.deepcopy(o)
            new["metadata"]["finalizers"] = [f for f in o["metadata"].get("finalizers") or [] if f != finalizer]
            self._store_update(o, new)
