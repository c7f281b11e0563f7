"""The workload DecoratorController hooks, called the way Metacontroller v2 calls them."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import kubernetes_validate
import pytest

from hooks.app import create_app
from hooks.workload import RESYNC_AFTER_WRITE
from lib import credentials, delivery
from lib.config import Config
from lib.delivery import ANNOTATION_BLOCKED, ANNOTATION_RESOLUTION

CONFIG = Config(registry="dmcr.test:5000", signing_key=b"test-signing-key" * 2)
K8S = "1.37"
DECORATOR_RESPONSE_KEYS = {"labels", "annotations", "status", "attachments", "resyncAfterSeconds", "finalized"}
CONTROLLER = {
    "apiVersion": "metacontroller.k8s.io/v1alpha1",
    "kind": "DecoratorController",
    "metadata": {"name": "ai-models-workloads"},
    "spec": {"resources": [{"apiVersion": "apps/v1", "resource": "deployments"}]},
}


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def model(name: str, namespace: str | None = "ai-demo", *, phase: str = "Ready", seed: str = "",
          family: str = "llama", size: int = 1 << 30) -> dict[str, Any]:
    kind = "Model" if namespace else "ClusterModel"
    repo = (f"ai-models/catalog/namespaced/{namespace}/{name}/uid-{name}" if namespace
            else f"ai-models/catalog/cluster/{name}/uid-{name}")
    d = digest(seed or name)
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    if namespace:
        meta["namespace"] = namespace
    obj: dict[str, Any] = {"apiVersion": "ai.deckhouse.io/v1alpha1", "kind": kind, "metadata": meta,
                           "spec": {"source": {"url": f"https://huggingface.co/acme/{name}"}},
                           "status": {"phase": phase}}
    if phase == "Ready":
        obj["status"]["artifact"] = {"uri": f"dmcr.test:5000/{repo}@{d}", "digest": d, "sizeBytes": size,
                                     "mediaType": "application/vnd.oci.image.manifest.v1+json"}
        obj["status"]["resolved"] = {"format": "GGUF", "family": family}
    return obj


def workload(kind: str = "Deployment", name: str = "embedder", *, model_names: str | None = None,
             cluster_names: str | None = None, extra: dict[str, str] | None = None) -> dict[str, Any]:
    annotations = dict(extra or {})
    if model_names is not None:
        annotations["ai.deckhouse.io/model"] = model_names
    if cluster_names is not None:
        annotations["ai.deckhouse.io/clustermodel"] = cluster_names
    template = {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}}
    api = "batch/v1" if kind == "CronJob" else "apps/v1"
    spec: dict[str, Any]
    if kind == "CronJob":
        template["spec"]["restartPolicy"] = "OnFailure"
        spec = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        spec = {"selector": {"matchLabels": {"app": name}}, "template": template}
        if kind == "StatefulSet":
            spec["serviceName"] = name
    return {"apiVersion": api, "kind": kind,
            "metadata": {"name": name, "namespace": "ai-demo", "uid": f"uid-{name}", "generation": 1,
                         "annotations": annotations},
            "spec": spec}


def related(*objs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"Model.ai.deckhouse.io/v1alpha1": {}, "ClusterModel.ai.deckhouse.io/v1alpha1": {}}
    for o in objs:
        key = f"{o['kind']}.{o['apiVersion']}"
        meta = o["metadata"]
        out[key][f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]] = o
    return out


@pytest.fixture
def client():
    return create_app(CONFIG).test_client()


def written(resp: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` after Metacontroller wrote the answer's annotations (``None`` deletes)."""
    ann = {**(obj["metadata"].get("annotations") or {}), **resp["annotations"]}
    obj["metadata"]["annotations"] = {k: v for k, v in ann.items() if v is not None}
    return obj


def test_only_a_write_asks_for_a_follow_up_sync(client):
    """Metacontroller ignores a conflicting write and waits for the next event, which
    ignoreStatusChanges may drop (decorator/controller.go): a changed answer asks for one retry."""
    m = model("bge-m3")
    first = call(client, "sync", workload(model_names="bge-m3"), related(m))
    assert first["resyncAfterSeconds"] == RESYNC_AFTER_WRITE
    lost = call(client, "sync", workload(model_names="bge-m3"), related(m))  # the write did not land
    assert lost["resyncAfterSeconds"] == RESYNC_AFTER_WRITE
    landed = call(client, "sync", written(first, workload(model_names="bge-m3")), related(m))
    assert "resyncAfterSeconds" not in landed


def call(client, hook: str, obj: dict[str, Any], rel: dict[str, Any] | None = None,
         attachments: dict[str, Any] | None = None, finalizing: bool = False) -> dict[str, Any]:
    body = {"controller": CONTROLLER, "object": obj, "attachments": attachments or {"Secret.v1": {}},
            "related": rel or related(), "finalizing": finalizing}
    r = client.post(f"/hooks/workload/{hook}", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    resp = r.get_json()
    assert set(resp) <= DECORATOR_RESPONSE_KEYS, resp
    for a in resp.get("attachments", []):
        kubernetes_validate.validate(a, K8S, strict=True)
    return resp


def resolution(resp: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(resp["annotations"][ANNOTATION_RESOLUTION])


def blocked(resp: dict[str, Any]) -> dict[str, Any]:
    return json.loads(resp["annotations"][ANNOTATION_BLOCKED])


# ------------------------------------------------------------------ customize


@pytest.mark.parametrize("key", ["object", "parent"])
def test_customize_relates_models_and_clustermodels_by_name(client, key):
    obj = workload(model_names=" bge-m3 ,bge-reranker,, ", cluster_names="gemma-small")
    r = client.post("/hooks/workload/customize", json={"controller": CONTROLLER, key: obj})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json() == {"relatedResources": [
        {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": "models", "namespace": "ai-demo",
         "names": ["bge-m3", "bge-reranker"]},
        {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": "clustermodels", "names": ["gemma-small"]},
    ]}


def test_customize_skips_invalid_names_and_empty_annotations(client):
    obj = workload(model_names="Bad_Name, ok", cluster_names="")
    r = client.post("/hooks/workload/customize", json={"controller": CONTROLLER, "parent": obj})
    assert r.get_json() == {"relatedResources": [
        {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": "models", "namespace": "ai-demo", "names": ["ok"]}
    ]}


def test_customize_without_object_is_400(client):
    r = client.post("/hooks/workload/customize", json={"controller": CONTROLLER})
    assert r.status_code == 400


# ----------------------------------------------------------------------- sync


def test_single_model_resolves_to_annotation_and_pull_secret(client):
    m = model("bge-m3", family="bert", size=123)
    resp = call(client, "sync", workload(model_names="bge-m3"), related(m))
    assert resolution(resp) == [{
        "name": "bge-m3", "kind": "Model", "uri": m["status"]["artifact"]["uri"],
        "digest": m["status"]["artifact"]["digest"], "family": "bert", "sizeBytes": 123,
    }]
    # canonical compact JSON: the same resolution is the same string
    assert resp["annotations"][ANNOTATION_RESOLUTION] == json.dumps(
        resolution(resp), sort_keys=True, separators=(",", ":"))
    assert resp["annotations"][ANNOTATION_BLOCKED] is None
    [secret] = resp["attachments"]
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"] == {"name": "ai-models-pull-deployment-embedder", "namespace": "ai-demo",
                                  "labels": secret["metadata"]["labels"]}
    cfg = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    auth = cfg["auths"]["dmcr.test:5000"]
    grant = credentials.verify(CONFIG.signing_key, auth["username"], auth["password"])
    assert grant is not None and grant.kind == "pull"
    assert grant.repositories == ("ai-models/catalog/namespaced/ai-demo/bge-m3/uid-bge-m3",)


def test_several_models_across_both_annotations_sorted_by_name(client):
    objs = [model("zeta"), model("alpha"), model("gemma-small", None)]
    resp = call(client, "sync", workload(model_names="zeta, alpha", cluster_names="gemma-small"), related(*objs))
    res = resolution(resp)
    assert [(r["name"], r["kind"]) for r in res] == [
        ("alpha", "Model"), ("gemma-small", "ClusterModel"), ("zeta", "Model")]
    cfg = json.loads(base64.b64decode(resp["attachments"][0]["data"][".dockerconfigjson"]))
    auth = cfg["auths"]["dmcr.test:5000"]
    grant = credentials.verify(CONFIG.signing_key, auth["username"], auth["password"])
    assert set(grant.repositories) == {r["uri"].split("@")[0].split("/", 1)[1] for r in res}
    # v2: a ClusterModel's change wakes the workloads naming it (related by name); no polling:
    # one follow-up sync after a write (hooks/workload.py), none once the annotations are there.
    assert resp["resyncAfterSeconds"] == RESYNC_AFTER_WRITE
    assert "resyncAfterSeconds" not in call(client, "sync", written(resp, workload(
        model_names="zeta, alpha", cluster_names="gemma-small")), related(*objs))


def test_model_from_another_namespace_is_not_used(client):
    other = model("bge-m3", "other-ns")
    resp = call(client, "sync", workload(model_names="bge-m3"), related(other))
    assert blocked(resp)["reason"] == "ModelNotFound"


def test_v1_style_related_keys_are_understood(client):
    m = model("bge-m3")
    rel = {"Model.ai.deckhouse.io/v1alpha1": {"bge-m3": m}}
    resp = call(client, "sync", workload(model_names="bge-m3"), rel)
    assert resolution(resp)[0]["digest"] == m["status"]["artifact"]["digest"]


@pytest.mark.parametrize(
    ("objs", "names", "cluster", "reason", "mentions"),
    [
        ([], "bge-m3", None, "ModelNotFound", "bge-m3"),
        ([model("a")], "a", "missing", "ModelNotFound", "missing"),
        ([model("bge-m3", phase="Publishing")], "bge-m3", None, "ModelNotReady", "Publishing"),
        ([model("a"), model("a", None)], "a", "a", "DuplicateModelName", "a"),
        ([model("a")], "a, a", None, "DuplicateModelName", "a"),
        ([], "Not_A_Name", None, "InvalidModelName", "Not_A_Name"),
    ],
    ids=["missing", "missing-clustermodel", "not-ready", "duplicate-across", "duplicate-within", "invalid-name"],
)
def test_blocked_reasons(client, objs, names, cluster, reason, mentions):
    resp = call(client, "sync", workload(model_names=names, cluster_names=cluster), related(*objs))
    b = blocked(resp)
    assert b["reason"] == reason and mentions in b["message"]
    assert resp["annotations"][ANNOTATION_RESOLUTION] is None  # deleted: the webhook gates the pods
    assert resp["attachments"] == []
    # The Model's own events wake it (tests/test_scale.py): no polling once the reason is written.
    again = call(client, "sync", written(resp, workload(model_names=names, cluster_names=cluster)), related(*objs))
    assert "resyncAfterSeconds" not in again and again["annotations"] == resp["annotations"]


def test_ready_without_pinned_uri_is_not_ready(client):
    m = model("bge-m3")
    m["status"]["artifact"]["uri"] = "dmcr.test:5000/repo:latest"
    resp = call(client, "sync", workload(model_names="bge-m3"), related(m))
    assert blocked(resp)["reason"] == "ModelNotReady"


def test_deleting_model_is_not_ready(client):
    m = model("bge-m3")
    m["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    resp = call(client, "sync", workload(model_names="bge-m3"), related(m))
    assert blocked(resp)["reason"] == "ModelNotReady"


def test_blocked_keeps_an_existing_pull_secret_for_running_pods(client):
    ready = call(client, "sync", workload(model_names="bge-m3"), related(model("bge-m3")))
    secret = ready["attachments"][0]
    observed = json.loads(json.dumps(secret))
    observed["metadata"].update({"uid": "x", "resourceVersion": "7", "ownerReferences": []})
    resp = call(client, "sync", workload(model_names="bge-m3"), related(model("bge-m3", phase="Failed")),
                attachments={"Secret.v1": {"ai-demo/ai-models-pull-deployment-embedder": observed}})
    assert blocked(resp)["reason"] == "ModelNotReady"
    assert resp["attachments"] == [secret]


def test_not_ready_then_ready(client):
    obj = workload(model_names="bge-m3")
    first = call(client, "sync", obj, related(model("bge-m3", phase="Publishing")))
    assert blocked(first)["reason"] == "ModelNotReady"
    second = call(client, "sync", obj, related(model("bge-m3")))
    assert second["annotations"][ANNOTATION_BLOCKED] is None
    assert resolution(second)[0]["name"] == "bge-m3"


def test_new_model_revision_changes_the_resolution(client):
    obj = workload(model_names="bge-m3")
    a = call(client, "sync", obj, related(model("bge-m3", seed="v1")))
    b = call(client, "sync", obj, related(model("bge-m3", seed="v2")))
    assert resolution(a)[0]["digest"] != resolution(b)[0]["digest"]


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "CronJob"])
def test_every_workload_kind_gets_its_own_secret(client, kind):
    resp = call(client, "sync", workload(kind, name="w", model_names="bge-m3"), related(model("bge-m3")))
    assert resp["attachments"][0]["metadata"]["name"] == f"ai-models-pull-{kind.lower()}-w"


def test_long_workload_name_gives_a_valid_secret_name(client):
    resp = call(client, "sync", workload(name="w" * 250, model_names="m"), related(model("m")))
    name = resp["attachments"][0]["metadata"]["name"]
    assert len(name) <= 63 and name == delivery.pull_secret_name("Deployment", "w" * 250)


def test_annotations_emptied_removes_everything(client):
    resp = call(client, "sync", workload(model_names=" , "), related())
    assert resp["annotations"] == {ANNOTATION_RESOLUTION: None, ANNOTATION_BLOCKED: None}
    assert resp["attachments"] == []


def test_sync_is_deterministic(client):
    obj = workload(model_names="a,b", cluster_names="c")
    rel = related(model("a"), model("b"), model("c", None))
    assert call(client, "sync", obj, rel) == call(client, "sync", obj, rel)


def test_sync_of_cluster_scoped_object_is_400(client):
    obj = workload(model_names="a")
    del obj["metadata"]["namespace"]
    r = client.post("/hooks/workload/sync", json={"controller": CONTROLLER, "object": obj})
    assert r.status_code == 400 and "namespace" in r.get_json()["error"]


# ------------------------------------------------------------------- finalize


def test_finalize_removes_what_sync_wrote(client):
    obj = workload(model_names="bge-m3")
    obj["metadata"]["annotations"][ANNOTATION_RESOLUTION] = "[]"
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    resp = call(client, "finalize", obj, related(model("bge-m3")), finalizing=True)
    assert resp == {"annotations": {ANNOTATION_RESOLUTION: None, ANNOTATION_BLOCKED: None},
                    "attachments": [], "finalized": True}
    # The annotations are gone (the workload stopped naming models): clean up too.
    gone = workload(model_names="bge-m3")
    gone["metadata"]["annotations"] = {ANNOTATION_RESOLUTION: "[]"}
    resp = call(client, "finalize", gone, related(), finalizing=True)
    assert resp["annotations"] == {ANNOTATION_RESOLUTION: None, ANNOTATION_BLOCKED: None}


def test_finalize_on_a_handover_keeps_the_resolution(client):
    """A workload moved to the other decorator's partition still names models: no gate, no rollout."""
    obj = workload(model_names="bge-m3")
    obj["metadata"]["annotations"][ANNOTATION_RESOLUTION] = "[]"
    resp = call(client, "finalize", obj, related(model("bge-m3")), finalizing=True)
    assert resp == {"attachments": [], "finalized": True}


# ------------------------------------------------- v2 request shape (handler)


def test_v2_request_shape_parent_and_children():
    """Metacontroller's v2 decorator hooks send ``parent``/``children`` (uniform ``ns/name`` keys).

    Called on the handler; the app's request schema accepts both shapes.
    """
    from hooks import workload as hook

    obj = workload(model_names="bge-m3")
    ready = hook.sync({"controller": CONTROLLER, "parent": obj, "children": {"Secret.v1": {}},
                       "related": related(model("bge-m3")), "finalizing": False}, CONFIG)
    assert resolution(ready)[0]["name"] == "bge-m3"
    secret = ready["attachments"][0]
    observed = {**secret, "metadata": {**secret["metadata"], "uid": "u1", "resourceVersion": "3"}}
    blocked_resp = hook.sync(
        {"controller": CONTROLLER, "parent": obj,
         "children": {"Secret.v1": {f"ai-demo/{secret['metadata']['name']}": observed}},
         "related": related(model("bge-m3", phase="Failed")), "finalizing": False},
        CONFIG,
    )
    assert blocked(blocked_resp)["reason"] == "ModelNotReady"
    assert blocked_resp["attachments"] == [secret]
    final = hook.finalize({"controller": CONTROLLER, "parent": obj, "children": {}, "related": {},
                           "finalizing": True}, CONFIG)
    assert final["finalized"] is True and final["attachments"] == []


def test_registry_ca_travels_in_the_pull_secret():
    from hooks import workload as hook

    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    cfg = Config(registry="dmcr.test:5000", signing_key=b"k" * 32, registry_ca_pem=pem)
    resp = hook.sync({"controller": CONTROLLER, "object": workload(model_names="m"),
                      "related": related(model("m"))}, cfg)
    assert base64.b64decode(resp["attachments"][0]["data"]["ca.crt"]) == pem
    resp = hook.sync({"controller": CONTROLLER, "object": workload(model_names="m"),
                      "related": related(model("m"))}, CONFIG)
    assert "ca.crt" not in resp["attachments"][0]["data"]
