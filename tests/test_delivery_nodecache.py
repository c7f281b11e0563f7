"""Delivery mode ``NodeCache``: one CSI inline volume per model, no init container, no emptyDir.

The webhook is called the way the API server calls it (``tests.test_webhook_mutate``):
the decorator's sync answer applied, then the AdmissionReview, then its
JSONPatch applied with the ``jsonpatch`` library; every mutated object is
validated strictly with ``kubernetes-validate`` there. The mode comes from the
module setting (``Config.delivery_mode``, ``AI_MODELS_DELIVERY_MODE``) or the
workload's ``ai.deckhouse.io/delivery-mode`` annotation.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import re
from typing import Any

import pytest

from devstack import csi_node
from devstack import models as test_models
from devstack.hf_hub import HubStandIn
from devstack.stack import LocalModule
from hooks.app import create_app
from jobs.node_cache import mounts as node_mounts
from lib import delivery
from lib.delivery import ANNOTATION_DELIVERY_MODE, DELIVERY_MODES, choose_mode
from lib.delivery.node_cache import CSI_DRIVER, volume_name
from tests.test_webhook_mutate import GATE, admit, decorate, pod_spec, roll, template
from tests.test_workload_hooks import CONFIG, model, related, workload

NODE_CACHE = dataclasses.replace(CONFIG, delivery_mode="NodeCache")
KINDS = ["Deployment", "StatefulSet", "DaemonSet", "CronJob"]
MODELS_DIR = "/data/modelcache/models"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PINNED_ARTIFACT = re.compile(r"^dmcr\.test:5000/ai-models/catalog/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$")


@pytest.fixture
def client():
    """The hook service with the module's delivery mode set to NodeCache."""
    return create_app(NODE_CACHE).test_client()


@pytest.fixture
def init_client():
    """The hook service in the default (InitContainer) mode."""
    return create_app(CONFIG).test_client()


def restricted_workload(kind: str = "Deployment", **kw: Any) -> dict[str, Any]:
    """A workload whose own pod already meets the restricted Pod Security Standard."""
    obj = workload(kind, **kw)
    spec = pod_spec(obj)
    spec["securityContext"] = {"runAsNonRoot": True, "runAsUser": 1000,
                               "seccompProfile": {"type": "RuntimeDefault"}}
    spec["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    return obj


def with_mode(obj: dict[str, Any], mode: str | None) -> dict[str, Any]:
    """``obj`` with the override annotation set to ``mode`` (None: removed)."""
    out = copy.deepcopy(obj)
    annotations = out["metadata"].setdefault("annotations", {})
    if mode is None:
        annotations.pop(ANNOTATION_DELIVERY_MODE, None)
    else:
        annotations[ANNOTATION_DELIVERY_MODE] = mode
    return out


def csi_volumes(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in spec.get("volumes") or [] if "csi" in v]


def assert_node_cache(spec: dict[str, Any], models: list[dict[str, Any]], secret: str) -> None:
    """Exactly the pinned CSI volume per model, mounted read-only at its directory everywhere; nothing else."""
    assert "initContainers" not in spec or not any(
        c["name"].startswith(delivery.PREFIX) for c in spec["initContainers"])
    ours = [v for v in spec.get("volumes") or [] if v["name"].startswith(delivery.PREFIX)]
    assert not [v for v in ours if "emptyDir" in v or "secret" in v], "no emptyDir, no Secret volume"
    by_artifact = {v["csi"]["volumeAttributes"]["artifact"]: v for v in ours}
    assert len(ours) == len(models) == len(by_artifact)
    for m in models:
        uri = m["status"]["artifact"]["uri"]
        assert PINNED_ARTIFACT.match(uri)
        vol = by_artifact[uri]
        assert vol == {"name": vol["name"], "csi": {
            "driver": "models.ai.deckhouse.io", "readOnly": True,
            "volumeAttributes": {"artifact": uri}, "nodePublishSecretRef": {"name": secret}}}
        assert DNS_LABEL.match(vol["name"]) and len(vol["name"]) <= 63
        path = f"{MODELS_DIR}/{m['metadata']['name']}"
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            mine = [vm for vm in c.get("volumeMounts") or [] if vm["name"] == vol["name"]]
            assert mine == [{"name": vol["name"], "mountPath": path, "readOnly": True}], c["name"]
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        env = {e["name"]: e["value"] for e in c.get("env") or [] if e["name"].startswith("AI_MODELS_")}
        assert env["AI_MODELS_MODELS_DIR"] == MODELS_DIR
        assert json.loads(env["AI_MODELS_MODELS"]) == [
            {"name": m["metadata"]["name"], "path": f"{MODELS_DIR}/{m['metadata']['name']}",
             "digest": m["status"]["artifact"]["digest"], "family": m["status"]["resolved"]["family"]}
            for m in sorted(models, key=lambda o: o["metadata"]["name"])]
        assert not [vm for vm in c.get("volumeMounts") or [] if vm["name"] in (delivery.CACHE_VOLUME,
                                                                                 delivery.PULL_VOLUME)]


def assert_init_container_mode(spec: dict[str, Any]) -> None:
    assert [c for c in spec["initContainers"] if c["name"].startswith("ai-models-materialize-")]
    assert {v["name"] for v in spec["volumes"] if v["name"].startswith(delivery.PREFIX)} == {
        delivery.CACHE_VOLUME, delivery.PULL_VOLUME, "ai-models-kube-api"}
    assert csi_volumes(spec) == []


# ------------------------------------------------------------------ the four kinds


@pytest.mark.parametrize("kind", KINDS)
def test_nodecache_pod_templates_validate_and_stay_restricted(client, kind):
    from tests.test_security_pods import restricted_violations  # the project's PSS checker

    m = model("bge-m3", family="bert", size=3 << 30)
    created, _, _ = admit(client, restricted_workload(kind, model_names="bge-m3"), operation="CREATE")
    assert pod_spec(created)["schedulingGates"] == [GATE]
    mutated, _ = roll(client, created, related(m))  # admit() validates with kubernetes-validate, strict
    spec = pod_spec(mutated)
    assert "schedulingGates" not in spec
    assert "initContainers" not in spec
    assert_node_cache(spec, [m], secret=f"ai-models-pull-{kind.lower()}-embedder")
    assert restricted_violations(spec) == []
    digests = json.loads(template(mutated)["metadata"]["annotations"][delivery.ANNOTATION_TEMPLATE])
    assert digests == {"Model/bge-m3": m["status"]["artifact"]["digest"]}


def test_the_volume_names_the_secret_the_decorator_attaches(client):
    from tests.test_workload_hooks import call as decorator_call

    obj = workload("StatefulSet", model_names="bge-m3")
    answer = decorator_call(client, "sync", obj, related(model("bge-m3")))
    [secret] = answer["attachments"]
    assert secret["type"] == "kubernetes.io/dockerconfigjson" and ".dockerconfigjson" in secret["data"]
    mutated, _ = roll(client, obj, related(model("bge-m3")))
    [vol] = csi_volumes(pod_spec(mutated))
    assert vol["csi"]["nodePublishSecretRef"] == {"name": secret["metadata"]["name"]}
    assert vol["csi"]["driver"] == CSI_DRIVER


def test_several_models_each_get_a_volume_in_every_container(client):
    long = "m" + "x" * 70
    objs = [model("bge-m3"), model("a.b"), model(long), model("gemma-small", None, family="gemma")]
    obj = workload(model_names=f"bge-m3,a.b,{long}", cluster_names="gemma-small")
    spec0 = pod_spec(obj)
    spec0["containers"].append({"name": "sidecar", "image": "busybox:1", "env": [{"name": "KEEP", "value": "1"}]})
    spec0["initContainers"] = [{"name": "mesh-proxy", "image": "proxy:1", "restartPolicy": "Always"},
                               {"name": "warmup", "image": "warm:1"}]
    mutated, _ = roll(client, obj, related(*objs))
    spec = pod_spec(mutated)
    assert_node_cache(spec, objs, secret="ai-models-pull-deployment-embedder")
    assert [c["name"] for c in spec["initContainers"]] == ["mesh-proxy", "warmup"]  # none added
    assert spec["containers"][1]["env"][0] == {"name": "KEEP", "value": "1"}
    assert len({v["name"] for v in csi_volumes(spec)}) == 4


# ------------------------------------------------------------------ the gate


def test_gate_holds_until_the_models_are_ready(client):
    obj = workload(model_names="a,b")
    obj["spec"]["template"]["spec"]["schedulingGates"] = [{"name": "other.example.com/gate"}]
    gated, _ = roll(client, obj, related(model("a"), model("b", phase="Publishing")))
    spec = pod_spec(gated)
    assert delivery.ANNOTATION_BLOCKED in gated["metadata"]["annotations"]
    assert spec["schedulingGates"] == [{"name": "other.example.com/gate"}, GATE]
    assert "volumes" not in spec and "env" not in spec["containers"][0]
    missing, _ = roll(client, gated, related(model("a")))  # b deleted meanwhile: still gated
    assert pod_spec(missing)["schedulingGates"] == [{"name": "other.example.com/gate"}, GATE]
    ready, _ = roll(client, missing, related(model("a"), model("b")))
    assert pod_spec(ready)["schedulingGates"] == [{"name": "other.example.com/gate"}]
    assert_node_cache(pod_spec(ready), [model("a"), model("b")], secret="ai-models-pull-deployment-embedder")


def test_an_edited_annotation_gates_until_resolved_again(client):
    v1, _ = roll(client, workload(model_names="a"), related(model("a"), model("b")))
    edited = copy.deepcopy(v1)
    edited["metadata"]["annotations"]["ai.deckhouse.io/model"] = "a,b"
    stale, _, _ = admit(client, edited, old=v1)
    assert pod_spec(stale)["schedulingGates"] == [GATE] and csi_volumes(pod_spec(stale)) == []
    fresh, _ = roll(client, stale, related(model("a"), model("b")))
    assert len(csi_volumes(pod_spec(fresh))) == 2 and "schedulingGates" not in pod_spec(fresh)


# ------------------------------------------------------------------ the override annotation


def test_override_annotation_switches_the_mode_both_ways(init_client, client):
    rel = related(model("m"))
    base = workload(model_names="m")
    # Module: InitContainer. The workload asks for NodeCache, then drops the override.
    init_mode, _ = roll(init_client, base, rel)
    assert_init_container_mode(pod_spec(init_mode))
    to_cache, _, _ = admit(init_client, with_mode(init_mode, "NodeCache"), old=init_mode)
    assert_node_cache(pod_spec(to_cache), [model("m")], secret="ai-models-pull-deployment-embedder")
    assert template(to_cache) != template(init_mode)  # a new revision: the pods roll
    back, _, _ = admit(init_client, with_mode(to_cache, None), old=to_cache)
    assert template(back) == template(init_mode)
    # Module: NodeCache. The workload asks for InitContainer, then for NodeCache explicitly.
    cache_mode, _ = roll(client, base, rel)
    assert_node_cache(pod_spec(cache_mode), [model("m")], secret="ai-models-pull-deployment-embedder")
    to_init, _, _ = admit(client, with_mode(cache_mode, "InitContainer"), old=cache_mode)
    assert template(to_init) == template(init_mode)
    explicit, _, _ = admit(client, with_mode(to_init, "NodeCache"), old=to_init)
    assert template(explicit) == template(cache_mode) == template(to_cache)


@pytest.mark.parametrize("first", DELIVERY_MODES)
def test_switching_mode_is_idempotent(first):
    """Rendering mode B over mode A's output equals rendering B from scratch; a second pass changes nothing."""
    obj = workload(model_names="m,n", cluster_names="c")
    rel = related(model("m"), model("n"), model("c", None))
    decorated = decorate(create_app(CONFIG).test_client(), obj, rel)
    second = next(m for m in DELIVERY_MODES if m != first)

    def webhook(o: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        return admit(create_app(CONFIG).test_client(), o, old=o)

    a, _, _ = webhook(with_mode(decorated, first))
    switched, ops, _ = webhook(with_mode(a, second))
    assert ops
    direct, _, _ = webhook(with_mode(decorated, second))
    assert template(switched) == template(direct)
    again, ops2, _ = webhook(switched)
    assert ops2 == [] and again == switched
    spec = pod_spec(again)
    names = [v["name"] for v in spec.get("volumes") or []]
    assert len(names) == len(set(names)), "no duplicated volumes"
    for c in spec["containers"]:
        paths = [vm["mountPath"] for vm in c["volumeMounts"]]
        assert len(paths) == len(set(paths))
        assert [e["name"] for e in c["env"]].count("AI_MODELS_MODELS") == 1


def test_nodecache_on_its_own_output_is_an_empty_patch(client):
    for phase in ("Pending", "Ready"):
        mutated, ops = roll(client, workload(model_names="m"), related(model("m", phase=phase)))
        assert ops
        again, ops2, _ = admit(client, mutated)
        assert ops2 == [] and again == mutated, phase


@pytest.mark.parametrize("value", ["nodecache", "NodeCache2", "ImageVolume", " "])
def test_an_invalid_override_falls_back_to_the_module_mode_with_a_warning(init_client, client, value):
    obj = with_mode(workload(model_names="m"), value)
    rel = related(model("m"))
    for c, check in ((init_client, assert_init_container_mode),
                     (client, lambda s: assert_node_cache(s, [model("m")], "ai-models-pull-deployment-embedder"))):
        decorated = decorate(c, obj, rel)
        mutated, _, resp = admit(c, decorated, old=obj)  # allowed: admission never breaks
        check(pod_spec(mutated))
        warned = [w for w in resp.get("warnings", []) if ANNOTATION_DELIVERY_MODE in w]
        assert bool(warned) is bool(value.strip()), resp.get("warnings")
        if value.strip():
            assert repr(value) in warned[0] and "InitContainer, NodeCache" in warned[0]


def test_a_valid_override_wins_over_an_unimplemented_module_mode():
    obj = with_mode(workload(model_names="m"), "NodeCache")
    decorated = decorate(create_app(CONFIG).test_client(), obj, related(model("m")))
    c = create_app(dataclasses.replace(CONFIG, delivery_mode="ImageVolume")).test_client()
    mutated, _, resp = admit(c, decorated, old=obj)
    assert_node_cache(pod_spec(mutated), [model("m")], "ai-models-pull-deployment-embedder")
    assert "warnings" not in resp
    untouched, ops, resp = admit(c, with_mode(decorated, None), old=obj)
    assert ops == [] and any("ImageVolume" in w for w in resp["warnings"])


@pytest.mark.parametrize(("annotations", "module", "mode", "warns"), [
    ({}, "InitContainer", "InitContainer", 0),
    ({}, "NodeCache", "NodeCache", 0),
    ({ANNOTATION_DELIVERY_MODE: "NodeCache"}, "InitContainer", "NodeCache", 0),
    ({ANNOTATION_DELIVERY_MODE: " InitContainer "}, "NodeCache", "InitContainer", 0),
    ({ANNOTATION_DELIVERY_MODE: ""}, "NodeCache", "NodeCache", 0),
    ({ANNOTATION_DELIVERY_MODE: "initcontainer"}, "NodeCache", "NodeCache", 1),
    ({ANNOTATION_DELIVERY_MODE: "bogus"}, "Bogus", None, 2),
    (None, "Bogus", None, 1),
])
def test_choose_mode(annotations, module, mode, warns):
    choice = choose_mode(annotations, module)
    assert choice.mode == mode and len(choice.warnings) == warns


# ------------------------------------------------------------------ removal


def test_removing_a_model_removes_its_csi_volume(client):
    a, b = model("a"), model("b")
    both, _ = roll(client, workload(model_names="a,b"), related(a, b))
    assert len(csi_volumes(pod_spec(both))) == 2
    edited = copy.deepcopy(both)
    edited["metadata"]["annotations"]["ai.deckhouse.io/model"] = "a"
    one, _ = roll(client, edited, related(a, b))
    spec = pod_spec(one)
    assert_node_cache(spec, [a], secret="ai-models-pull-deployment-embedder")
    assert not any(vm["name"] == volume_name("b") for vm in spec["containers"][0]["volumeMounts"])


def test_removing_the_annotations_strips_the_csi_volumes(client):
    obj = workload(model_names="m")
    obj["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    obj["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    v1, _ = roll(client, obj, related(model("m")))
    assert len(pod_spec(v1)["volumes"]) == 2
    edited = copy.deepcopy(v1)
    del edited["metadata"]["annotations"]["ai.deckhouse.io/model"]
    stripped, _, _ = admit(client, edited, old=v1)
    assert pod_spec(stripped) == pod_spec(obj)
    assert template(stripped)["metadata"] == template(obj)["metadata"]


def test_a_new_digest_replaces_the_artifact_in_place(client):
    v1, _ = roll(client, workload(model_names="m"), related(model("m", seed="v1")))
    v2, _ = roll(client, v1, related(model("m", seed="v2")))
    [vol] = csi_volumes(pod_spec(v2))
    assert vol["csi"]["volumeAttributes"]["artifact"] == model("m", seed="v2")["status"]["artifact"]["uri"]
    assert template(v1) != template(v2)


def test_volume_names_are_stripped_by_a_later_mutation():
    for name in ("m", "a.b", "m" + "x" * 250):
        n = volume_name(name)
        assert n.startswith(delivery.PREFIX) and DNS_LABEL.match(n) and len(n) <= 63
    assert volume_name("a.b") != volume_name("a-b")


# ------------------------------------------------------------------ end to end, through the node plugin

MOUNT_PROBLEM = csi_node.mount_problem()


@pytest.mark.slow  # the whole module stack (LocalModule)
@pytest.mark.skipif(bool(MOUNT_PROBLEM), reason=MOUNT_PROBLEM or "")
@pytest.mark.parametrize("backend", ["memory", "kube"])
def test_a_nodecache_workload_pod_sees_the_model_files_through_the_plugin(tmp_path, backend):
    """Model → Ready → a Deployment that overrides the mode → its pods' csi volumes published by the real plugin.

    The whole module (real DMCR with token auth, the hook service under gunicorn as webhook and
    decorator, the Metacontroller and kubelet stand-ins) on the in-memory store and on the real control
    plane (kube-apiserver + etcd + kube-controller-manager, where the Secret the csi volume names is the
    one the API server stores), plus the node-cache plugin the kubelet stand-in calls: three pods of
    the Deployment see the model's bytes read-only at their mount, fetched into the node's cache once.
    """
    gguf = test_models.make_gguf(tmp_path / "tiny.gguf", chat_template="{{ messages }}")
    ns = "ai-demo"
    with (HubStandIn() as hub,
          LocalModule(tmp_path / "m", worker_env={"HF_ENDPOINT": hub.endpoint}, backend=backend) as m):
        hub.add_repo("acme/tiny", {"tiny.gguf": gguf})
        node = m.start_csi_node()
        m.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        m.apply({"apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "Model", "metadata": {"name": "tiny", "namespace": ns},
                 "spec": {"source": {"url": "https://huggingface.co/acme/tiny"}}})
        ended = m.run_until(lambda: m.phase("Model", "tiny", ns) in ("Ready", "Failed"), timeout=120)
        status = m.cluster.get("Model", "tiny", ns).get("status") or {}
        assert ended and status["phase"] == "Ready", (status, list(m.kubelet.logs.values())[-1:])
        m.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "server", "namespace": ns,
                              "annotations": {"ai.deckhouse.io/model": "tiny", ANNOTATION_DELIVERY_MODE: "NodeCache"}},
                 "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "server"}},
                          "template": {"metadata": {"labels": {"app": "server"}},
                                       "spec": {"containers": [{"name": "app", "image": "example.com/server:1"}]}}}})
        assert m.run_until(lambda: "schedulingGates" not in pod_spec(m.cluster.get("Deployment", "server", ns)),
                           timeout=30)
        seen = []
        for _ in range(3):  # three replicas on this node
            pod = m.run_workload_pod("Deployment", "server", ns)
            assert pod["ok"], (pod.get("status"), node.log()[-2000:])
            spec = pod["pod"]["spec"]
            assert "initContainers" not in spec and [v["name"] for v in csi_volumes(spec)] == [volume_name("tiny")]
            mounts, env = pod["app"]
            assert json.loads(env["AI_MODELS_MODELS"])[0]["digest"] == status["artifact"]["digest"]
            local = mounts[f"{MODELS_DIR}/tiny"]
            assert (local / "tiny.gguf").read_bytes() == gguf.read_bytes()
            with pytest.raises(OSError) as e:
                (local / "new").write_text("x")
            assert e.value.errno == errno.EROFS
            seen.append(local)
        assert len(set(seen)) == 3  # three pods, three targets
        entries = [p.name for p in (tmp_path / "m" / "node-cache").iterdir() if not p.name.startswith(".")]
        assert entries == [status["artifact"]["digest"]]  # one copy on the node
    assert not any(mp.startswith(str(tmp_path)) for mp in node_mounts.mount_points())  # stop() unpublished
