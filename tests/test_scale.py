"""Cluster scale: what one change costs in hook calls, with thousands of Models and workloads.

The strict Metacontroller stand-in (its wake-up rules follow Metacontroller v4.17:
a parent's own events, its related objects' events through the cached customize
answers, resyncs; ``ignoreStatusChanges``) drives the real workload hooks over
HTTP on the in-memory store with 5,000 Deployments naming 2,000 Models in ten
namespaces. Counted per change:

- a Model becoming Ready wakes only the workloads that name it (and never one
  in another namespace naming a Model of the same name);
- a workload's status change (rollouts, pod churn) calls no hook at all;
- nothing runs customize again (it is cached per workload generation).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from devstack.cluster import Cluster
from devstack.metacontroller import Metacontroller, load_controllers
from hooks.app import create_app
from lib.api.naming import model_repository
from lib.config import Config

pytestmark = pytest.mark.slow  # 5,000 Deployments through the real hooks (~35 s)
NAMESPACES = [f"team-{i}" for i in range(10)]
MODELS_PER_NS = 200  # 2,000 Models
WORKLOADS_PER_NS = 500  # 5,000 Deployments
REGISTRY = "dmcr.test:5000"
DIGEST = "sha256:" + "c" * 64


@pytest.fixture(scope="module")
def hooks_url() -> Iterator[str]:
    cfg = Config(registry=REGISTRY, signing_key=b"scale-test-signing-key-0123456789abcdef")
    class KeepAlive(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"  # one connection for thousands of calls, as Metacontroller's client

        def log_request(self, *args: object, **kwargs: object) -> None:
            pass

    server = make_server("127.0.0.1", 0, create_app(cfg), threaded=True, request_handler=KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def model_name(i: int) -> str:
    return f"model-{i:03d}"


def workload(ns: str, i: int) -> dict:
    """Deployment ``i`` names one Model of its namespace (2 or 3 workloads per Model); the label is
    the one the mutating webhook keeps on workloads that name models."""
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"app-{i:04d}", "namespace": ns,
                         "labels": {"ai.deckhouse.io/model-consumer": "true"},
                         "annotations": {"ai.deckhouse.io/model": model_name(i % MODELS_PER_NS)}},
            "spec": {"selector": {"matchLabels": {"app": f"app-{i}"}},
                     "template": {"metadata": {"labels": {"app": f"app-{i}"}},
                                  "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}}


def settle(mc: Metacontroller, timeout: float = 300) -> None:
    """Step until no parent is due soon: what remains queued are resyncAfterSeconds (30 s and more)."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline:
        mc.step()  # delivers the events of the previous step's writes, then syncs what is due
        quiet = quiet + 1 if not any(due <= time.monotonic() + 5 for due in mc._queue.values()) else 0
        if quiet >= 2:
            return
    pytest.fail(f"the stand-in did not settle: errors {mc.errors[-3:]}")


def test_one_change_wakes_only_the_workloads_it_concerns(hooks_url):
    cluster = Cluster()
    for ns in NAMESPACES:
        cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for i in range(MODELS_PER_NS):
            cluster.create({"apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "Model",
                            "metadata": {"name": model_name(i), "namespace": ns},
                            "spec": {"source": {"url": "https://huggingface.co/acme/m"}}})
        for i in range(WORKLOADS_PER_NS):
            cluster.create(workload(ns, i))
    decorators = [c for c in load_controllers() if c["kind"] == "DecoratorController"]
    assert [c["metadata"]["name"] for c in decorators] == ["ai-models-workloads"]
    mc = Metacontroller(cluster, hooks_url, decorators)
    started = time.monotonic()
    settle(mc)
    initial = time.monotonic() - started
    total = len(NAMESPACES) * WORKLOADS_PER_NS
    # Each workload: one customize, and syncs until its blocked annotation is written (2 at most).
    assert mc.count(hook="customize") == total
    assert total <= mc.count(hook="sync") <= 2 * total, mc.count(hook="sync")
    assert not mc.errors, mc.errors[:3]

    # A Model becomes Ready: exactly the workloads naming it are synced, once or twice (the second
    # is the event of the decorator's own annotation write), and nobody else.
    mc.hook_calls.clear()
    ns, target = NAMESPACES[3], model_name(7)
    m = cluster.get("Model", target, ns)
    repo = model_repository(namespace=ns, name=target, uid=m["metadata"]["uid"])
    cluster.set_status("Model", target, ns, {"phase": "Ready", "artifact": {
        "uri": f"{REGISTRY}/{repo}@{DIGEST}", "digest": DIGEST, "sizeBytes": 1,
        "mediaType": "application/vnd.oci.image.manifest.v1+json"}})
    started = time.monotonic()
    settle(mc)
    one_change = time.monotonic() - started
    naming = {f"{ns}/app-{i:04d}" for i in range(WORKLOADS_PER_NS) if i % MODELS_PER_NS == 7}
    woken = {p for (_, hook, p), n in mc.hook_calls.items() if n and hook == "sync"}
    assert woken == naming, sorted(woken ^ naming)[:5]
    assert mc.count(hook="customize") == 0
    assert mc.count(hook="sync") <= 2 * len(naming)
    for name in naming:
        app = cluster.get("Deployment", name.split("/")[1], ns)
        assert repo in app["metadata"]["annotations"]["ai.deckhouse.io/model-resolution"]

    # A rollout's status changes on every workload call no hook (ignoreStatusChanges).
    mc.hook_calls.clear()
    for i in range(0, WORKLOADS_PER_NS, 5):
        cluster.set_status("Deployment", f"app-{i:04d}", NAMESPACES[0], {"observedGeneration": 1, "replicas": 1})
    settle(mc)
    assert mc.count() == 0, dict(list(mc.hook_calls.items())[:5])
    print(f"\nscale: {total} workloads, {len(NAMESPACES) * MODELS_PER_NS} Models: first pass {initial:.1f}s, "
          f"one Model Ready {one_change:.2f}s for {len(naming)} workloads")
