"""The Metacontroller stand-in is as strict as Metacontroller v4.17 where our hooks can tell.

Each test pins one behaviour of the real Metacontroller (the file it comes
from is named) against scripted hooks served over HTTP, on the in-memory
store (fast) or, where the API server's own rules matter, on the real one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from devstack.cluster import Cluster
from devstack.metacontroller import DECORATOR_ANNOTATION, METACONTROLLER_USER, Metacontroller
from devstack.three_way import LAST_APPLIED, apply_update

Obj = dict[str, Any]
V1 = "ai.deckhouse.io/v1alpha1"


class ScriptedHooks:
    """An HTTP hook service whose answers are Python functions of the request, per path."""

    def __init__(self) -> None:
        self.answers: dict[str, Callable[[Obj], Obj]] = {}
        self.requests: list[tuple[str, Obj]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body))
                answer = outer.answers.get(self.path, lambda _: {})(body)
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> list[Obj]:
        return [b for p, b in self.requests if p == path]


@pytest.fixture
def hooks() -> Iterator[ScriptedHooks]:
    h = ScriptedHooks()
    yield h
    h.server.shutdown()
    h.server.server_close()


def hook(path: str) -> Obj:
    return {"version": "v2", "webhook": {"url": f"http://hooks.invalid{path}"}}


def composite(parent: str = "models", children: list[Obj] | None = None, *, finalize: bool = False,
              customize: bool = False, resync: int | None = None) -> Obj:
    hooks_ = {"sync": hook("/sync")}
    if finalize:
        hooks_["finalize"] = hook("/finalize")
    if customize:
        hooks_["customize"] = hook("/customize")
    spec: Obj = {"generateSelector": True, "parentResource": {"apiVersion": V1, "resource": parent},
                 "childResources": children if children is not None else [
                     {"apiVersion": "v1", "resource": "secrets", "updateStrategy": {"method": "InPlace"}}],
                 "hooks": hooks_}
    if resync:
        spec["resyncPeriodSeconds"] = resync
    return {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "CompositeController",
            "metadata": {"name": "test-composite"}, "spec": spec}


def decorator(*, customize: bool = False) -> Obj:
    hooks_ = {"sync": hook("/dsync")}
    if customize:
        hooks_["customize"] = hook("/customize")
    return {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "DecoratorController",
            "metadata": {"name": "test-decorator"},
            "spec": {"resources": [{"apiVersion": "apps/v1", "resource": "deployments",
                                    "annotationSelector": {"matchExpressions": [{"key": "pick-me", "operator": "Exists"}]}}],
                     "attachments": [{"apiVersion": "v1", "resource": "secrets", "updateStrategy": {"method": "InPlace"}}],
                     "hooks": hooks_}}


def ns(c: Cluster, *names: str) -> None:
    for n in names:
        c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}})


def model(name: str = "m", namespace: str = "a") -> Obj:
    return {"apiVersion": V1, "kind": "Model", "metadata": {"name": name, "namespace": namespace},
            "spec": {"source": {"upload": {}}}}


def secret(name: str, namespace: str | None, **md: Any) -> Obj:
    meta: Obj = {"name": name, **md}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": {"k": "dg=="}}


def deployment(name: str = "w", namespace: str = "a") -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "annotations": {"pick-me": "yes"}},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}


def run(mc: Metacontroller, seconds: float = 0.0, until: Callable[[], bool] | None = None,
        timeout: float = 30.0) -> None:
    """Step the stand-in (at least once) for ``seconds``, or until ``until`` holds (else fail)."""
    deadline = time.monotonic() + (timeout if until else seconds)
    while True:
        mc.step()
        if until and until():
            return
        if time.monotonic() >= deadline:
            assert until is None, f"not reached in {timeout}s; hook calls {dict(mc.hook_calls)}, errors {mc.errors}"
            return
        time.sleep(0.02)


def owner(parent: Obj) -> Obj:
    md = parent["metadata"]
    return {"apiVersion": parent["apiVersion"], "kind": parent["kind"], "name": md["name"], "uid": md["uid"],
            "controller": True}


# -- request shapes (composite/api/v2/hooks.go, decorator/api/v2/hooks.go) ----------------------------


def test_composite_v2_request_has_parent_children_related_finalizing(hooks):
    c = Cluster()
    ns(c, "a")
    c.create(model())
    mc = Metacontroller(c, hooks.url, [composite(customize=True)])
    run(mc)
    [body] = hooks.bodies("/sync")
    assert set(body) == {"controller", "parent", "children", "related", "finalizing"}
    assert body["children"] == {"Secret.v1": {}} and body["finalizing"] is False


def test_decorator_v2_request_has_object_and_attachments(hooks):
    c = Cluster()
    ns(c, "a")
    c.create(deployment())
    mc = Metacontroller(c, hooks.url, [decorator()])
    run(mc)
    [body] = hooks.bodies("/dsync")
    assert set(body) == {"controller", "object", "attachments", "related", "finalizing"}
    assert body["object"]["metadata"]["name"] == "w" and body["attachments"] == {"Secret.v1": {}}


# -- strict decoding (pkg/hooks/webhook.go: UnmarshalStrict, strict by default for v2) ----------------


def test_an_unknown_key_in_a_v2_response_fails_the_sync_and_applies_nothing(hooks):
    c = Cluster()
    ns(c, "a")
    c.create(model())
    hooks.answers["/sync"] = lambda _: {"status": {"phase": "X"}, "children": [secret("s", None)],
                                        "resyncAfter": 5}
    mc = Metacontroller(c, hooks.url, [composite()])
    run(mc)
    assert any("unknown field" in e and "resyncAfter" in e for e in mc.errors), mc.errors
    assert c.list("Secret", "a") == []
    assert c.get("Model", "m", "a")["status"] == {}


def test_an_unknown_field_in_a_related_rule_fails_the_customize_call(hooks):
    c = Cluster()
    ns(c, "a")
    c.create(model())
    hooks.answers["/customize"] = lambda _: {"relatedResources": [
        {"apiVersion": "v1", "resource": "secrets", "namespaces": ["a"]}]}
    mc = Metacontroller(c, hooks.url, [composite(customize=True)])
    run(mc)
    assert any("namespaces" in e for e in mc.errors), mc.errors
    assert hooks.bodies("/sync") == []


# -- namespaces (composite/controller.go claimChildren, hooks.go applyNamespaceDefaults) -----------------


def test_a_namespaced_parent_sees_only_children_in_its_namespace(hooks):
    c = Cluster()
    ns(c, "a", "b")
    m = c.create(model())
    c.create(secret("mine", "a", ownerReferences=[owner(m)]))
    c.create(secret("elsewhere", "b", ownerReferences=[owner(m)]))
    mc = Metacontroller(c, hooks.url, [composite()])
    run(mc)
    assert list(hooks.bodies("/sync")[0]["children"]["Secret.v1"]) == ["a/mine"]


def test_children_default_to_the_parents_namespace_and_a_cluster_parent_gives_none(hooks):
    c = Cluster()
    ns(c, "a")
    c.create(model())
    c.create({"apiVersion": V1, "kind": "ClusterModel", "metadata": {"name": "cm"}, "spec": {}})
    hooks.answers["/sync"] = lambda _: {"children": [secret("child", None)]}
    mc = Metacontroller(c, hooks.url, [composite(), composite("clustermodels")
                                       | {"metadata": {"name": "test-cluster"}}])
    run(mc)
    assert [s["metadata"]["namespace"] for s in c.list("Secret")] == ["a"]
    assert any("namespace is required" in e for e in mc.errors), mc.errors


def test_a_related_rule_without_namespace_searches_every_namespace_in_v2(hooks):
    c = Cluster()
    ns(c, "a", "b")
    c.create(model())
    c.create(secret("here", "a", labels={"pick": "1"}))
    c.create(secret("there", "b", labels={"pick": "1"}))
    hooks.answers["/customize"] = lambda _: {"relatedResources": [
        {"apiVersion": "v1", "resource": "secrets", "labelSelector": {"matchLabels": {"pick": "1"}}},
        {"apiVersion": "v1", "resource": "configmaps", "namespace": "b", "names": ["cfg"]}]}
    c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "a"}})
    c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "b"}})
    mc = Metacontroller(c, hooks.url, [composite(customize=True)])
    run(mc)
    related = hooks.bodies("/sync")[0]["related"]
    assert sorted(related["Secret.v1"]) == ["a/here", "b/there"]
    assert list(related["ConfigMap.v1"]) == ["b/cfg"]


# -- decorator attachments and creates (decorator/controller.go getChildren, manage_children.go) ------


def test_decorator_attachments_need_its_annotation_and_a_create_conflict_is_not_an_update(hooks):
    c = Cluster()
    ns(c, "a")
    w = c.create(deployment())
    c.create(secret("foreign", "a", ownerReferences=[owner(w)]))  # owned, but not by this decorator
    c.create(secret("taken", "a"))  # someone else's, in the way
    hooks.answers["/dsync"] = lambda _: {"attachments": [
        {**secret("taken", None), "data": {"k": "bmV3"}}, secret("fresh", None)]}
    mc = Metacontroller(c, hooks.url, [decorator()])
    run(mc)
    assert hooks.bodies("/dsync")[0]["attachments"] == {"Secret.v1": {}}
    assert c.get("Secret", "taken", "a")["data"] == {"k": "dg=="}  # untouched
    assert c.get("Secret", "foreign", "a") is not None  # not ours: never deleted either
    fresh = c.get("Secret", "fresh", "a")
    assert fresh["metadata"]["annotations"][DECORATOR_ANNOTATION] == "test-decorator"
    run(mc, until=lambda: len(hooks.bodies("/dsync")) >= 2)
    assert list(hooks.bodies("/dsync")[-1]["attachments"]["Secret.v1"]) == ["a/fresh"]
    assert mc.errors == []


# -- wake-ups (composite/controller.go event handlers, customize/manager.go onRelated*) ---------------


def test_only_own_child_related_events_and_resyncs_wake_a_parent(hooks):
    c = Cluster()
    ns(c, "a", "b")
    m = c.create(model())
    hooks.answers["/customize"] = lambda _: {"relatedResources": [
        {"apiVersion": "v1", "resource": "configmaps", "namespace": "a", "names": ["watched"]}]}
    mc = Metacontroller(c, hooks.url, [composite(customize=True)])
    run(mc, 0.3)  # the first sync writes status; that event syncs once more (updateParentObject)
    settled = mc.count(hook="sync")
    assert settled == 2
    c.create(secret("noise", "b"))  # unrelated: another namespace, no owner
    c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": "a"}})
    run(mc, 0.3)
    assert mc.count(hook="sync") == settled
    # A child: its creation wakes the parent, whose sync deletes it (not desired), which wakes it again.
    c.create(secret("child", "a", ownerReferences=[owner(m)]))
    run(mc, 0.3)
    assert c.get("Secret", "child", "a") is None and mc.count(hook="sync") == settled + 2
    c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched", "namespace": "a"}})
    run(mc, 0.3)
    assert mc.count(hook="sync") == settled + 3
    hooks.answers["/sync"] = lambda _: {"resyncAfterSeconds": 1.0}
    c.patch_metadata("Model", "m", "a", labels={"touch": "1"})  # own event
    run(mc, until=lambda: mc.count(hook="sync") == settled + 4)
    hooks.answers["/sync"] = lambda _: {}
    run(mc, until=lambda: mc.count(hook="sync") == settled + 5)  # resyncAfterSeconds
    run(mc, 1.5)
    assert mc.count(hook="sync") == settled + 5
    assert mc.count(hook="customize") == 1  # cached per uid + generation; labels do not move it


def test_resync_period_wakes_every_parent(hooks):
    c = Cluster()
    ns(c, "a")
    c.create(model("one"))
    c.create(model("two"))
    mc = Metacontroller(c, hooks.url, [composite(resync=1)])
    run(mc, 0.3)  # each: the first sync, then the one its status write wakes
    assert mc.count(parent="a/one") == 2 and mc.count(parent="a/two") == 2
    run(mc, until=lambda: mc.count(hook="sync") == 6)  # the informer resync: every parent once more
    assert mc.count(parent="a/one") == 3 and mc.count(parent="a/two") == 3


# -- stale reads (informers) ------------------------------------------------------------------------


def test_reads_come_from_a_cache_that_may_lag(hooks):
    c = Cluster()
    ns(c, "a")
    c.create(model())
    ctrl = composite()
    mc = Metacontroller(c, hooks.url, [ctrl], lag=2.0)
    run(mc, 0.5)
    assert mc.count() == 0  # the informer has not seen the Model yet
    run(mc, until=lambda: mc.count() == 1)
    # The hook asks for a child, which is created; a sync right after still sees none
    # (the cache lags), asks again, and the create's AlreadyExists is ignored.
    hooks.answers["/sync"] = lambda _: {"children": [secret("s", None)]}
    parent = mc.cache.get("Model", "m", "a")
    mc.sync_composite(ctrl, parent)
    assert c.get("Secret", "s", "a") is not None
    mc.sync_composite(ctrl, parent)
    assert hooks.bodies("/sync")[-1]["children"] == {"Secret.v1": {}}
    assert mc.errors == [] and len(c.list("Secret", "a")) == 1


# -- update strategies (manage_children.go DynamicApply, pkg/dynamic/apply) --------------------------


def test_update_strategies_on_delete_recreate_and_in_place_three_way_merge(hooks):
    c = Cluster()
    ns(c, "a")
    c.create(model())
    version = {"v": "1"}

    def desired(_: Obj) -> Obj:
        return {"children": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ondelete"}, "data": version},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "recreate"},
             "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": [version["v"]]}]},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "inplace", "labels": {"v": version["v"]}},
             "data": {"k": "dg=="}}]}

    hooks.answers["/sync"] = desired
    ctrl = composite(children=[
        {"apiVersion": "v1", "resource": "configmaps", "updateStrategy": {"method": "OnDelete"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "resource": "roles", "updateStrategy": {"method": "Recreate"}},
        {"apiVersion": "v1", "resource": "secrets", "updateStrategy": {"method": "InPlace"}}])
    mc = Metacontroller(c, hooks.url, [ctrl])
    run(mc, until=lambda: c.get("Secret", "inplace", "a") is not None)
    role_uid = c.get("Role", "recreate", "a")["metadata"]["uid"]
    # Someone else adds a label to the Secret: the three-way merge keeps it.
    c.patch_metadata("Secret", "inplace", "a", labels={"v": "1", "other": "kept"})
    version["v"] = "2"
    c.patch_metadata("Model", "m", "a", labels={"bump": "1"})
    run(mc, until=lambda: c.get("Secret", "inplace", "a")["metadata"]["labels"].get("v") == "2"
        and (c.get("Role", "recreate", "a") or {}).get("metadata", {}).get("uid", role_uid) != role_uid)
    assert c.get("Secret", "inplace", "a")["metadata"]["labels"] == {"v": "2", "other": "kept", "controller-uid":
                                                                     c.get("Model", "m", "a")["metadata"]["uid"]}
    assert c.get("ConfigMap", "ondelete", "a")["data"] == {"v": "1"}
    assert c.get("Role", "recreate", "a")["rules"][0]["resourceNames"] == ["2"]


def test_three_way_merge_keeps_fields_others_set_and_drops_what_we_stopped_asking_for():
    observed = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "uid": "u", "resourceVersion": "7",
                "annotations": {LAST_APPLIED: json.dumps({"spec": {"ports": [{"port": 80, "name": "http"}],
                                                                    "selector": {"a": "1", "old": "x"}}})}},
                "spec": {"clusterIP": "10.0.0.9", "ports": [{"port": 80, "name": "http", "protocol": "TCP"}],
                         "selector": {"a": "1", "old": "x"}}, "status": {"lb": {}}}
    desired = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"ports": [{"port": 80, "name": "web"}, {"port": 81, "name": "x"}], "selector": {"a": "1"}}}
    new = apply_update(observed, desired)
    assert new["spec"]["clusterIP"] == "10.0.0.9"  # the API server's default survives
    assert new["spec"]["ports"] == [{"port": 80, "name": "web", "protocol": "TCP"}, {"port": 81, "name": "x"}]
    assert new["spec"]["selector"] == {"a": "1"}
    assert new["metadata"]["uid"] == "u" and new["metadata"]["resourceVersion"] == "7" and new["status"] == {"lb": {}}


# -- the real API server's rules, as Metacontroller's service account ----------------------------------


def test_writes_go_through_rbac_as_metacontroller(kube, kube_namespace, hooks):
    """deploy/rbac/metacontroller.yaml decides: a child kind it does not grant is refused."""
    from devstack.kubestore import KubeStore

    # The session's control plane is shared: one field manager for our manifests, as the other tests use.
    kube.kubectl("apply", "--server-side", "--field-manager=ai-models-tests", "--force-conflicts", "-k", "crds")
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    kube.kubectl("apply", "--server-side", "--field-manager=ai-models-tests", "--force-conflicts",
                 "-f", "deploy/rbac/metacontroller.yaml")
    admin = KubeStore(kube.api_client())
    admin.watch(["Model", "Pod", "Secret"])
    try:
        admin.create(model("rbac", kube_namespace))
        hooks.answers["/sync"] = lambda _: {"children": [
            secret("allowed", None),
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "refused"},
             "spec": {"containers": [{"name": "c", "image": "i"}]}}]}
        ctrl = composite(children=[{"apiVersion": "v1", "resource": "secrets"}, {"apiVersion": "v1", "resource": "pods"}])
        mc = Metacontroller(admin.as_user(METACONTROLLER_USER), hooks.url, [ctrl])
        run(mc, until=lambda: admin.get("Secret", "allowed", kube_namespace) is not None and bool(mc.errors))
        assert admin.get("Pod", "refused", kube_namespace) is None
        assert any("403" in e and "pods" in e for e in mc.errors), mc.errors
        # The status subresource, written as Metacontroller, carries observedGeneration.
        assert admin.get("Model", "rbac", kube_namespace)["status"]["observedGeneration"] == 1
    finally:
        admin.stop()
