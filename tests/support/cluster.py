"""An in-memory stand-in for the Kubernetes API server's object store.

Just enough for the end-to-end harness: objects keyed by kind and name, uids,
generations that move only on spec changes, creation timestamps, owner
references with cascading deletion, finalizers and deletion timestamps.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

CLUSTER_SCOPED = {"ClusterModel", "ModelCatalogSource", "Namespace", "ClusterRole", "ClusterRoleBinding"}

# plural resource name -> kind (what Metacontroller objects and relatedResources name)
RESOURCES = {
    "models": "Model",
    "clustermodels": "ClusterModel",
    "modelcatalogsources": "ModelCatalogSource",
    "jobs": "Job",
    "cronjobs": "CronJob",
    "pods": "Pod",
    "secrets": "Secret",
    "services": "Service",
    "serviceaccounts": "ServiceAccount",
    "roles": "Role",
    "rolebindings": "RoleBinding",
    "configmaps": "ConfigMap",
    "ingresses": "Ingress",
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
}


def now_rfc3339(clock: dt.datetime | None = None) -> str:
    t = clock or dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def key_of(obj: Obj) -> tuple[str, str, str]:
    md = obj["metadata"]
    ns = "" if obj["kind"] in CLUSTER_SCOPED else md.get("namespace", "default")
    return obj["kind"], ns, md["name"]


@dataclass
class Cluster:
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _rv: Iterable[int] = field(default_factory=lambda: itertools.count(1))
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def _next_rv(self) -> str:
        return str(next(self._rv))  # type: ignore[call-overload]

    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        ns = "" if kind in CLUSTER_SCOPED else (namespace or "default")
        with self.lock:
            o = self.objects.get((kind, ns, name))
            return copy.deepcopy(o) if o else None

    def list(
        self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[Obj]:
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

    def apply(self, obj: Obj) -> Obj:
        """Create, or update spec/data/metadata of, an object (not its status)."""
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        if obj["kind"] not in CLUSTER_SCOPED:
            md.setdefault("namespace", "default")
        else:
            md.pop("namespace", None)
        k = key_of(obj)
        with self.lock:
            old = self.objects.get(k)
            if old is None:
                md.setdefault("uid", str(uuid.uuid4()))
                md.setdefault("creationTimestamp", now_rfc3339())
                md["generation"] = 1
                md["resourceVersion"] = self._next_rv()
                if obj["kind"] not in ("Secret", "ConfigMap", "Role", "RoleBinding", "ServiceAccount"):
                    obj.setdefault("status", {})
                self.objects[k] = obj
                self.events.append(("ADDED", *k))
                return copy.deepcopy(obj)
            new = copy.deepcopy(old)
            for part, val in obj.items():
                if part in ("metadata", "status", "apiVersion", "kind"):
                    continue
                new[part] = val
            for mk in ("labels", "annotations", "ownerReferences", "finalizers"):
                if mk in md:
                    new["metadata"][mk] = md[mk]
            if new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            if new != old:
                new["metadata"]["resourceVersion"] = self._next_rv()
                self.objects[k] = new
                self.events.append(("MODIFIED", *k))
            return copy.deepcopy(new)

    def set_status(self, kind: str, name: str, namespace: str, status: Obj) -> None:
        with self.lock:
            k = (kind, "" if kind in CLUSTER_SCOPED else namespace, name)
            if k in self.objects and self.objects[k].get("status") != status:
                self.objects[k]["status"] = copy.deepcopy(status)
                self.objects[k]["metadata"]["resourceVersion"] = self._next_rv()
                self.events.append(("MODIFIED", *k))

    def patch_metadata(self, kind: str, name: str, namespace: str, **changes: Any) -> None:
        with self.lock:
            k = (kind, "" if kind in CLUSTER_SCOPED else namespace, name)
            o = self.objects.get(k)
            if o is None:
                return
            for mk, val in changes.items():
                if isinstance(val, dict) and isinstance(o["metadata"].get(mk), dict):
                    merged = {**o["metadata"][mk], **val}
                    o["metadata"][mk] = {a: b for a, b in merged.items() if b is not None}
                else:
                    o["metadata"][mk] = val
            o["metadata"]["resourceVersion"] = self._next_rv()
            self.events.append(("MODIFIED", *k))

    def delete(self, kind: str, name: str, namespace: str = "") -> None:
        """Mark for deletion; remove at once when no finalizers hold it."""
        with self.lock:
            k = (kind, "" if kind in CLUSTER_SCOPED else (namespace or "default"), name)
            o = self.objects.get(k)
            if o is None:
                return
            if o["metadata"].get("finalizers"):
                o["metadata"].setdefault("deletionTimestamp", now_rfc3339())
                o["metadata"]["resourceVersion"] = self._next_rv()
                self.events.append(("MODIFIED", *k))
                return
            self._remove(k)

    def _remove(self, k: tuple[str, str, str]) -> None:
        o = self.objects.pop(k, None)
        if o is None:
            return
        self.events.append(("DELETED", *k))
        uid = o["metadata"].get("uid")
        # Garbage collection: cascade to dependents.
        for dk, d in list(self.objects.items()):
            if any(r.get("uid") == uid for r in d["metadata"].get("ownerReferences") or []):
                self.delete(dk[0], dk[2], dk[1])

    def remove_finalizer(self, kind: str, name: str, namespace: str, finalizer: str) -> None:
        with self.lock:
            k = (kind, "" if kind in CLUSTER_SCOPED else namespace, name)
            o = self.objects.get(k)
            if o is None:
                return
            fins = [f for f in o["metadata"].get("finalizers") or [] if f != finalizer]
            o["metadata"]["finalizers"] = fins
            if not fins and o["metadata"].get("deletionTimestamp"):
                self._remove(k)
