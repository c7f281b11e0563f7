"""A stand-in for Metacontroller v4.17, as strict as the real one where our hooks can tell.

It runs the CompositeControllers and DecoratorControllers of ``metacontroller/``
against a ``Store`` (a real kube-apiserver in the tests, an in-memory one for
``make run``) and drives the real hook service over HTTP with v2 hooks. Each
rule cites the Metacontroller file (v4.17.2) it reproduces; docs/testing.md
has the table, including what is *not* reproduced.

Reads come from an informer cache (``devstack/informer.py``), optionally
stale by ``lag`` seconds. Work is queued per parent and only woken by the
parent's own events, its children's (controller reference), related objects
matching a cached customize answer, the controller's ``resyncPeriodSeconds``
and a hook's ``resyncAfterSeconds`` — never by an unrelated change.
``hook_calls`` counts calls per (controller, hook, parent).
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
import yaml

from devstack.informer import Informer
from devstack.store import (
    CLUSTER_SCOPED,
    KINDS,
    RESOURCES,
    AlreadyExists,
    ApiError,
    Conflict,
    NotFound,
    Obj,
    Store,
    namespace_of,
)
from devstack.three_way import apply_update, selector_matches, set_last_applied

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "CronJob"}
DECORATOR_ANNOTATION = "metacontroller.k8s.io/decorator-controller"  # decorator/controller.go
METACONTROLLER_USER = "system:serviceaccount:metacontroller:metacontroller"

# v2 responses are decoded with sigs.k8s.io/json UnmarshalStrict and strict mode is the
# default for v2 (pkg/hooks/webhook.go responseUnmarshallMode): an unknown or duplicate
# field fails the call. Field sets: composite/api/v2/hooks.go, decorator/api/v2/hooks.go,
# customize/api/v2/hooks.go, apis/metacontroller/v1alpha1 (RelatedResourceRule).
RESPONSE_FIELDS = {
    "composite": {"status", "children", "resyncAfterSeconds", "finalized"},
    "decorator": {"labels", "annotations", "status", "attachments", "resyncAfterSeconds", "finalized"},
    "customize": {"relatedResources"},
}
RELATED_RULE_FIELDS = {"apiVersion", "resource", "labelSelector", "namespaceSelector", "namespace", "names"}
SELECTOR_FIELDS = {"matchLabels", "matchExpressions"}


def load_controllers(directory: Path = ROOT / "metacontroller") -> list[Obj]:
    out = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("CompositeController", "DecoratorController"):
                out.append(doc)
    return out


def group_key(api_version: str, kind: str) -> str:
    """A v2 object-map key, ``Kind.group/version`` (common/api/api.go GroupVersionKind.MarshalText)."""
    return f"{kind}.{api_version}"


def qualified_name(obj: Obj) -> str:
    """``namespace/name`` or ``name`` (common/api/v2/common.go qualifiedName)."""
    ns = obj["metadata"].get("namespace")
    return f"{ns}/{obj['metadata']['name']}" if ns else obj["metadata"]["name"]


def controller_ref(obj: Obj | None) -> Obj | None:
    for r in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []:
        if r.get("controller"):
            return r
    return None


@dataclass
class HookError(Exception):
    url: str
    status: int
    body: str

    def __str__(self) -> str:
        return f"hook {self.url} answered {self.status}: {self.body[:500]}"


def decode_strict(kind: str, body: Any) -> Obj:
    """Reject what UnmarshalStrict rejects in a v2 response: unknown fields, wrong shapes."""
    if not isinstance(body, dict):
        raise ValueError(f"{kind} response is not an object")
    unknown = set(body) - RESPONSE_FIELDS[kind]
    if unknown:
        raise ValueError(f"strict decoding of the {kind} response: unknown field(s) {sorted(unknown)}")
    for lst in ("children", "attachments", "relatedResources"):
        if body.get(lst) is not None and not isinstance(body[lst], list):
            raise ValueError(f"{kind} response: {lst} must be a list")
    for rule in body.get("relatedResources") or []:
        unknown = set(rule) - RELATED_RULE_FIELDS
        for sel in ("labelSelector", "namespaceSelector"):
            unknown |= {f"{sel}.{k}" for k in set(rule.get(sel) or {}) - SELECTOR_FIELDS}
        if unknown:
            raise ValueError(f"strict decoding of a related rule: unknown field(s) {sorted(unknown)}")
    for m in ("labels", "annotations"):
        if body.get(m) is not None and not all(v is None or isinstance(v, str) for v in body[m].values()):
            raise ValueError(f"{kind} response: {m} values must be strings or null")
    return body


def _session() -> requests.Session:
    """Keep-alive to the hook service; no proxy lookups per call (loopback only)."""
    s = requests.Session()
    s.trust_env = False
    return s


@dataclass
class Metacontroller:
    store: Store  # writes (in the tests: impersonating Metacontroller's service account)
    hooks_url: str  # e.g. http://127.0.0.1:8080
    controllers: list[Obj] = field(default_factory=load_controllers)
    lag: float = 0.0  # informer staleness, seconds
    session: requests.Session = field(default_factory=lambda: _session())
    informer: Informer | None = None
    calls: list[str] = field(default_factory=list)
    hook_calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _queue: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    _next_resync: dict[str, float] = field(default_factory=dict)
    _customize: dict[tuple[str, str, int], list[Obj]] = field(default_factory=dict)
    # Indexes over _customize (thousands of parents): which cached answers relate a kind, and
    # where each answer's parent lives. Metacontroller keeps the same per related informer.
    _related_by_kind: dict[str, set[tuple[str, str, int]]] = field(default_factory=dict)
    _customize_parent: dict[tuple[str, str, int], tuple[str, str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.informer is None:
            self.informer = Informer(self.store, self.lag)

    @property
    def cache(self) -> Informer:
        assert self.informer is not None
        return self.informer

    # -- controller facts --------------------------------------------------------------------------
    @staticmethod
    def name(ctrl: Obj) -> str:
        return ctrl["metadata"]["name"]

    @staticmethod
    def parent_kinds(ctrl: Obj) -> set[str]:
        spec = ctrl["spec"]
        if ctrl["kind"] == "CompositeController":
            return {RESOURCES[spec["parentResource"]["resource"]]}
        return {RESOURCES[r["resource"]] for r in spec["resources"]}

    @staticmethod
    def child_specs(ctrl: Obj) -> list[Obj]:
        return ctrl["spec"].get("childResources" if ctrl["kind"] == "CompositeController" else "attachments") or []

    def finalizer(self, ctrl: Obj) -> str:
        kind = "compositecontroller" if ctrl["kind"] == "CompositeController" else "decoratorcontroller"
        return f"metacontroller.io/{kind}-{self.name(ctrl)}"

    def selects(self, ctrl: Obj, obj: Obj) -> bool:
        """decorator/selector.go: one selector per group+kind (the last entry wins), labels AND annotations."""
        if ctrl["kind"] == "CompositeController":
            return obj["kind"] in self.parent_kinds(ctrl)
        chosen = None
        for r in ctrl["spec"]["resources"]:
            if RESOURCES[r["resource"]] == obj["kind"]:
                chosen = r
        if chosen is None:
            return False
        md = obj["metadata"]
        ann = chosen.get("annotationSelector")
        ann_sel = {"matchLabels": ann.get("matchAnnotations"), "matchExpressions": ann.get("matchExpressions")} if ann else None
        return selector_matches(chosen.get("labelSelector"), md.get("labels")) and selector_matches(
            ann_sel, md.get("annotations"))

    def is_parent(self, ctrl: Obj, obj: Obj | None) -> bool:
        if obj is None or obj["kind"] not in self.parent_kinds(ctrl):
            return False
        return self.selects(ctrl, obj) or self.finalizer(ctrl) in (obj["metadata"].get("finalizers") or [])

    def strategy(self, ctrl: Obj, kind: str) -> str:
        for c in self.child_specs(ctrl):
            if RESOURCES[c["resource"]] == kind:
                return (c.get("updateStrategy") or {}).get("method") or "OnDelete"
        return "OnDelete"

    # -- the work queue ------------------------------------------------------------------------------
    def enqueue(self, ctrl: Obj, obj: Obj, after: float = 0.0) -> None:
        k = (self.name(ctrl), obj["kind"], namespace_of(obj), obj["metadata"]["name"])
        due = time.monotonic() + after
        self._queue[k] = min(self._queue.get(k, due), due)

    def _wake(self, obj: Obj, old: Obj | None) -> None:
        for ctrl in self.controllers:
            # The parent's own events (composite/controller.go enqueueParentObject, updateParentObject).
            if (self.is_parent(ctrl, obj) or self.is_parent(ctrl, old)) and not self._status_only(ctrl, obj, old):
                self.enqueue(ctrl, obj)
            # Children: resolve the controller reference to a parent of this controller
            # (resolveControllerRef: same namespace for a namespaced parent, uid must match).
            child_kinds = {RESOURCES[c["resource"]] for c in self.child_specs(ctrl)}
            if obj["kind"] in child_kinds:
                for o in (obj, old):
                    ref = controller_ref(o)
                    if o is None or ref is None or ref.get("kind") not in self.parent_kinds(ctrl):
                        continue
                    pns = "" if ref["kind"] in CLUSTER_SCOPED else o["metadata"].get("namespace", "")
                    parent = self.cache.get(ref["kind"], ref["name"], pns)
                    if parent and parent["metadata"]["uid"] == ref.get("uid") and self.is_parent(ctrl, parent):
                        self.enqueue(ctrl, parent)
            # Related objects: every parent whose cached customize answer selects it
            # (customize/manager.go onRelatedAdd/Update/Delete → matchesRelatedRule).
            for ck in list(self._related_by_kind.get(obj["kind"], ())):
                cname, uid, gen = ck
                rules = self._customize.get(ck) or []
                if cname != self.name(ctrl) or not any(self._rule_matches(r, o) for r in rules for o in (obj, old) if o):
                    continue
                pkind, pns, pname = self._customize_parent[ck]
                p = self.cache.get(pkind, pname, pns)
                if p and p["metadata"]["uid"] == uid and p["metadata"].get("generation", 1) == gen:
                    self.enqueue(ctrl, p)

    def _status_only(self, ctrl: Obj, obj: Obj, old: Obj | None) -> bool:
        """An update ignoreStatusChanges drops (decorator/controller.go updateParentObject,
        composite/controller.go): same generation, labels and annotations, not being deleted."""
        if old is None or obj is old:
            return False
        if ctrl["kind"] == "CompositeController":
            ignore = bool(ctrl["spec"]["parentResource"].get("ignoreStatusChanges"))
        else:
            ignore = any(r.get("ignoreStatusChanges") for r in ctrl["spec"]["resources"]
                         if RESOURCES.get(r["resource"]) == obj["kind"])
        if not ignore:
            return False
        new_md, old_md = obj["metadata"], old["metadata"]
        return (new_md.get("generation") == old_md.get("generation")
                and (new_md.get("labels") or {}) == (old_md.get("labels") or {})
                and (new_md.get("annotations") or {}) == (old_md.get("annotations") or {})
                and not new_md.get("deletionTimestamp"))

    def step(self) -> None:
        """Deliver pending watch events, then sync every parent that is due."""
        for ev, old in self.cache.poll():
            self._wake(ev.obj, old)
        now = time.monotonic()
        for ctrl in self.controllers:
            period = float(ctrl["spec"].get("resyncPeriodSeconds") or 0)
            nxt = self._next_resync.setdefault(self.name(ctrl), now + period if period else float("inf"))
            if now >= nxt:  # the informer's resync: every parent again (AddEventHandlerWithResyncPeriod)
                self._next_resync[self.name(ctrl)] = now + max(period, 1.0)
                for pk in self.parent_kinds(ctrl):
                    for p in self.cache.list(pk):
                        if self.is_parent(ctrl, p):
                            self.enqueue(ctrl, p)
        by_name = {self.name(c): c for c in self.controllers}
        for k in sorted((k for k, due in self._queue.items() if due <= now), key=lambda k: self._queue[k]):
            del self._queue[k]
            ctrl = by_name[k[0]]
            obj = self.cache.get(k[1], k[3], k[2])
            if obj is None:
                continue
            try:
                if ctrl["kind"] == "CompositeController":
                    self.sync_composite(ctrl, obj)
                else:
                    self.sync_decorator(ctrl, obj)
            except (HookError, ValueError, ApiError, requests.RequestException) as e:
                self.errors.append(f"{k}: {e}")
                self.enqueue(ctrl, obj, after=1.0)  # the queue's rate-limited retry

    reconcile = step

    # -- hooks -----------------------------------------------------------------------------------------
    def _hook_url(self, hook: Obj) -> str:
        wh = hook["webhook"]
        if wh.get("url"):
            return self.hooks_url + urlparse(wh["url"]).path
        return self.hooks_url + wh.get("path", "")

    def call(self, ctrl: Obj, hook: str, body: Obj, kind: str) -> Obj:
        url = self._hook_url(ctrl["spec"]["hooks"][hook])
        parent = body.get("parent") or body.get("object") or {}
        self.calls.append(url)
        self.hook_calls[(self.name(ctrl), hook, qualified_name(parent))] += 1
        r = self.session.post(url, json=body, timeout=10)
        if r.status_code != 200:
            raise HookError(url, r.status_code, r.text)
        return decode_strict(kind, r.json())

    def count(self, controller: str | None = None, hook: str | None = None, parent: str | None = None) -> int:
        return sum(n for (c, h, p), n in self.hook_calls.items()
                   if (controller is None or c == controller) and (hook is None or h == hook)
                   and (parent is None or p == parent))

    # -- related objects (customize/manager.go) -----------------------------------------------------
    def _rules(self, ctrl: Obj, parent: Obj) -> list[Obj]:
        if "customize" not in ctrl["spec"].get("hooks", {}):
            return []
        md = parent["metadata"]
        ck = (self.name(ctrl), md["uid"], md.get("generation", 1))
        if ck not in self._customize:  # cached per parent uid + generation
            resp = self.call(ctrl, "customize", {"controller": ctrl, "parent": parent}, "customize")
            self._customize[ck] = resp.get("relatedResources") or []
            self._customize_parent[ck] = (parent["kind"], namespace_of(parent), md["name"])
            for rule in self._customize[ck]:
                kind = RESOURCES.get(rule.get("resource", ""))
                if kind:
                    self._related_by_kind.setdefault(kind, set()).add(ck)
        return self._customize[ck]

    @staticmethod
    def _rule_matches(rule: Obj, obj: Obj) -> bool:
        """v2 matchesRelatedRule: no namespace means every namespace; names exclude selectors."""
        kind = RESOURCES.get(rule["resource"])
        if obj["kind"] != kind or obj.get("apiVersion") != rule["apiVersion"]:
            return False
        if rule.get("names") and (rule.get("labelSelector") is not None or rule.get("namespaceSelector") is not None):
            return False  # determineSelectionType: invalid
        if rule.get("namespace") and kind not in CLUSTER_SCOPED and obj["metadata"].get("namespace") != rule["namespace"]:
            return False
        if rule.get("names") and obj["metadata"]["name"] not in rule["names"]:
            return False
        return selector_matches(rule.get("labelSelector"), obj["metadata"].get("labels"))

    def related(self, ctrl: Obj, parent: Obj) -> dict[str, dict[str, Obj]]:
        out: dict[str, dict[str, Obj]] = {}
        for rule in self._rules(ctrl, parent):
            kind = RESOURCES[rule["resource"]]
            group = out.setdefault(group_key(rule["apiVersion"], kind), {})
            if rule.get("names") and (rule.get("namespace") or kind in CLUSTER_SCOPED):
                # The lister's indexed lookup (selectByNamespaceAndNames): no scan of the whole cache.
                ns = "" if kind in CLUSTER_SCOPED else rule["namespace"]
                candidates = [o for o in (self.cache.get(kind, n, ns) for n in rule["names"]) if o]
            else:
                candidates = self.cache.list(kind)
            for o in candidates:
                if self._rule_matches(rule, o):
                    group[qualified_name(o)] = o
        return out

    # -- children (manage_children.go) -----------------------------------------------------------------
    def observed_children(self, ctrl: Obj, parent: Obj) -> dict[str, dict[str, Obj]]:
        """Owned by the parent's uid (controller ref), in the parent's namespace only
        (all namespaces for a cluster-scoped parent); a decorator's also carry its annotation."""
        ns = parent["metadata"].get("namespace") or None
        uid = parent["metadata"]["uid"]
        out: dict[str, dict[str, Obj]] = {}
        for c in self.child_specs(ctrl):
            kind = RESOURCES[c["resource"]]
            group = out.setdefault(group_key(c["apiVersion"], kind), {})
            for o in self.cache.list(kind, ns):
                ref = controller_ref(o)
                if ref is None or ref.get("uid") != uid:
                    continue
                if ctrl["kind"] == "DecoratorController" and (
                        (o["metadata"].get("annotations") or {}).get(DECORATOR_ANNOTATION) != self.name(ctrl)):
                    continue
                group[qualified_name(o)] = o
        return out

    def manage_children(self, ctrl: Obj, parent: Obj, observed: dict[str, dict[str, Obj]], desired: list[Obj]) -> None:
        errors: list[str] = []
        want: dict[str, dict[str, Obj]] = {}
        for d in desired:
            want.setdefault(group_key(d["apiVersion"], d["kind"]), {})[qualified_name(d)] = d
        for gk, group in observed.items():
            for name, o in group.items():
                if o["metadata"].get("deletionTimestamp") or name in want.get(gk, {}):
                    continue
                try:
                    self.store.delete(o["kind"], o["metadata"]["name"], namespace_of(o), uid=o["metadata"]["uid"])
                except NotFound:
                    pass
                except ApiError as e:
                    errors.append(f"can't delete {o['kind']} {name}: {e}")
        for gk, group in want.items():
            for name, d in group.items():
                try:
                    self._apply_child(ctrl, parent, observed.get(gk, {}).get(name), d)
                except ApiError as e:
                    errors.append(f"{d['kind']} {name}: {e}")
        if errors:
            raise ValueError("can't reconcile children: " + "; ".join(errors))

    def _apply_child(self, ctrl: Obj, parent: Obj, observed: Obj | None, desired: Obj) -> None:
        """DynamicApply.Apply: create (AlreadyExists ignored) or update by updateStrategy."""
        if observed is None:
            desired = copy.deepcopy(desired)
            set_last_applied(desired, copy.deepcopy(desired))
            refs = desired["metadata"].setdefault("ownerReferences", [])
            if not any(r.get("uid") == parent["metadata"]["uid"] for r in refs):
                refs.append({"apiVersion": parent["apiVersion"], "kind": parent["kind"],
                             "name": parent["metadata"]["name"], "uid": parent["metadata"]["uid"],
                             "controller": True, "blockOwnerDeletion": True})
            try:
                self.store.create(desired)
            except AlreadyExists:
                pass  # not turned into an update: the next sync sees it (or never, if not ours)
            return
        new = apply_update(observed, desired)
        if new == observed or observed["metadata"].get("deletionTimestamp"):
            return
        method = self.strategy(ctrl, desired["kind"])
        if method == "OnDelete":
            return
        if method in ("Recreate", "RollingRecreate"):
            try:  # deleted now, created by a later sync
                self.store.delete(observed["kind"], observed["metadata"]["name"], namespace_of(observed),
                                  uid=observed["metadata"]["uid"])
            except NotFound:
                pass
            return
        if method in ("InPlace", "RollingInPlace"):
            try:
                self.store.update(new)
            except (NotFound, Conflict):
                pass
            return
        raise ValueError(f"invalid update strategy for {desired['kind']}: unknown method {method!r}")

    # -- CompositeController (composite/controller.go syncParentObject) ---------------------------------
    def _sync_finalizer(self, ctrl: Obj, parent: Obj) -> Obj:
        """finalizer/finalizer.go SyncObject: present iff there is a finalize hook (never added while deleting)."""
        md = parent["metadata"]
        fin, wanted = self.finalizer(ctrl), "finalize" in ctrl["spec"].get("hooks", {})
        have = fin in (md.get("finalizers") or [])
        if have == wanted or (wanted and md.get("deletionTimestamp")):
            return parent
        if wanted:
            updated = self.store.patch_metadata(parent["kind"], md["name"], namespace_of(parent),
                                                finalizers=[*(md.get("finalizers") or []), fin])
        else:
            self.store.remove_finalizer(parent["kind"], md["name"], namespace_of(parent), fin)
            updated = self.store.get(parent["kind"], md["name"], namespace_of(parent))
        if updated is None:
            raise NotFound(f"{parent['kind']} {md['name']} is gone")
        return {**updated, "kind": parent["kind"], "apiVersion": parent["apiVersion"]}

    def _should_manage(self, ctrl: Obj, parent: Obj) -> bool:
        """Children are managed while alive, or while finalizing with our finalizer held (ShouldFinalize)."""
        md = parent["metadata"]
        if not md.get("deletionTimestamp"):
            return True
        fins = md.get("finalizers") or []
        return ("finalize" in ctrl["spec"].get("hooks", {}) and self.finalizer(ctrl) in fins
                and not {"foregroundDeletion", "orphan"} & set(fins))

    @staticmethod
    def _default_namespaces(children: list[Obj], parent: Obj) -> list[Obj]:
        """applyNamespaceDefaults: the parent's namespace, "" for a cluster-scoped parent."""
        out = []
        for c in children:
            c = copy.deepcopy(c)
            md = c.setdefault("metadata", {})
            if not md.get("namespace"):
                ns = parent["metadata"].get("namespace", "")
                if ns:
                    md["namespace"] = ns
                else:
                    md.pop("namespace", None)
            out.append(c)
        return out

    def sync_composite(self, ctrl: Obj, parent: Obj) -> None:
        spec = ctrl["spec"]
        hooks = spec.get("hooks", {})
        parent = self._sync_finalizer(ctrl, parent)
        md = parent["metadata"]
        children = self.observed_children(ctrl, parent)
        related = self.related(ctrl, parent)
        finalizing = "finalize" in hooks and bool(md.get("deletionTimestamp"))
        resp = self.call(ctrl, "finalize" if finalizing else "sync", {
            "controller": ctrl, "parent": parent, "children": children, "related": related,
            "finalizing": finalizing}, "composite")
        desired = self._default_namespaces(resp.get("children") or [], parent)
        if float(resp.get("resyncAfterSeconds") or 0) > 0:
            self.enqueue(ctrl, parent, after=float(resp["resyncAfterSeconds"]))
        if resp.get("finalized"):
            self.store.remove_finalizer(parent["kind"], md["name"], namespace_of(parent), self.finalizer(ctrl))
        if spec.get("generateSelector"):
            for c in desired:
                c["metadata"].setdefault("labels", {}).setdefault("controller-uid", md["uid"])
        manage_error = None
        if self._should_manage(ctrl, parent):
            try:
                self.manage_children(ctrl, parent, children, desired)
            except ValueError as e:
                manage_error = e
        status = dict(resp.get("status") or {})
        status["observedGeneration"] = md.get("generation", 1)
        current = self.store.get(parent["kind"], md["name"], namespace_of(parent))
        if current is not None and current["metadata"]["uid"] == md["uid"]:
            try:
                self.store.set_status(parent["kind"], md["name"], namespace_of(parent), status)
            except (NotFound, Conflict):
                pass
        if manage_error:
            raise manage_error

    # -- DecoratorController (decorator/controller.go syncParentObject) --------------------------------
    def sync_decorator(self, ctrl: Obj, target: Obj) -> None:
        hooks = ctrl["spec"].get("hooks", {})
        if not self.is_parent(ctrl, target):
            return
        target = self._sync_finalizer(ctrl, target)
        if not self.is_parent(ctrl, target):
            return
        md = target["metadata"]
        attachments = self.observed_children(ctrl, target)
        related = self.related(ctrl, target)
        finalizing = "finalize" in hooks and (bool(md.get("deletionTimestamp")) or not self.selects(ctrl, target))
        resp = self.call(ctrl, "finalize" if finalizing else "sync", {
            "controller": ctrl, "object": target, "attachments": attachments, "related": related,
            "finalizing": finalizing}, "decorator")
        desired = self._default_namespaces(resp.get("attachments") or [], target)
        if float(resp.get("resyncAfterSeconds") or 0) > 0:
            self.enqueue(ctrl, target, after=float(resp["resyncAfterSeconds"]))
        new = copy.deepcopy(target)
        changed = False
        for mk in ("labels", "annotations"):
            cur = dict(new["metadata"].get(mk) or {})
            for k, v in (resp.get(mk) or {}).items():
                if v is None:
                    changed |= cur.pop(k, None) is not None
                elif cur.get(k) != v:
                    cur[k] = v
                    changed = True
            new["metadata"][mk] = cur
        status = resp.get("status")
        status_changed = status is not None and status != target.get("status")
        fin = self.finalizer(ctrl)
        remove_fin = bool(resp.get("finalized")) and fin in (md.get("finalizers") or [])
        if changed or status_changed or remove_fin:
            try:
                if status_changed and status is not None:
                    updated = self.store.set_status(target["kind"], md["name"], namespace_of(target), status)
                    if updated:
                        new["metadata"]["resourceVersion"] = updated["metadata"]["resourceVersion"]
                if remove_fin:
                    new["metadata"]["finalizers"] = [f for f in md.get("finalizers") or [] if f != fin]
                self.store.update(new)  # a PUT of the cached object: stale → Conflict, retried on the next event
            except (NotFound, Conflict):
                return
        for a in desired:
            a["metadata"].setdefault("annotations", {})[DECORATOR_ANNOTATION] = self.name(ctrl)
        if self._should_manage(ctrl, target):
            self.manage_children(ctrl, target, attachments, desired)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


__all__ = ["KINDS", "Metacontroller", "HookError", "load_controllers", "METACONTROLLER_USER"]
