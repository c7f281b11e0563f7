"""A mount the user wrote where the delivery mode mounts the models: blocked with a reason, never a 422.

The API server refuses a container with two mounts at one path
(``ValidateVolumeMounts`` in pkg/apis/core/validation/validation.go: "must be
unique"; ``tests/test_kube_webhook.py`` shows the real one refusing it). So the
decorator writes ``MountPathConflict`` and the webhook gates instead of
injecting.
"""

from __future__ import annotations

import copy
import json

import pytest

from lib import delivery
from lib.api.types import MODELS_DIR
from lib.delivery import ANNOTATION_BLOCKED, ANNOTATION_DELIVERY_MODE, ANNOTATION_RESOLUTION
from tests.test_webhook_mutate import GATE, admit, decorate, pod_spec
from tests.test_workload_hooks import CONFIG, CONTROLLER, blocked, call, client, model, related, workload  # noqa: F401

MODE_OVERRIDE = {"InitContainer": {}, "NodeCache": {ANNOTATION_DELIVERY_MODE: "NodeCache"}}


def with_mount(obj: dict, path: str, container: str = "app") -> dict:
    """A copy of ``obj`` whose container mounts the user's own ``data`` volume at ``path``."""
    obj = copy.deepcopy(obj)
    spec = obj["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "data", "emptyDir": {}}]
    for c in spec["containers"]:
        if c["name"] == container:
            c["volumeMounts"] = [{"name": "data", "mountPath": path}]
    return obj


def resolved(name: str = "bge-m3") -> list[delivery.ResolvedModel]:
    m = model(name)
    out = delivery.resolve([delivery.ModelRef(delivery.ModelKind.MODEL, name)],
                           lambda ref: m, CONFIG.registry)
    assert isinstance(out, list)
    return out


@pytest.mark.parametrize(("mode", "path", "clash"), [
    ("InitContainer", MODELS_DIR, True),
    ("InitContainer", MODELS_DIR + "/", True),  # the same directory in the container
    ("InitContainer", MODELS_DIR + "/bge-m3", False),  # nested inside ours: the API server allows it
    ("InitContainer", "/data", False),
    ("NodeCache", MODELS_DIR + "/bge-m3", True),
    ("NodeCache", "/data/modelcache//models/bge-m3", True),
    ("NodeCache", MODELS_DIR, False),  # ours nest inside it
    ("NodeCache", MODELS_DIR + "/other", False),
])
def test_only_an_exact_path_of_ours_is_a_conflict(mode, path, clash):
    obj = with_mount(workload(model_names="bge-m3"), path)
    problems = delivery.mount_conflicts(delivery.pod_template(obj), resolved(), mode, CONFIG, "s")
    assert bool(problems) is clash, problems
    if clash:
        [line] = problems
        assert "'app'" in line and "'data'" in line and mode in line


@pytest.mark.parametrize("mode", sorted(MODE_OVERRIDE))
def test_the_decorator_blocks_with_mount_path_conflict(client, mode):  # noqa: F811
    path = MODELS_DIR if mode == "InitContainer" else f"{MODELS_DIR}/bge-m3"
    obj = with_mount(workload(model_names="bge-m3", extra=MODE_OVERRIDE[mode]), path)
    resp = call(client, "sync", obj, related(model("bge-m3")))
    assert resp["annotations"][ANNOTATION_RESOLUTION] is None
    why = blocked(resp)
    assert why["reason"] == "MountPathConflict"
    assert f"container 'app' mounts its volume 'data' at {path}" in why["message"]
    assert resp["attachments"] == []  # no pull Secret for a workload that cannot start


def test_the_same_mount_in_the_other_mode_is_delivered(client):  # noqa: F811
    """NodeCache mounts per model: a user volume at the models root does not clash there."""
    obj = with_mount(workload(model_names="bge-m3", extra=MODE_OVERRIDE["NodeCache"]), MODELS_DIR)
    resp = call(client, "sync", obj, related(model("bge-m3")))
    assert resp["annotations"][ANNOTATION_BLOCKED] is None
    assert [m["name"] for m in json.loads(resp["annotations"][ANNOTATION_RESOLUTION])] == ["bge-m3"]


def test_decorator_then_webhook_gates_and_the_template_stays_valid(client):  # noqa: F811
    obj = with_mount(workload(model_names="bge-m3"), MODELS_DIR)
    stored, _, _ = admit(client, obj, operation="CREATE")
    decorated = decorate(client, stored, related(model("bge-m3")))
    mutated, _, _ = admit(client, decorated, old=stored)  # kubernetes-validate'd inside
    spec = pod_spec(mutated)
    assert spec["schedulingGates"] == [GATE] and "initContainers" not in spec
    assert spec["containers"][0]["volumeMounts"] == [{"name": "data", "mountPath": MODELS_DIR}]


def test_the_webhook_gates_a_stale_resolution_with_a_warning(client):  # noqa: F811
    """The user adds the mount while a resolution is on the object: the webhook sees it before the decorator."""
    good = decorate(client, workload(model_names="bge-m3"), related(model("bge-m3")))
    delivered, _, _ = admit(client, good)
    assert "initContainers" in pod_spec(delivered)
    edited = with_mount(good, MODELS_DIR)
    mutated, _, resp = admit(client, edited, old=delivered)
    spec = pod_spec(mutated)
    assert spec["schedulingGates"] == [GATE] and "initContainers" not in spec
    assert [v["name"] for v in spec["volumes"]] == ["data"]
    [warning] = resp["warnings"]
    assert warning.startswith("ai-models: container 'app' mounts its volume 'data' at " + MODELS_DIR)
    # Removing the mount again delivers on the next admission, with no decorator call in between.
    fixed, _, _ = admit(client, good, old=mutated)
    assert "schedulingGates" not in pod_spec(fixed) and "initContainers" in pod_spec(fixed)


ODD = {
    "mounts-int": lambda spec: spec["containers"][0].update(volumeMounts=5),
    "mounts-string": lambda spec: spec["containers"][0].update(volumeMounts="x"),
    "mount-string": lambda spec: spec["containers"][0].update(volumeMounts=["x"]),
    "mount-path-int": lambda spec: spec["containers"][0].update(volumeMounts=[{"name": "d", "mountPath": 7}]),
    "container-name-list": lambda spec: spec["containers"][0].update(name=["a"]),
    "volumes-dict": lambda spec: spec.update(volumes={"a": 1}),
}


@pytest.mark.parametrize("breakage", list(ODD.values()), ids=list(ODD))
def test_odd_templates_never_crash_either_hook(client, breakage):  # noqa: F811
    """Mutating admission runs before validation (the webhook leaves such objects to it); the
    decorator only ever gets stored, validated objects from Metacontroller: 400, never a 500."""
    obj = workload(model_names="bge-m3")
    breakage(obj["spec"]["template"]["spec"])
    r = client.post("/hooks/workload/sync", json={
        "controller": CONTROLLER, "object": obj, "attachments": {"Secret.v1": {}},
        "related": related(model("bge-m3")), "finalizing": False})
    assert r.status_code in (200, 400), r.get_data(as_text=True)
    if r.status_code == 400:
        assert "pod template is malformed" in r.get_data(as_text=True)
    obj["metadata"]["annotations"][ANNOTATION_RESOLUTION] = delivery.encode_resolution(resolved())
    from tests.test_webhook_mutate import review

    r = client.post("/webhooks/workload/mutate", json=review(obj))
    assert r.status_code == 200, r.get_data(as_text=True)
