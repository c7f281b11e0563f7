"""The ``Store`` of the stand-ins on a real kube-apiserver.

Requests go through the ``kubernetes`` client's connection pool (its
kubeconfig: CA, admin client certificate) as plain REST calls on JSON, so
every rule of the real server applies: admission (our mutating webhook,
NamespaceLifecycle, ServiceAccount, Pod Security), RBAC when a view
impersonates someone (``as_user``), the status subresource, optimistic
concurrency, defaulting, the garbage collector. One watch stream per kind
(list, then watch from its resourceVersion, re-listing on 410 Gone) feeds an
ordered event log shared by every view.
"""

from __future__ import annotations

import builtins
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import urllib3

from devstack.store import CLUSTER_SCOPED, KINDS, Conflict, Event, NotFound, Obj, error_for

SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                   "deletionGracePeriodSeconds", "managedFields", "selfLink")


def _path(kind: str, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
    r = KINDS[kind]
    base = f"/api/{r.api_version}" if "/" not in r.api_version else f"/apis/{r.api_version}"
    if r.namespaced and namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{r.plural}"
    if name:
        base += f"/{name}"
    if sub:
        base += f"/{sub}"
    return base


@dataclass
class _Shared:
    """What every view of one API server shares: the event log and the watch threads."""

    log: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    synced: set[str] = field(default_factory=set)


@dataclass
class KubeStore:
    api_client: Any  # kubernetes.client.ApiClient (admin)
    user: str | None = None
    groups: tuple[str, ...] = ()
    field_manager: str = "kubectl"
    shared: _Shared = field(default_factory=_Shared)

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def _pool(self) -> urllib3.PoolManager:
        return self.api_client.rest_client.pool_manager

    def _headers(self, content_type: str = "application/json") -> urllib3.HTTPHeaderDict:
        h = urllib3.HTTPHeaderDict({"Accept": "application/json", "Content-Type": content_type})
        if self.user:
            # A service account user gets its groups from the server; others may name theirs.
            h["Impersonate-User"] = self.user
            for g in self.groups:
                h.add("Impersonate-Group", g)
        return h

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
                content_type: str = "application/json", timeout: float = 30) -> Obj:
        url = self.api_client.configuration.host + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        r = self._pool.request(method, url, body=data, headers=self._headers(content_type),
                               timeout=urllib3.Timeout(total=timeout), retries=False)
        payload = json.loads(r.data) if r.data else {}
        if not 200 <= r.status < 300:
            raise error_for(r.status, payload.get("reason", ""), payload.get("message", r.data.decode()[:500]))
        return payload

    def as_user(self, user: str, groups: tuple[str, ...] = ()) -> KubeStore:
        """A view writing (and reading) as ``user``: RBAC and admission judge it as that identity."""
        return KubeStore(self.api_client, user, groups, self.field_manager, self.shared)

    # -- reads -----------------------------------------------------------------------------------
    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        try:
            return self._typed(kind, self.request("GET", _path(kind, namespace or "default", name)))
        except NotFound:
            return None

    def list(self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> list[Obj]:
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        items = self.request("GET", _path(kind, namespace), query=query).get("items") or []
        return sorted((self._typed(kind, o) for o in items),
                      key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    @staticmethod
    def _typed(kind: str, obj: Obj) -> Obj:
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", KINDS[kind].api_version)
        return obj

    # -- writes ----------------------------------------------------------------------------------
    def create(self, obj: Obj) -> Obj:
        ns = obj["metadata"].get("namespace") if obj["kind"] not in CLUSTER_SCOPED else None
        if KINDS[obj["kind"]].namespaced and not ns:
            # What client-go does with an empty namespace: POST to the cluster-wide collection.
            return self.request("POST", _path(obj["kind"]), obj)
        return self._typed(obj["kind"], self.request("POST", _path(obj["kind"], ns), obj))

    def update(self, obj: Obj) -> Obj:
        md = obj["metadata"]
        return self._typed(obj["kind"], self.request("PUT", _path(obj["kind"], md.get("namespace"), md["name"]), obj))

    def apply(self, obj: Obj) -> Obj:
        """Server-side apply, forced, as ``kubectl apply --server-side --force-conflicts``."""
        obj = json.loads(json.dumps(obj))
        md = obj.setdefault("metadata", {})
        for f in SERVER_METADATA:
            md.pop(f, None)
        obj.pop("status", None)
        ns = md.setdefault("namespace", "default") if obj["kind"] not in CLUSTER_SCOPED else None
        return self._typed(obj["kind"], self.request(
            "PATCH", _path(obj["kind"], ns, md["name"]), obj,
            query={"fieldManager": self.field_manager, "force": "true"}, content_type="application/apply-patch+yaml"))

    def delete(self, kind: str, name: str, namespace: str = "", uid: str | None = None,
               grace_period: int | None = None) -> None:
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        if grace_period is not None:
            body["gracePeriodSeconds"] = grace_period
        self.request("DELETE", _path(kind, namespace or "default", name), body)

    def set_status(self, kind: str, name: str, namespace: str, status: Obj) -> Obj | None:
        for _ in range(20):
            cur = self.get(kind, name, namespace)
            if cur is None:
                return None
            if cur.get("status") == status:
                return cur
            cur["status"] = status
            try:
                return self.request("PUT", _path(kind, namespace or "default", name, "status"), cur)
            except Conflict:
                continue
            except NotFound:
                return None
        raise Conflict(f"status of {kind} {namespace}/{name}: too many conflicts")

    def patch_metadata(self, kind: str, name: str, namespace: str, **changes: Any) -> Obj | None:
        try:
            return self.request("PATCH", _path(kind, namespace or "default", name), {"metadata": changes},
                                content_type="application/merge-patch+json")
        except NotFound:
            return None

    def remove_finalizer(self, kind: str, name: str, namespace: str, finalizer: str) -> None:
        for _ in range(20):
            cur = self.get(kind, name, namespace)
            if cur is None or finalizer not in (cur["metadata"].get("finalizers") or []):
                return
            cur["metadata"]["finalizers"] = [f for f in cur["metadata"]["finalizers"] if f != finalizer]
            try:
                self.update(cur)
                return
            except Conflict:
                continue
            except NotFound:
                return

    def bind(self, pod: Obj, node: str) -> None:
        md = pod["metadata"]
        self.request("POST", _path("Pod", md["namespace"], md["name"], "binding"), {
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": md["name"], "namespace": md["namespace"], "uid": md.get("uid")},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}})

    # -- watches ---------------------------------------------------------------------------------
    def in_cluster(self) -> tuple[str, int]:
        u = urllib.parse.urlsplit(self.api_client.configuration.host)
        return u.hostname or "127.0.0.1", u.port or 443

    def service_account_token(self, namespace: str, account: str, pod: Obj, expiration: int) -> str:
        md = pod["metadata"]
        spec: Obj = {"expirationSeconds": expiration}
        if md.get("uid"):  # a stored Pod: bound to it, as the kubelet's tokens are
            spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": md["uid"]}
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        r = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", body)
        return str(r["status"]["token"])

    def events_since(self, cursor: int) -> tuple[int, builtins.list[Event]]:
        with self.shared.lock:
            return len(self.shared.log), self.shared.log[cursor:]

    def watch(self, kinds: builtins.list[str], timeout: float = 60) -> None:
        """Start one list+watch per kind (idempotent); returns when each has listed once."""
        for kind in kinds:
            if any(t.name == f"watch-{kind}" for t in self.shared.threads):
                continue
            t = threading.Thread(target=self._watch_loop, args=(kind,), name=f"watch-{kind}", daemon=True)
            self.shared.threads.append(t)
            t.start()
        deadline = time.monotonic() + timeout
        while not all(k in self.shared.synced for k in kinds):
            if time.monotonic() > deadline:
                raise TimeoutError(f"watches not synced: {sorted(set(kinds) - self.shared.synced)}")
            time.sleep(0.05)

    def stop(self) -> None:
        """End the watches and drop their connections (an API server drains open watches slowly)."""
        self.shared.stop.set()
        self._pool.clear()

    def _append(self, type_: str, obj: Obj) -> None:
        with self.shared.lock:
            self.shared.log.append(Event(type_, obj))

    def _watch_loop(self, kind: str) -> None:
        known: dict[tuple[str, str], Obj] = {}
        while not self.shared.stop.is_set():
            try:
                listing = self.request("GET", _path(kind))
                fresh = {}
                for o in listing.get("items") or []:
                    o = self._typed(kind, o)
                    k = (o["metadata"].get("namespace", ""), o["metadata"]["name"])
                    fresh[k] = o
                    if known.get(k, {}).get("metadata", {}).get("resourceVersion") != o["metadata"]["resourceVersion"]:
                        self._append("ADDED" if k not in known else "MODIFIED", o)
                for k, o in known.items():
                    if k not in fresh:
                        self._append("DELETED", o)
                known = fresh
                self.shared.synced.add(kind)
                self._stream(kind, listing["metadata"]["resourceVersion"], known)
            except Exception:  # a watch restarts on any failure, as an informer does
                if self.shared.stop.wait(0.5):
                    return

    def _stream(self, kind: str, rv: str, known: dict[tuple[str, str], Obj]) -> None:
        while not self.shared.stop.is_set():
            url = self.api_client.configuration.host + _path(kind) + "?" + urllib.parse.urlencode(
                {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "30"})
            r = self._pool.request("GET", url, headers=self._headers(), preload_content=False,
                                   timeout=urllib3.Timeout(connect=10, read=45), retries=False)
            try:
                if r.status != 200:
                    return
                buf = b""
                for chunk in r.stream(65536):
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        o = ev["object"]
                        if ev["type"] == "ERROR":
                            return  # 410 Gone and friends: list again
                        rv = o["metadata"]["resourceVersion"]
                        if ev["type"] == "BOOKMARK":
                            continue
                        o = self._typed(kind, o)
                        k = (o["metadata"].get("namespace", ""), o["metadata"]["name"])
                        if ev["type"] == "DELETED":
                            known.pop(k, None)
                        else:
                            known[k] = o
                        self._append(ev["type"], o)
                    if self.shared.stop.is_set():
                        return
            finally:
                r.release_conn()

