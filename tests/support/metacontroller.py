"""A stand-in for Metacontroller (and the bits of the API server it relies on).

It drives the real hook service over HTTP exactly as Metacontroller v4 does
with v2 hooks (references.md): customize (cached per parent uid+generation),
then sync — or finalize while the parent is being deleted — with every
declared child type present, keyed ``Kind.apiVersion`` then
``namespace/name``; it applies the desired children (controller owner
references, Jobs left alone once created, as with ``OnDelete``), deletes
owned children left out, replaces status (adding ``observedGeneration``),
holds its finalizer until ``finalized: true``, and resyncs on any change and
on ``resyncAfterSeconds``. For DecoratorControllers it writes the returned
labels/annotations (``null`` deletes) and attachments. Workload writes pass
through the mutating webhook as an API server would call it.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import jsonpatch
import requests
import yaml

from tests.support.cluster import CLUSTER_SCOPED, RESOURCES, Cluster, Obj

ROOT = Path(__file__).resolve().parents[2]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "CronJob"}


def load_controllers(directory: Path = ROOT / "metacontroller") -> list[Obj]:
    out = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("CompositeController", "DecoratorController"):
                out.append(doc)
    return out


def group_key(obj: Obj) -> str:
    return f"{obj['kind']}.{obj['apiVersion']}"


def obj_key(obj: Obj) -> str:
    md = obj["metadata"]
    return md["name"] if obj["kind"] in CLUSTER_SCOPED else f"{md.get('namespace', 'default')}/{md['name']}"


@dataclass
class HookError(Exception):
    url: str
    status: int
    body: str

    def __str__(self) -> str:
        return f"hook {self.url} answered {self.status}: {self.body[:500]}"


@dataclass
class Metacontroller:
    cluster: Cluster
    hooks_url: str  # e.g. http://127.0.0.1:8080
    controllers: list[Obj] = field(default_factory=load_controllers)
    session: requests.Session = field(default_factory=requests.Session)
    _customize_cache: dict[tuple[str, str, int], list[Obj]] = field(default_factory=dict)
    _resync_at: dict[tuple[str, str], float] = field(default_factory=dict)
    _seen_events: dict[tuple[str, str], int] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    # -- plumbing ---------------------------------------------------------------------------------
    def _hook_url(self, hook: Obj) -> str:
        wh = hook["webhook"]
        if wh.get("url"):
            from urllib.parse import urlparse

            return self.hooks_url + urlparse(wh["url"]).path
        return self.hooks_url + wh.get("path", "")

    def call(self, hook: Obj, body: Obj) -> Obj:
        url = self._hook_url(hook)
        self.calls.append(url)
        r = self.session.post(url, json=body, timeout=10)
        if r.status_code != 200:
            raise HookError(url, r.status_code, r.text)
        return r.json()

    # -- admission (the API server's part) ------------------------------------------------------
    def admit(self, obj: Obj, old: Obj | None = None) -> Obj:
        """Run the workload mutating webhook on a workload write, as the API server does."""
        if obj.get("kind") not in WORKLOAD_KINDS:
            return obj
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": f"harness-{time.monotonic_ns()}",
                "operation": "UPDATE" if old else "CREATE",
                "kind": {"group": obj["apiVersion"].split("/")[0], "version": "v1", "kind": obj["kind"]},
                "namespace": obj["metadata"].get("namespace", "default"),
                "name": obj["metadata"]["name"],
                "object": obj,
                "oldObject": old,
            },
        }
        r = self.session.post(self.hooks_url + "/webhooks/workload/mutate", json=review, timeout=10)
        if r.status_code != 200:
            raise HookError("/webhooks/workload/mutate", r.status_code, r.text)
        resp = r.json()["response"]
        if not resp.get("allowed", False):
            raise HookError("/webhooks/workload/mutate", 403, json.dumps(resp.get("status")))
        if resp.get("patch"):
            # RFC 6902, as the API server applies it (the jsonpatch library, not our own code).
            obj = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(resp["patch"])))
        return obj

    def apply_user(self, obj: Obj) -> Obj:
        """What ``kubectl apply`` does: admission, then store."""
        md = obj.get("metadata", {})
        old = self.cluster.get(obj["kind"], md["name"], md.get("namespace", "default"))
        return self.cluster.apply(self.admit(obj, old))

    # -- selection --------------------------------------------------------------------------------
    def _select(self, rr: Obj, parent: Obj) -> list[Obj]:
        kind = RESOURCES[rr["resource"]]
        parent_ns = parent["metadata"].get("namespace") if parent["kind"] not in CLUSTER_SCOPED else None
        ns = rr.get("namespace") or parent_ns
        if kind in CLUSTER_SCOPED:
            ns = None
        labels = (rr.get("labelSelector") or {}).get("matchLabels")
        objs = self.cluster.list(kind, ns, labels)
        if rr.get("names"):
            objs = [o for o in objs if o["metadata"]["name"] in rr["names"]]
        return objs

    def _related(self, hooks: Obj, body: Obj, parent: Obj) -> dict[str, dict[str, Obj]]:
        if "customize" not in hooks:
            return {}
        md = parent["metadata"]
        ck = (parent["kind"], md["uid"], md.get("generation", 1))
        if ck not in self._customize_cache:
            resp = self.call(hooks["customize"], body)
            self._customize_cache[ck] = resp.get("relatedResources") or []
        related: dict[str, dict[str, Obj]] = {}
        for rr in self._customize_cache[ck]:
            kind = RESOURCES[rr["resource"]]
            group = related.setdefault(f"{kind}.{rr['apiVersion']}", {})
            for o in self._select(rr, parent):
                group[obj_key(o)] = o
        return related

    def _owned(self, parent: Obj, child_specs: list[Obj]) -> dict[str, dict[str, Obj]]:
        uid = parent["metadata"]["uid"]
        out: dict[str, dict[str, Obj]] = {}
        for cr in child_specs:
            kind = RESOURCES[cr["resource"]]
            group = out.setdefault(f"{kind}.{cr['apiVersion']}", {})
            for o in self.cluster.list(kind):
                if any(r.get("uid") == uid and r.get("controller") for r in o["metadata"].get("ownerReferences") or []):
                    group[obj_key(o)] = o
        return out

    def _apply_children(self, parent: Obj, desired: list[Obj], observed: dict[str, dict[str, Obj]],
                        strategies: dict[str, str]) -> None:
        owner = {
            "apiVersion": parent["apiVersion"],
            "kind": parent["kind"],
            "name": parent["metadata"]["name"],
            "uid": parent["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        keep: set[tuple[str, str]] = set()
        for child in desired:
            child = copy.deepcopy(child)
            md = child.setdefault("metadata", {})
            if child["kind"] not in CLUSTER_SCOPED and not md.get("namespace"):
                md["namespace"] = parent["metadata"].get("namespace", "default")
            md["ownerReferences"] = [owner]
            gk = group_key(child)
            keep.add((gk, obj_key(child)))
            existing = observed.get(gk, {}).get(obj_key(child))
            if existing and strategies.get(child["kind"], "OnDelete") == "OnDelete":
                continue
            if child["kind"] == "Job" and existing:
                continue  # a Job's pod template is immutable
            if child.get("kind") == "Secret" and "stringData" in child:
                child["data"] = {
                    **child.get("data", {}),
                    **{k: base64.b64encode(v.encode()).decode() for k, v in child.pop("stringData").items()},
                }
            self.cluster.apply(child)
        for gk, group in observed.items():
            for k, o in group.items():
                if (gk, k) not in keep:
                    self.cluster.delete(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", ""))

    # -- reconcile ----------------------------------------------------------------------------------
    def _due(self, kind: str, uid: str) -> bool:
        k = (kind, uid)
        n = len(self.cluster.events)
        if self._seen_events.get(k) != n or time.monotonic() >= self._resync_at.get(k, 0):
            return True
        return False

    def _mark(self, kind: str, uid: str, resync: float | None, period: float) -> None:
        k = (kind, uid)
        self._seen_events[k] = len(self.cluster.events)
        self._resync_at[k] = time.monotonic() + (resync if resync else period)

    def reconcile_composite(self, ctrl: Obj) -> None:
        spec = ctrl["spec"]
        kind = RESOURCES[spec["parentResource"]["resource"]]
        hooks = spec.get("hooks", {})
        finalizer = f"metacontroller.io/compositecontroller-{ctrl['metadata']['name']}"
        strategies = {RESOURCES[c["resource"]]: (c.get("updateStrategy") or {}).get("method", "OnDelete")
                      for c in spec.get("childResources", [])}
        for parent in self.cluster.list(kind):
            md = parent["metadata"]
            if not self._due(kind, md["uid"]):
                continue
            deleting = bool(md.get("deletionTimestamp"))
            if "finalize" in hooks and not deleting and finalizer not in (md.get("finalizers") or []):
                self.cluster.patch_metadata(kind, md["name"], md.get("namespace", ""),
                                            finalizers=[*(md.get("finalizers") or []), finalizer])
                parent = self.cluster.get(kind, md["name"], md.get("namespace", "")) or parent
            if deleting and "finalize" not in hooks:
                continue
            body = {"controller": ctrl, "parent": parent}
            try:
                related = self._related(hooks, body, parent)
                children = self._owned(parent, spec.get("childResources", []))
                req = {**body, "children": children, "related": related, "finalizing": deleting}
                resp = self.call(hooks["finalize" if deleting else "sync"], req)
            except (HookError, requests.RequestException) as e:
                self.errors.append(str(e))
                self._mark(kind, md["uid"], 1.0, 1.0)
                continue
            status = dict(resp.get("status") or {})
            status["observedGeneration"] = md.get("generation", 1)
            self.cluster.set_status(kind, md["name"], md.get("namespace", ""), status)
            self._apply_children(parent, resp.get("children") or [], children, strategies)
            if deleting and resp.get("finalized"):
                self.cluster.remove_finalizer(kind, md["name"], md.get("namespace", ""), finalizer)
            self._mark(kind, md["uid"], resp.get("resyncAfterSeconds"), float(spec.get("resyncPeriodSeconds", 30)))

    def _decorator_targets(self, spec: Obj) -> list[Obj]:
        seen: dict[tuple[str, str, str], Obj] = {}
        for res in spec["resources"]:
            kind = RESOURCES[res["resource"]]
            sel = res.get("annotationSelector") or {}
            for o in self.cluster.list(kind):
                ann = o["metadata"].get("annotations") or {}
                ok = all(ann.get(k) == v for k, v in (sel.get("matchAnnotations") or {}).items())
                for ex in sel.get("matchExpressions") or []:
                    if ex["operator"] == "Exists":
                        ok = ok and ex["key"] in ann
                    elif ex["operator"] == "DoesNotExist":
                        ok = ok and ex["key"] not in ann
                    elif ex["operator"] == "In":
                        ok = ok and ann.get(ex["key"]) in ex.get("values", [])
                if ok:
                    seen[(kind, o["metadata"].get("namespace", ""), o["metadata"]["name"])] = o
        return list(seen.values())

    def reconcile_decorator(self, ctrl: Obj) -> None:
        spec = ctrl["spec"]
        hooks = spec.get("hooks", {})
        finalizer = f"metacontroller.io/decoratorcontroller-{ctrl['metadata']['name']}"
        strategies = {RESOURCES[c["resource"]]: (c.get("updateStrategy") or {}).get("method", "OnDelete")
                      for c in spec.get("attachments", [])}
        targets = self._decorator_targets(spec)
        # A target that stopped matching but still holds our finalizer is finalized
        # as it is (Metacontroller sends no deletionTimestamp for that case).
        stopped: set[str] = set()
        for kind in WORKLOAD_KINDS:
            for o in self.cluster.list(kind):
                if finalizer in (o["metadata"].get("finalizers") or []) and all(
                    o["metadata"]["uid"] != t["metadata"]["uid"] for t in targets
                ):
                    stopped.add(o["metadata"]["uid"])
                    targets.append(o)
        for obj in targets:
            md = obj["metadata"]
            kind = obj["kind"]
            if not self._due(kind, md["uid"]):
                continue
            deleting = bool(md.get("deletionTimestamp")) or md["uid"] in stopped
            if "finalize" in hooks and not deleting and finalizer not in (md.get("finalizers") or []):
                self.cluster.patch_metadata(kind, md["name"], md.get("namespace", ""),
                                            finalizers=[*(md.get("finalizers") or []), finalizer])
            # v2 decorator hooks: the target is "parent", its attachments "children".
            body = {"controller": ctrl, "parent": obj}
            try:
                related = self._related(hooks, body, obj)
                attachments = self._owned(obj, spec.get("attachments", []))
                req = {**body, "children": attachments, "related": related, "finalizing": deleting}
                resp = self.call(hooks["finalize" if deleting else "sync"], req)
            except (HookError, requests.RequestException) as e:
                self.errors.append(str(e))
                self._mark(kind, md["uid"], 1.0, 1.0)
                continue
            current = self.cluster.get(kind, md["name"], md.get("namespace", ""))
            if current is not None:
                new = copy.deepcopy(current)
                for mk in ("labels", "annotations"):
                    if resp.get(mk):
                        merged = {**(new["metadata"].get(mk) or {}), **resp[mk]}
                        new["metadata"][mk] = {k: v for k, v in merged.items() if v is not None}
                if new["metadata"] != current["metadata"]:
                    new.pop("status", None)
                    admitted = self.admit(new, current)
                    self.cluster.apply(admitted)
            self._apply_children(obj, resp.get("attachments") or [], attachments, strategies)
            if deleting and resp.get("finalized"):
                self.cluster.remove_finalizer(kind, md["name"], md.get("namespace", ""), finalizer)
            self._mark(kind, md["uid"], resp.get("resyncAfterSeconds"), float(spec.get("resyncPeriodSeconds", 30)))

    def reconcile(self) -> None:
        for ctrl in self.controllers:
            if ctrl["kind"] == "CompositeController":
                self.reconcile_composite(ctrl)
            else:
                self.reconcile_decorator(ctrl)
