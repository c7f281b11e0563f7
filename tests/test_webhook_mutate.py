"""The workload mutating webhook, called the way the API server calls it.

The decorator's answers are applied to the object as Metacontroller would
(a null annotation deletes the key), then the webhook is called on that UPDATE
and its JSONPatch applied; every resulting object must validate strictly.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest

from hooks.app import create_app
from lib import delivery
from lib.config import Config
from lib.delivery import ANNOTATION_BLOCKED, ANNOTATION_RESOLUTION, ANNOTATION_TEMPLATE
from tests.test_workload_hooks import CONFIG, K8S, model, related, workload
from tests.test_workload_hooks import call as decorator_call

GATE = {"name": "ai.deckhouse.io/model-delivery"}


@pytest.fixture
def client():
    return create_app(CONFIG).test_client()


def review(obj: dict[str, Any], *, operation: str = "UPDATE", old: dict[str, Any] | None = None,
           uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002") -> dict[str, Any]:
    group, _, version = obj["apiVersion"].rpartition("/")
    resource = obj["kind"].lower() + "s"
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": obj["kind"]},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:metacontroller:metacontroller"},
            "object": obj,
            "oldObject": old if operation == "UPDATE" else None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"},
        },
    }


def admit(client, obj: dict[str, Any], *, operation: str = "UPDATE",
          old: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(mutated object, patch ops, response) — the patch applied as the API server would."""
    rv = review(obj, operation=operation, old=old if old is not None else obj)
    r = client.post("/webhooks/workload/mutate", json=rv)
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    resp = body["response"]
    assert resp["uid"] == rv["request"]["uid"] and resp["allowed"] is True
    ops: list[dict[str, Any]] = []
    if "patch" in resp:
        assert resp["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(resp["patch"]))
        assert ops, "an empty patch must be left out"
    else:
        assert "patchType" not in resp
    mutated = jsonpatch.apply_patch(obj, ops)
    validate(mutated)
    return mutated, ops, resp


def validate(obj: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(obj, K8S, strict=True)
    except kubernetes_validate.ValidationError as e:  # keep the failure readable
        raise AssertionError(str(e).splitlines()[0]) from None


def decorate(client, obj: dict[str, Any], rel: dict[str, Any]) -> dict[str, Any]:
    """Apply the decorator's sync answer to ``obj`` as Metacontroller would."""
    resp = decorator_call(client, "sync", obj, rel)
    out = copy.deepcopy(obj)
    ann = out["metadata"].setdefault("annotations", {})
    for k, v in resp.get("annotations", {}).items():
        if v is None:
            ann.pop(k, None)
        else:
            ann[k] = v
    return out


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return template(obj)["spec"]


def template(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return obj["spec"]["template"]


def roll(client, obj: dict[str, Any], rel: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Decorator sync → UPDATE through the webhook; returns the stored object and the patch."""
    decorated = decorate(client, obj, rel)
    mutated, ops, _ = admit(client, decorated, old=obj)
    return mutated, ops


# ------------------------------------------------------------------- behaviour


def test_no_annotations_passes_untouched(client):
    obj = workload(extra={"unrelated": "x"})
    mutated, ops, resp = admit(client, obj, operation="CREATE")
    assert ops == [] and mutated == obj and "warnings" not in resp


def test_create_before_resolution_gates_pods(client):
    obj = workload(model_names="bge-m3")
    mutated, _, _ = admit(client, obj, operation="CREATE")
    spec = pod_spec(mutated)
    assert spec["schedulingGates"] == [GATE]
    assert "initContainers" not in spec and "volumes" not in spec
    assert "env" not in spec["containers"][0]


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "CronJob"])
def test_single_model_is_injected(client, kind):
    m = model("bge-m3", family="bert", size=3 << 30)
    created, _, _ = admit(client, workload(kind, model_names="bge-m3"), operation="CREATE")
    mutated, _ = roll(client, created, related(m))
    spec = pod_spec(mutated)
    assert "schedulingGates" not in spec
    [init] = spec["initContainers"]
    assert init["image"] == CONFIG.worker_image
    assert init["command"] == ["python", "-m", "jobs", "materialize"]
    assert init["args"] == ["--artifact", m["status"]["artifact"]["uri"],
                            "--into", "/data/modelcache/models/bge-m3",
                            "--auth-file", "/var/run/ai-models/pull/.dockerconfigjson"]
    sc = init["securityContext"]
    assert sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"} and sc["readOnlyRootFilesystem"]
    assert init["resources"]["requests"] and init["resources"]["limits"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["ai-models-pull"]["secret"]["secretName"] == f"ai-models-pull-{kind.lower()}-embedder"
    size = vols["ai-models-cache"]["emptyDir"]["sizeLimit"]
    assert size.endswith("Mi") and int(size[:-2]) * (1 << 20) > 3 << 30  # headroom over the artifact
    [app] = spec["containers"]
    env = {e["name"]: e["value"] for e in app["env"]}
    assert env["AI_MODELS_MODELS_DIR"] == "/data/modelcache/models"
    assert json.loads(env["AI_MODELS_MODELS"]) == [{
        "name": "bge-m3", "path": "/data/modelcache/models/bge-m3",
        "digest": m["status"]["artifact"]["digest"], "family": "bert"}]
    assert {"name": "ai-models-cache", "mountPath": "/data/modelcache/models", "readOnly": True} in app["volumeMounts"]
    assert all(vm["name"] != "ai-models-pull" for vm in app["volumeMounts"])  # no credential in the app
    # The materialize step alone gets a token of the pod's own account, to record Events on its pod.
    assert all(vm["name"] != "ai-models-kube-api" for vm in app["volumeMounts"])
    assert {"name": "ai-models-kube-api", "mountPath": "/var/run/ai-models/kube", "readOnly": True} in init[
        "volumeMounts"]
    assert [s for s in vols["ai-models-kube-api"]["projected"]["sources"] if "serviceAccountToken" in s] == [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]
    init_env = {e["name"]: e.get("value") or e["valueFrom"]["fieldRef"]["fieldPath"] for e in init["env"]}
    assert init_env == {"AI_MODELS_KUBE_DIR": "/var/run/ai-models/kube", "AI_MODELS_POD_NAME": "metadata.name",
                        "AI_MODELS_POD_NAMESPACE": "metadata.namespace", "AI_MODELS_POD_UID": "metadata.uid"}
    digests = json.loads(template(mutated)["metadata"]["annotations"][ANNOTATION_TEMPLATE])
    assert digests == {"Model/bge-m3": m["status"]["artifact"]["digest"]}


def test_several_models_across_both_annotations(client):
    objs = [model("bge-m3"), model("bge-reranker"), model("gemma-small", None, family="gemma")]
    obj = workload(model_names="bge-m3,bge-reranker", cluster_names="gemma-small")
    obj["spec"]["template"]["spec"]["containers"].append(
        {"name": "sidecar", "image": "busybox:1", "env": [{"name": "KEEP", "value": "1"}]})
    mutated, _ = roll(client, obj, related(*objs))
    spec = pod_spec(mutated)
    assert [c["name"] for c in spec["initContainers"]] == [
        "ai-models-materialize-bge-m3", "ai-models-materialize-bge-reranker", "ai-models-materialize-gemma-small"]
    for c in spec["containers"]:
        env = {e["name"]: e["value"] for e in c["env"]}
        assert [m["name"] for m in json.loads(env["AI_MODELS_MODELS"])] == ["bge-m3", "bge-reranker", "gemma-small"]
    assert spec["containers"][1]["env"][0] == {"name": "KEEP", "value": "1"}
    total = sum(o["status"]["artifact"]["sizeBytes"] for o in objs)
    size = pod_spec(mutated)["volumes"][0]["emptyDir"]["sizeLimit"]
    assert delivery.quantity(total) != size  # headroom added


def test_not_ready_gates_then_ready_lifts_the_gate(client):
    obj = workload(model_names="bge-m3")
    obj["spec"]["template"]["spec"]["schedulingGates"] = [{"name": "other.example.com/gate"}]
    gated, _ = roll(client, obj, related(model("bge-m3", phase="Publishing")))
    assert ANNOTATION_BLOCKED in gated["metadata"]["annotations"]
    assert pod_spec(gated)["schedulingGates"] == [{"name": "other.example.com/gate"}, GATE]
    assert "initContainers" not in pod_spec(gated)
    ready, _ = roll(client, gated, related(model("bge-m3")))
    assert ANNOTATION_BLOCKED not in ready["metadata"]["annotations"]
    assert pod_spec(ready)["schedulingGates"] == [{"name": "other.example.com/gate"}]  # ours lifted only
    assert template(ready) != template(gated)  # a new revision: pods roll


@pytest.mark.parametrize(
    ("names", "cluster", "objs"),
    [("bge-m3", None, []), ("a", "a", [model("a"), model("a", None)])],
    ids=["missing", "duplicate"],
)
def test_blocked_workloads_are_gated(client, names, cluster, objs):
    mutated, _ = roll(client, workload(model_names=names, cluster_names=cluster), related(*objs))
    assert pod_spec(mutated)["schedulingGates"] == [GATE]
    assert "initContainers" not in pod_spec(mutated)


def test_cronjob_template_path(client):
    mutated, ops = roll(client, workload("CronJob", model_names="m"), related(model("m")))
    assert all(op["path"].startswith(("/spec/jobTemplate/spec/template/", "/metadata/labels")) for op in ops)
    assert pod_spec(mutated)["initContainers"][0]["name"] == "ai-models-materialize-m"


def test_idempotent_on_its_own_output(client):
    for state in ("gated", "resolved"):
        rel = related(model("m", phase="Ready" if state == "resolved" else "Pending"))
        mutated, ops = roll(client, workload(model_names="m", cluster_names=""), rel)
        assert ops
        again, ops2, _ = admit(client, mutated)
        assert ops2 == [] and again == mutated, state


def test_new_revision_replaces_the_injection(client):
    obj = workload(model_names="m")
    v1, _ = roll(client, obj, related(model("m", seed="v1")))
    v2, _ = roll(client, v1, related(model("m", seed="v2")))
    spec = pod_spec(v2)
    assert len(spec["initContainers"]) == 1 and len(spec["volumes"]) == 3  # cache, pull Secret, token
    assert "@" + model("m", seed="v2")["status"]["artifact"]["digest"] in spec["initContainers"][0]["args"][1]
    assert len([e for e in spec["containers"][0]["env"] if e["name"] == "AI_MODELS_MODELS"]) == 1
    assert template(v1)["metadata"]["annotations"] != template(v2)["metadata"]["annotations"]


def test_changed_annotation_gates_until_resolved_again(client):
    v1, _ = roll(client, workload(model_names="a"), related(model("a"), model("b")))
    edited = copy.deepcopy(v1)
    edited["metadata"]["annotations"]["ai.deckhouse.io/model"] = "a,b"
    stale, _, _ = admit(client, edited, old=v1)  # the old resolution names only "a"
    assert pod_spec(stale)["schedulingGates"] == [GATE]
    assert template(stale)["metadata"]["annotations"][ANNOTATION_TEMPLATE] != \
        template(v1)["metadata"]["annotations"][ANNOTATION_TEMPLATE]  # generation moves
    fresh, _ = roll(client, stale, related(model("a"), model("b")))
    assert len(pod_spec(fresh)["initContainers"]) == 2 and "schedulingGates" not in pod_spec(fresh)


@pytest.mark.parametrize(
    ("names", "cluster"), [("m", None), (None, "m"), ("", None)], ids=["model", "clustermodel", "empty"]
)
def test_consumer_label_follows_either_annotation(client, names, cluster):
    """The DecoratorController selects on this label (one selector per kind cannot OR two annotations)."""
    obj = workload(model_names=names, cluster_names=cluster)
    obj["metadata"]["labels"] = {"team": "a"}
    created, _, _ = admit(client, obj, operation="CREATE")
    assert created["metadata"]["labels"] == {"team": "a", delivery.LABEL_CONSUMER: "true"}
    edited = copy.deepcopy(created)
    edited["metadata"]["annotations"] = {}
    removed, _, _ = admit(client, edited, old=created)
    assert removed["metadata"]["labels"] == {"team": "a"}


def test_removed_annotations_strip_the_injection(client):
    obj = workload(model_names="m")
    v1, _ = roll(client, obj, related(model("m")))
    edited = copy.deepcopy(v1)
    del edited["metadata"]["annotations"]["ai.deckhouse.io/model"]
    stripped, _, _ = admit(client, edited, old=v1)
    assert pod_spec(stripped) == pod_spec(obj)
    assert template(stripped)["metadata"] == template(obj)["metadata"]
    assert delivery.LABEL_CONSUMER not in stripped["metadata"].get("labels", {})


def test_forged_or_broken_resolution_gates_with_a_warning(client):
    obj = workload(model_names="m")
    obj["metadata"]["annotations"][ANNOTATION_RESOLUTION] = '[{"name":"m","kind":"Model","uri":"evil; rm -rf /"}]'
    mutated, _, resp = admit(client, obj)
    assert pod_spec(mutated)["schedulingGates"] == [GATE]
    assert any(ANNOTATION_RESOLUTION in w for w in resp["warnings"])


def test_user_init_containers_and_sidecars_keep_their_place(client):
    obj = workload(model_names="m")
    obj["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "mesh-proxy", "image": "proxy:1", "restartPolicy": "Always"},
        {"name": "warmup", "image": "warm:1"},
    ]
    mutated, _ = roll(client, obj, related(model("m")))
    names = [c["name"] for c in pod_spec(mutated)["initContainers"]]
    assert names == ["mesh-proxy", "ai-models-materialize-m", "warmup"]
    warmup = pod_spec(mutated)["initContainers"][2]
    assert any(vm["name"] == "ai-models-cache" and vm["readOnly"] for vm in warmup["volumeMounts"])


def test_insecure_registry_flag_follows_config():
    obj = workload(model_names="m")
    resolved = delivery.resolve([delivery.ModelRef(delivery.ModelKind.MODEL, "m")], lambda r: model("m"), CONFIG.registry)
    obj["metadata"]["annotations"][ANNOTATION_RESOLUTION] = delivery.encode_resolution(resolved)
    for insecure in (False, True):
        m = delivery.mutate_object(obj, Config(registry_insecure=insecure))
        new = jsonpatch.apply_patch(obj, m.patch)
        assert ("--insecure-registry" in pod_spec(new)["initContainers"][0]["args"]) is insecure


@pytest.mark.parametrize(
    ("ca", "insecure", "flags", "items"),
    [
        (b"PEM", False, ["--ca-file", "/var/run/ai-models/pull/ca.crt"], [".dockerconfigjson", "ca.crt"]),
        (None, False, [], [".dockerconfigjson"]),
        (b"PEM", True, ["--insecure-registry"], [".dockerconfigjson"]),
    ],
    ids=["tls-private-ca", "tls-public-ca", "plain-http"],
)
def test_registry_ca_reaches_the_init_container(ca, insecure, flags, items):
    obj = workload(model_names="m")
    resolved = delivery.resolve([delivery.ModelRef(delivery.ModelKind.MODEL, "m")], lambda r: model("m"), CONFIG.registry)
    obj["metadata"]["annotations"][ANNOTATION_RESOLUTION] = delivery.encode_resolution(resolved)
    m = delivery.mutate_object(obj, Config(registry_ca_pem=ca, registry_insecure=insecure))
    spec = pod_spec(jsonpatch.apply_patch(obj, m.patch))
    assert spec["initContainers"][0]["args"][6:] == flags
    pull = next(v for v in spec["volumes"] if v["name"] == "ai-models-pull")
    assert [i["key"] for i in pull["secret"]["items"]] == items


def test_unknown_delivery_mode_passes_with_a_warning():
    obj = workload(model_names="m")
    m = delivery.mutate_object(obj, Config(delivery_mode="ImageVolume"))  # designed, not implemented
    assert m.patch == [] and any("ImageVolume" in w for w in m.warnings)


def test_dotted_and_long_model_names_give_valid_container_names(client):
    long = "m" + "x" * 70
    mutated, _ = roll(client, workload(model_names=f"a.b,a-b,{long}"),
                      related(model("a.b"), model("a-b"), model(long)))
    names = [c["name"] for c in pod_spec(mutated)["initContainers"]]
    assert len(set(names)) == 3 and all(len(n) <= 63 and n.startswith("ai-models-") for n in names)


def test_delete_and_connect_are_allowed_untouched(client):
    obj = workload(model_names="m")
    rv = review(obj, operation="DELETE")
    r = client.post("/webhooks/workload/mutate", json=rv)
    assert r.get_json()["response"] == {"uid": rv["request"]["uid"], "allowed": True}


@pytest.mark.parametrize(
    "body",
    [
        {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "1", "operation": "CREATE"}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
         "request": {"uid": "1", "operation": "CREATE", "object": {"kind": "Deployment", "metadata": "x"}}},
    ],
    ids=["v1beta1", "no-uid", "object-metadata-not-object"],
)
def test_malformed_reviews_are_400(client, body):
    r = client.post("/webhooks/workload/mutate", json=body)
    assert r.status_code == 400 and r.get_json()["error"]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda spec: spec.update(containers="not-a-list"),
        lambda spec: spec.update(containers=["not-an-object"]),
        lambda spec: spec["containers"][0].update(env="x"),
        lambda spec: spec.update(volumes=None, initContainers=None),
    ],
    ids=["containers-string", "container-string", "env-string", "nulls"],
)
def test_malformed_objects_are_left_to_api_validation(client, breakage):
    """Mutating admission runs before validation: never a 500, never a crash on odd objects."""
    obj = workload(model_names="m")
    resolved = delivery.resolve([delivery.ModelRef(delivery.ModelKind.MODEL, "m")], lambda r: model("m"), CONFIG.registry)
    obj["metadata"]["annotations"][ANNOTATION_RESOLUTION] = delivery.encode_resolution(resolved)
    breakage(obj["spec"]["template"]["spec"])
    rv = review(obj)
    r = client.post("/webhooks/workload/mutate", json=rv)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["response"]["allowed"] is True


def test_json_patch_escapes_annotation_keys():
    ops = delivery.json_patch({"a": {}}, {"a": {"x/y~z": "1"}}, "/root")
    assert ops == [{"op": "add", "path": "/root/a/x~1y~0z", "value": "1"}]
    assert jsonpatch.apply_patch({"root": {"a": {}}}, ops) == {"root": {"a": {"x/y~z": "1"}}}


@pytest.mark.parametrize(("n", "q"), [(1, "1Mi"), (1 << 20, "1Mi"), ((1 << 20) + 1, "2Mi"),
                                      (2 << 30, "2Gi"), ((2 << 30) + (1 << 20), "2049Mi"), (1 << 40, "1Ti")])
def test_quantity_is_canonical(n, q):
    assert delivery.quantity(n) == q
