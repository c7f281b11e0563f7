"""Our mutating webhook registered with a real kube-apiserver, served by gunicorn over TLS.

The MutatingWebhookConfiguration is deploy/'s own (rules, matchConditions,
selectors, failurePolicy), with ``clientConfig`` pointed at the hook service
on loopback instead of its in-cluster Service. The API server decides when
to call it, sends the AdmissionReview, applies the JSONPatch and stores the
result: what the tests read back is the stored Deployment.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client

from devstack.control_plane import ControlPlane
from devstack.registry import free_port
from devstack.tls import make_ca_and_cert
from tests.test_workload_hooks import CONTROLLER, model, related, workload

ROOT = Path(__file__).resolve().parent.parent
GATE = "ai.deckhouse.io/model-delivery"
WORKER_IMAGE = "registry.example.com/ai-models/worker:test"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def hook_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The hook service under gunicorn with a serving certificate for 127.0.0.1; (url, CA file)."""
    tmp = tmp_path_factory.mktemp("kube-webhook")
    certs = make_ca_and_cert(tmp / "certs")
    key = tmp / "signing.key"
    key.write_text("test-signing-key-0123456789abcdef\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_MODELS_")}
    env.update({"AI_MODELS_LISTEN": f"127.0.0.1:{port}", "AI_MODELS_HOOK_WORKERS": "1",
                "AI_MODELS_REGISTRY": "dmcr.test:5000", "AI_MODELS_SIGNING_KEY_FILE": str(key),
                "AI_MODELS_WORKER_IMAGE": WORKER_IMAGE})
    log = (tmp / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "hooks/gunicorn_conf.py",
         "--certfile", str(certs.cert), "--keyfile", str(certs.key), "hooks.app:app"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{url}/healthz", verify=str(certs.ca_cert), timeout=1)
            break
        except requests.RequestException:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError((tmp / "gunicorn.log").read_text()[-2000:]) from None
            time.sleep(0.1)
    yield url, str(certs.ca_cert)
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture(scope="module")
def webhook(kube: ControlPlane, hook_service: tuple[str, str]) -> Iterator[ControlPlane]:
    """deploy/webhook's MutatingWebhookConfiguration, calling the loopback hook service."""
    url, ca = hook_service
    config = yaml.safe_load((ROOT / "deploy" / "webhook" / "mutatingwebhookconfiguration.yaml").read_text())
    config["metadata"]["name"] = "ai-models-workloads-loopback"
    config["metadata"]["annotations"] = {}  # no cert-manager here: the caBundle is set below
    for hook in config["webhooks"]:
        hook["clientConfig"] = {"url": f"{url}/webhooks/workload/mutate",
                                "caBundle": base64.b64encode(Path(ca).read_bytes()).decode()}
    api = client.AdmissionregistrationV1Api(kube.client)
    api.create_mutating_webhook_configuration(config)
    _wait_webhook_active(kube)
    yield kube
    api.delete_mutating_webhook_configuration(config["metadata"]["name"])


def _wait_webhook_active(kube: ControlPlane, timeout: float = 30.0) -> None:
    """The API server picks up webhook configurations asynchronously: probe with a dry-run."""
    apps = client.AppsV1Api(kube.client)
    probe = _deployment(workload(model_names="probe"), "default")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = apps.create_namespaced_deployment("default", probe, dry_run="All")
        if _gates(kube.client.sanitize_for_serialization(out)):
            return
        time.sleep(0.5)
    pytest.fail("the webhook is not called")


def _deployment(obj: Obj, namespace: str) -> Obj:
    """A test workload as a user would create it (no uid/generation), in ``namespace``."""
    obj = copy.deepcopy(obj)
    obj["metadata"] = {"name": obj["metadata"]["name"], "namespace": namespace,
                       "annotations": obj["metadata"]["annotations"]}
    obj["spec"]["replicas"] = 0
    return obj


def _gates(d: Any) -> list[str]:
    spec = d["spec"]["template"]["spec"]
    return [g["name"] for g in spec.get("schedulingGates") or []]


def _stored(kube: ControlPlane, namespace: str, name: str) -> Obj:
    """The Deployment as stored, as plain JSON (camelCase)."""
    return kube.client.sanitize_for_serialization(client.AppsV1Api(kube.client).read_namespaced_deployment(name, namespace))


def test_a_deployment_naming_an_unready_model_is_gated(webhook, kube_namespace):
    apps = client.AppsV1Api(webhook.client)
    apps.create_namespaced_deployment(kube_namespace, _deployment(workload(model_names="bge-m3"), kube_namespace))
    stored = _stored(webhook, kube_namespace, "embedder")
    assert _gates(stored) == [GATE]
    assert not stored["spec"]["template"]["spec"].get("initContainers")


def test_resolution_annotation_brings_init_containers_and_a_reapply_is_a_no_op(
        webhook, hook_service, kube_namespace):
    """As in the cluster: created (gated), the decorator writes its resolution annotation
    (an UPDATE the webhook mutates), then the same apply again changes nothing."""
    url, ca = hook_service
    apps = client.AppsV1Api(webhook.client)
    obj = _deployment(workload(model_names="bge-m3"), kube_namespace)
    apps.create_namespaced_deployment(kube_namespace, obj)
    m = model("bge-m3", kube_namespace)
    stored = _stored(webhook, kube_namespace, "embedder")
    answer = requests.post(f"{url}/hooks/workload/sync", verify=ca, timeout=10, json={
        "controller": CONTROLLER, "object": stored, "attachments": {"Secret.v1": {}},
        "related": related(m), "finalizing": False}).json()
    apps.patch_namespaced_deployment("embedder", kube_namespace,
                                     {"metadata": {"annotations": answer["annotations"]}})
    resolved = _stored(webhook, kube_namespace, "embedder")
    pod = resolved["spec"]["template"]["spec"]
    assert _gates(resolved) == []
    [init] = pod["initContainers"]
    assert init["image"] == WORKER_IMAGE and m["status"]["artifact"]["uri"] in init["args"]
    assert resolved["metadata"]["generation"] == 2
    # The decorator's next sync writes the same annotations: nothing changes, no rollout.
    apps.patch_namespaced_deployment("embedder", kube_namespace,
                                     {"metadata": {"annotations": answer["annotations"]}})
    again = _stored(webhook, kube_namespace, "embedder")
    # (resourceVersion moves with the Deployment controller's status writes; generation counts spec changes.)
    assert again["metadata"]["generation"] == 2
    assert again["spec"] == resolved["spec"]


def test_deployments_without_a_model_are_not_touched(webhook, kube_namespace):
    apps = client.AppsV1Api(webhook.client)
    apps.create_namespaced_deployment(kube_namespace, _deployment(workload(), kube_namespace))
    stored = _stored(webhook, kube_namespace, "embedder")
    assert _gates(stored) == [] and not stored["spec"]["template"]["spec"].get("initContainers")


def test_a_user_mount_where_the_models_go_is_blocked_not_refused(webhook, hook_service, kube_namespace):
    """The API server refuses two mounts at one path (pkg/apis/core/validation: "must be unique"), so
    injecting ours there would fail the decorator's write forever; blocked instead (MountPathConflict)."""
    url, ca = hook_service
    apps = client.AppsV1Api(webhook.client)
    obj = _deployment(workload(model_names="bge-m3"), kube_namespace)
    spec = obj["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "data", "emptyDir": {}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data/modelcache/models"}]
    # The premise, on the real API server: the same container with our cache mount added is refused.
    clash = copy.deepcopy(obj)
    clash["metadata"]["annotations"] = {}
    clash["spec"]["template"]["spec"]["volumes"].append({"name": "cache", "emptyDir": {}})
    clash["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "cache", "mountPath": "/data/modelcache/models"})
    with pytest.raises(client.ApiException) as refused:
        apps.create_namespaced_deployment(kube_namespace, clash, dry_run="All")
    assert refused.value.status == 422 and "must be unique" in refused.value.body
    # Through the webhook and the decorator: stored, gated, the reason on the workload.
    apps.create_namespaced_deployment(kube_namespace, obj)
    stored = _stored(webhook, kube_namespace, "embedder")
    answer = requests.post(f"{url}/hooks/workload/sync", verify=ca, timeout=10, json={
        "controller": CONTROLLER, "object": stored, "attachments": {"Secret.v1": {}},
        "related": related(model("bge-m3", kube_namespace)), "finalizing": False}).json()
    apps.patch_namespaced_deployment("embedder", kube_namespace,
                                     {"metadata": {"annotations": answer["annotations"]}})
    after = _stored(webhook, kube_namespace, "embedder")
    why = json.loads(after["metadata"]["annotations"]["ai.deckhouse.io/model-delivery-blocked"])
    assert why["reason"] == "MountPathConflict" and "'data' at /data/modelcache/models" in why["message"]
    assert _gates(after) == [GATE] and not after["spec"]["template"]["spec"].get("initContainers")
