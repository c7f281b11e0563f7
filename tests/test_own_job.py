"""The worker reports its result and progress on its own Job, through the API server.

``jobs/own_job.py`` with the ``kubernetes`` client, the way a worker pod does it:
a projected service-account token, the cluster CA, ``KUBERNETES_SERVICE_HOST``.
Run against the real kube-apiserver (``kube`` fixture: real TokenRequest, real
RBAC with the Role the Model hook emits) and against the in-memory stand-in
that ``make run`` uses (``devstack/memory_api.py``), which must refuse
what the real one refuses.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from devstack.cluster import Cluster
from devstack.store import Store
from hooks import model_children as ch
from hooks.model_parent import parse_parent
from jobs import common, own_job
from lib.api.types import ANNOTATION_PROGRESS, ANNOTATION_RESULT
from lib.config import Config
from tests.support import hookreq as hr

Obj = dict[str, Any]
RESULT = {"artifact": {"digest": "sha256:" + "ab" * 32, "uri": "x"}}


def _objects(namespace: str) -> tuple[list[Obj], Obj, Obj]:
    """The worker RBAC and two publish Jobs of one Model, as the hook emits them."""
    m = parse_parent({"parent": hr.model(namespace=namespace)}, Config(), cluster=False)
    mine = ch.publish_job(m, Config(), source="https://huggingface.co/x/y", attempt=1, auth=ch.SourceAuth())
    other = ch.publish_job(m, Config(), source="https://huggingface.co/x/y", attempt=2, auth=ch.SourceAuth())
    return ch.worker_rbac(m, mine["metadata"]["name"]), mine, other


def _pod_env(store: Store, tmp: Path, job: Obj, *, name: str | None = None) -> dict[str, str]:
    """What the kubelet gives the worker container: token, CA, the API server's address."""
    ns = job["metadata"]["namespace"]
    pod = {"metadata": {"name": f"{job['metadata']['name']}-abcde", "namespace": ns, "uid": ""},
           "spec": job["spec"]["template"]["spec"]}
    if hasattr(store, "api_client"):  # a token bound to a Pod needs the Pod: bind to the SA only
        pod = store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod["metadata"]["name"],
                            "namespace": ns}, "spec": {"serviceAccountName": job["spec"]["template"]["spec"][
                                "serviceAccountName"], "automountServiceAccountToken": False,
                                "containers": [{"name": "c", "image": "x"}]}})
    token = store.service_account_token(ns, job["spec"]["template"]["spec"]["serviceAccountName"], pod, 3600)
    kube_dir = tmp / "kube"
    kube_dir.mkdir(exist_ok=True)
    (kube_dir / "token").write_text(token)
    ca = store.get("ConfigMap", "kube-root-ca.crt", ns)
    for _ in range(300):  # kube-controller-manager's root-ca publisher writes it soon after the namespace
        if ca is not None:
            break
        time.sleep(0.1)
        ca = store.get("ConfigMap", "kube-root-ca.crt", ns)
    assert ca is not None, "kube-root-ca.crt is published in every namespace"
    (kube_dir / "ca.crt").write_text(ca["data"]["ca.crt"])
    host, port = store.in_cluster()
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}
    env.update(KUBERNETES_SERVICE_HOST=host, KUBERNETES_SERVICE_PORT=str(port), AI_MODELS_KUBE_DIR=str(kube_dir))
    if name:
        env["AI_MODELS_JOB_NAME"] = name
    return env


def _exercise(store: Store, tmp: Path, namespace: str) -> None:
    rbac, mine, other = _objects(namespace)
    for obj in [*rbac, mine, other]:
        store.create(obj)
    env = _pod_env(store, tmp, mine)
    job = own_job.OwnJob.from_env(env)
    assert job is not None and job.name == mine["metadata"]["name"]
    job.sleep = lambda s: None

    job.patch({ANNOTATION_PROGRESS: "40%"})
    data = json.dumps(RESULT).encode()
    assert job.report_result(data)
    got = store.get("Job", mine["metadata"]["name"], namespace)["metadata"]["annotations"]
    assert json.loads(got[ANNOTATION_RESULT]) == RESULT and got[ANNOTATION_PROGRESS] == "40%"

    # A new Pod of the same Job starts clean: an earlier Pod's result is not reused after a crash.
    job.begin()
    got = store.get("Job", mine["metadata"]["name"], namespace)["metadata"].get("annotations") or {}
    assert ANNOTATION_RESULT not in got and ANNOTATION_PROGRESS not in got

    # The Role names this Job only: the same token cannot write another Job's result.
    stray = own_job.OwnJob.from_env({**env, "AI_MODELS_JOB_NAME": other["metadata"]["name"]})
    assert stray is not None
    stray.sleep = lambda s: None
    assert not stray.report_result(data)
    got = store.get("Job", other["metadata"]["name"], namespace)["metadata"].get("annotations") or {}
    assert ANNOTATION_RESULT not in got

    # A token that is not the API server's is refused.
    (Path(env["AI_MODELS_KUBE_DIR"]) / "token").write_text("forged")
    forged = own_job.OwnJob.from_env(env)
    assert forged is not None
    forged.sleep = lambda s: None
    assert not forged.report_result(data)


def test_worker_reports_on_its_own_job_only_in_memory_stand_in(tmp_path):
    store = Cluster()
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai-demo"}})
    _exercise(store, tmp_path, "ai-demo")


def test_worker_reports_on_its_own_job_only_real_api_server(tmp_path, kube, kube_namespace):
    from devstack.kubestore import KubeStore

    store = KubeStore(kube.api_client())
    _exercise(store, tmp_path, kube_namespace)


def test_outside_a_cluster_nothing_is_reported(tmp_path):
    assert own_job.OwnJob.from_env({}) is None
    named = {"AI_MODELS_JOB_NAME": "j", "AI_MODELS_JOB_NAMESPACE": "n"}
    assert own_job.OwnJob.from_env(named) is None  # no API server address
    kube_dir = tmp_path / "kube"
    kube_dir.mkdir()
    env = {**named, "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1",
           "AI_MODELS_KUBE_DIR": str(kube_dir)}
    assert own_job.OwnJob.from_env(env) is None  # no token


def test_finish_reports_the_result_before_the_process_exits(tmp_path, monkeypatch):
    seen: list[bytes] = []

    events: list[tuple[str, str, bool]] = []
    order: list[str] = []

    class Fake:
        command = "publish"

        def report_result(self, data: bytes) -> bool:
            seen.append(data)
            order.append("result")
            return True

        def event(self, reason: str, note: str, *, warning: bool = False) -> None:
            events.append((reason, note, warning))
            order.append("event")

        def elapsed(self) -> float:
            return 2.0

    monkeypatch.setattr(own_job, "_current", [Fake()])
    code = common.finish(str(tmp_path / "result"), {"error": {"reason": "SourceUnavailable", "message": "503"}})
    assert code == common.EXIT_TRANSIENT
    assert json.loads(seen[0]) == {"error": {"reason": "SourceUnavailable", "message": "503"}}
    assert (tmp_path / "result").read_bytes() == seen[0]  # the same document in the termination message
    assert events == [("SourceUnavailable", "503", True)]  # a Warning Event with the result's reason
    # The Event before the result: the result makes the object Ready or Failed, and whoever
    # reads Events then (kubectl describe, tests/test_e2e_mounts.py) must find it.
    assert order == ["event", "result"]


def test_event_notes_never_carry_credentials_from_a_source_url():
    import argparse

    from jobs import events

    args = argparse.Namespace(source="https://user:hf_secret@huggingface.co/acme/x?token=hf_secret#frag",
                              destination="dmcr/ai-models/x")
    reason, note = events.started("publish", args)
    assert reason == "PublishStarted" and "hf_secret" not in note and "https://huggingface.co/acme/x" in note
    result = {"artifact": {"uri": "dmcr/r@sha256:" + "ab" * 32, "sizeBytes": 3 << 30}}
    stats = events.stats(result, 12.0)
    assert stats == {"seconds": 12.0, "bytes": 3 << 30, "mibPerSecond": 256.0}
    assert events.finished("publish", {**result, "stats": stats}) == (
        "Published", "published dmcr/r@sha256:" + "ab" * 32 + ": 3.0 GiB in 12.0 s (256.0 MiB/s)", False)
    assert events.finished("publish", {"error": {"reason": "SourceUnavailable", "message": "503"}}) == (
        "SourceUnavailable", "503", True)


def test_events_go_beside_their_object_and_need_rbac_in_memory_stand_in(tmp_path):
    """The in-memory API refuses what the real one refuses (pkg/apis/core/validation/events.go)."""
    store = Cluster()
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai-demo"}})
    rbac, mine, _ = _objects("ai-demo")
    for obj in [*rbac, mine]:
        store.create(obj)
    env = _pod_env(store, tmp_path, mine)
    job = own_job.OwnJob.from_env(env)
    assert job is not None and job.regarding["kind"] == "Model"
    job.event("PublishStarted", "publishing x")
    [ev] = store.list("Event", "ai-demo")
    assert ev["regarding"] == job.regarding and ev["reason"] == "PublishStarted" and ev["type"] == "Normal"
    # Without the events rule the same worker records nothing (and does not fail).
    role = store.get("Role", rbac[1]["metadata"]["name"], "ai-demo")
    role["rules"] = role["rules"][:1]
    store.update(role)
    job.event("Published", "done")
    assert [e["reason"] for e in store.list("Event", "ai-demo")] == ["PublishStarted"]


BAD_EVENTS = {
    "no reportingInstance": {"reportingInstance": ""},
    "no action": {"action": ""},
    "type Info": {"type": "Info"},
    "note over 1 KiB": {"note": "x" * 1100},
}


def _post_events(store: Store, tmp: Path, namespace: str) -> dict[str, int]:
    """A good Event and each malformed one, as the worker's client sends them: status per case."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    rbac, mine, _ = _objects(namespace)
    for obj in [*rbac, mine]:
        store.create(obj)
    env = _pod_env(store, tmp, mine)
    api = client.EventsV1Api(own_job.api_client_from_env(env))
    base = {"metadata": {"name": "m.abc", "namespace": namespace},
            "eventTime": dt.datetime(2026, 12, 2, 10, 0, 0, 1, tzinfo=dt.UTC),  # MicroTime needs a fraction
            "reportingController": "ai.deckhouse.io/worker", "reportingInstance": "pod-1", "action": "Publish",
            "reason": "Published", "type": "Normal", "note": "ok",
            "regarding": {"apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "Model", "name": "m",
                          "namespace": namespace}}
    out = {}
    for case, change in {"good": {}, **BAD_EVENTS}.items():
        body = {**base, **change, "metadata": {**base["metadata"], "name": f"m.{len(out)}"}}
        try:
            api.create_namespaced_event(namespace, body)
            out[case] = 201
        except ApiException as e:
            out[case] = e.status
    return out


def test_malformed_events_are_refused_by_the_memory_stand_in_as_by_the_api_server(tmp_path):
    store = Cluster()
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ai-demo"}})
    assert _post_events(store, tmp_path, "ai-demo") == {"good": 201, **{k: 422 for k in BAD_EVENTS}}


def test_malformed_events_are_refused_by_the_real_api_server(tmp_path, kube, kube_namespace):
    """The reference for the stand-in above (kube-apiserver 1.34, pkg/apis/core/validation/events.go)."""
    from devstack.kubestore import KubeStore

    store = KubeStore(kube.api_client())
    assert _post_events(store, tmp_path, kube_namespace) == {"good": 201, **{k: 422 for k in BAD_EVENTS}}
