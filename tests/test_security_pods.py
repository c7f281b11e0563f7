"""Every pod the module runs meets the "restricted" Pod Security Standard, and a read-only root.

Pods come from two places: the install manifests (checked in
``test_deploy.py`` with the same checker) and the hooks, which emit worker
Jobs (publish, upload server, cleanup, retries with a backoff init
container, catalog probes) and inject ``materialize`` init containers into
workloads. Here the hooks are driven through a realistic lifecycle
(``SCENARIOS``) and every pod spec they emit is checked.

``restricted_violations`` encodes the Pod Security Standards (v1.33) for
"baseline" and "restricted" plus our own rule (read-only root filesystem);
its unit tests break a good spec one rule at a time.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonpatch
import pytest

from hooks import catalogsource, webhook
from hooks import model as hooks_model
from lib import delivery
from lib.config import Config
from tests.support import hookreq as hr

Obj = dict[str, Any]

# ------------------------------------------------------------------ the checker

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}


def pod_specs(obj: Obj) -> list[Obj]:
    """The pod spec(s) an object runs: Pod, Job/Deployment/... templates, CronJob's job template."""
    kind = obj["kind"]
    if kind == "Pod":
        return [obj["spec"]]
    if kind == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [obj["spec"]["template"]["spec"]]
    return []


def restricted_violations(spec: Obj, *, only: Callable[[Obj], bool] | None = None) -> list[str]:
    """What keeps ``spec`` from the restricted standard (+ read-only root); [] when it complies.

    ``only`` limits the container checks to the containers we inject into a
    user's pod (the user's own containers and pod-level fields are theirs).
    """
    out: list[str] = []
    psc = spec.get("securityContext") or {}
    containers = [*spec.get("initContainers", []), *spec.get("containers", []),
                  *spec.get("ephemeralContainers", [])]
    ours = [c for c in containers if only is None or only(c)]
    if only is None:
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(host):
                out.append(f"{host} is set")
        for v in spec.get("volumes", []):
            kinds = set(v) - {"name"}
            if not kinds <= RESTRICTED_VOLUMES:
                out.append(f"volume {v['name']} uses {sorted(kinds - RESTRICTED_VOLUMES)}")
        for s in psc.get("sysctls", []):
            if s["name"] not in SAFE_SYSCTLS:
                out.append(f"unsafe sysctl {s['name']}")
        if psc.get("runAsUser") == 0:
            out.append("pod runAsUser 0")
    pod_nonroot = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"pod seccomp {pod_seccomp}")
    for c in ours:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities {caps['add']}")
        nonroot = sc.get("runAsNonRoot", pod_nonroot if only is None else None)
        if nonroot is not True:
            out.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or (pod_seccomp if only is None else None)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{name}: readOnlyRootFilesystem must be true")
        if (sc.get("procMount") or "Default") != "Default":
            out.append(f"{name}: procMount {sc['procMount']}")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(f"{name}: AppArmor Unconfined")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{name}: hostPort")
    return out


GOOD: Obj = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "c", "image": "x:1", "securityContext": {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}}],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


def _broken(path: str, value: Any) -> Obj:
    spec = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return spec


def test_checker_accepts_a_restricted_pod():
    assert restricted_violations(GOOD) == []


@pytest.mark.parametrize(("path", "value"), [
    ("hostNetwork", True),
    ("hostPID", True),
    ("hostIPC", True),
    ("securityContext.runAsNonRoot", None),
    ("securityContext.runAsNonRoot", False),
    ("securityContext.runAsUser", 0),
    ("securityContext.seccompProfile", None),
    ("securityContext.seccompProfile", {"type": "Unconfined"}),
    ("containers.0.securityContext.allowPrivilegeEscalation", None),
    ("containers.0.securityContext.allowPrivilegeEscalation", True),
    ("containers.0.securityContext.readOnlyRootFilesystem", False),
    ("containers.0.securityContext.capabilities", {"drop": ["NET_RAW"]}),
    ("containers.0.securityContext.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
    ("containers.0.securityContext.privileged", True),
    ("containers.0.ports", [{"containerPort": 80, "hostPort": 80}]),
    ("volumes", [{"name": "h", "hostPath": {"path": "/"}}]),
    ("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]),
])
def test_checker_catches_each_violation(path, value):
    assert restricted_violations(_broken(path, value)) != []


# ------------------------------------------------------------------ what the hooks emit

CFG = Config(namespace="d8-ai-models", registry="dmcr.test:5000", worker_image="ghcr.io/ai-models/worker:0.1.0",
             signing_key=b"security-test-signing-key-0123456789", upload_external_base="https://upload.example.com")
HF_TOKEN = "hf_SecurityTestTokenDoNotLeak0123456789"
DIGEST = "sha256:" + "cd" * 32


@dataclass
class Scenario:
    name: str
    path: str  # the hook route
    request: Obj
    answer: Obj


def _call(path: str, fn: Callable[[Obj, Config], Obj], req: Obj, out: list[Scenario], name: str) -> Obj:
    answer = fn(copy.deepcopy(req), CFG)
    out.append(Scenario(name, path, req, answer))
    return answer


def _children(answer: Obj) -> list[Obj]:
    return list(answer.get("children") or [])


def _sync_fn(parent: Obj) -> tuple[str, Callable[[Obj, Config], Obj]]:
    if parent["kind"] == "ClusterModel":
        return "/hooks/clustermodel/sync", hooks_model.clustermodel_sync
    return "/hooks/model/sync", hooks_model.model_sync


def _lifecycle(parent: Obj, related: list[Obj], out: list[Scenario], name: str) -> None:
    """Fresh → publishing → transient failure → retry with backoff → Ready → finalize with cleanup."""
    path, fn = _sync_fn(parent)
    a = _call(path, fn, hr.sync_request(parent, related=related), out, f"{name}:fresh")
    jobs = [c for c in _children(a) if c["kind"] == "Job"]
    if not jobs:
        return
    job = jobs[0]
    others = [hr.observe(c) for c in _children(a) if c["kind"] != "Job"]
    p = hr.next_parent(parent, a)
    running = hr.observe(job, status=hr.job_status(active=1), annotations={"ai.deckhouse.io/progress": "42%"})
    a = _call(path, fn, hr.sync_request(p, [running, *others], related), out, f"{name}:publishing")
    p = hr.next_parent(p, a)
    failed = hr.observe(job, status=hr.job_status(failed=1, condition="Failed"))
    failed = hr.reported(failed, hr.error_result("RegistryUnavailable", "registry down"))
    a = _call(path, fn, hr.sync_request(p, [failed, *others], related), out, f"{name}:retry")
    p = hr.next_parent(p, a)
    retry = [c for c in _children(a) if c["kind"] == "Job"]
    if retry:
        job = retry[0]
        done = hr.observe(job, status=hr.job_status(succeeded=1, condition="Complete"))
        dest = job["spec"]["template"]["spec"]["containers"][0]["args"]
        destination = dest[dest.index("--destination") + 1] if "--destination" in dest else "x"
        done = hr.reported(done, hr.success_result(destination, digest=DIGEST))
        a = _call(path, fn, hr.sync_request(p, [done, *others], related), out, f"{name}:ready")
        p = hr.next_parent(p, a)
    fin_path = path.replace("/sync", "/finalize")
    fin = hooks_model.clustermodel_finalize if parent["kind"] == "ClusterModel" else hooks_model.model_finalize
    _call(fin_path, fin, hr.sync_request(p, [], related, finalizing=True), out, f"{name}:finalize")


def _catalog(out: list[Scenario]) -> None:
    from tests.test_catalog_hooks import SOURCE_CHILDREN, SOURCE_RELATED, pull_secret, source

    parent = source()
    req = hr.sync_request(parent, [], [pull_secret()], child_types=SOURCE_CHILDREN, related_types=SOURCE_RELATED)
    _call("/hooks/modelcatalogsource/sync", catalogsource.sync, req, out, "catalog:fresh")


def _workload(out: list[Scenario]) -> None:
    from hooks import workload as workload_hooks
    from tests.test_webhook_mutate import review
    from tests.test_workload_hooks import CONTROLLER, model, related, workload

    obj = workload(model_names="bge-m3", cluster_names="qwen")
    rel = related(model("bge-m3"), model("qwen", None))
    req = {"controller": CONTROLLER, "object": obj, "attachments": {"Secret.v1": {}}, "related": rel,
           "finalizing": False}
    a = _call("/hooks/workload/sync", workload_hooks.sync, req, out, "workload:sync")
    decorated = copy.deepcopy(obj)
    decorated["metadata"]["annotations"].update({k: v for k, v in a.get("annotations", {}).items() if v})
    _call("/webhooks/workload/mutate", webhook.mutate, review(decorated, old=obj), out, "workload:mutate")
    for kind in ("StatefulSet", "DaemonSet", "CronJob"):
        w = workload(kind, model_names="bge-m3", cluster_names="qwen")
        w["metadata"]["annotations"].update({k: v for k, v in a.get("annotations", {}).items() if v})
        _call("/webhooks/workload/mutate", webhook.mutate, review(w, operation="CREATE"), out, f"workload:{kind}")


def run_scenarios() -> list[Scenario]:
    out: list[Scenario] = []
    token = hr.secret("hf-token", "ai-demo", {"token": HF_TOKEN})
    _lifecycle(hr.model("private", source={"url": "https://huggingface.co/acme/private-llm",
                                           "authSecretRef": {"name": "hf-token"}}), [token], out, "hf-private")
    _lifecycle(hr.model("public"), [], out, "hf-public")
    _lifecycle(hr.cluster_model("qwen"), [], out, "ollama-cluster")
    _lifecycle(hr.model("uploaded", source={"upload": {}}), [], out, "upload")
    _lifecycle(hr.cluster_model("shared-upload", source={"upload": {}}), [], out, "cluster-upload")
    _catalog(out)
    _workload(out)
    return out


SCENARIOS = run_scenarios()


def emitted(kind: str | None = None) -> list[tuple[str, Obj]]:
    return [(s.name, c) for s in SCENARIOS for c in _children(s.answer) if kind is None or c["kind"] == kind]


def mutated_workloads() -> list[tuple[str, Obj]]:
    out = []
    for s in SCENARIOS:
        if s.path == "/webhooks/workload/mutate" and s.answer["response"].get("patch"):
            ops = json.loads(base64.b64decode(s.answer["response"]["patch"]))
            out.append((s.name, jsonpatch.apply_patch(s.request["request"]["object"], ops)))
    return out


def test_the_scenarios_cover_every_kind_of_pod():
    names = {c["metadata"]["labels"].get("ai.deckhouse.io/worker", "probe") for _, c in emitted("Job")}
    assert {"publish", "upload-server", "cleanup"} <= names
    assert any(c["spec"]["template"]["spec"].get("initContainers") for _, c in emitted("Job")), "no backoff pod"
    assert any(c["metadata"]["namespace"] == CFG.namespace for _, c in emitted("Job")), "no ClusterModel Job"
    assert any(s.name.startswith("catalog") and _children(s.answer) for s in SCENARIOS)
    assert len(mutated_workloads()) == 4


@pytest.mark.parametrize("case", emitted("Job") + emitted("CronJob"),
                         ids=lambda c: f"{c[0]}:{c[1]['metadata']['name']}" if isinstance(c, tuple) else "")
def test_every_emitted_worker_pod_is_restricted(case):
    _, job = case
    [spec] = pod_specs(job)
    assert restricted_violations(spec) == []
    sa_token = spec.get("automountServiceAccountToken")
    assert sa_token is False or (sa_token is True and spec.get("serviceAccountName")), \
        "a token is mounted only for a dedicated, scoped ServiceAccount"
    for c in spec["containers"] + spec.get("initContainers", []):
        assert c["image"] == CFG.worker_image
        assert c["resources"]["limits"].get("memory"), c["name"]


@pytest.mark.parametrize("case", mutated_workloads(), ids=lambda c: c[0] if isinstance(c, tuple) else "")
def test_injected_init_containers_are_restricted_whatever_the_pod(case):
    _, obj = case
    [spec] = pod_specs(obj)
    ours = [c for c in spec["initContainers"] if c["name"].startswith(delivery.PREFIX)]
    assert ours
    assert restricted_violations(spec, only=lambda c: c["name"].startswith(delivery.PREFIX)) == []
    # The app containers get the files read-only and never the registry credential.
    for c in spec["containers"]:
        mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
        assert mounts[delivery.CACHE_VOLUME].get("readOnly") is True
        assert delivery.PULL_VOLUME not in mounts


def test_no_pod_automounts_a_token_and_only_the_worker_container_of_a_reporting_job_gets_one():
    """Workers report progress and their result on their own Job: a projected token, mounted read-only
    in the worker container alone (never in the backoff init container), for a ServiceAccount whose
    Role in the same answer may get/patch that Job and nothing else."""
    reporting = {"publish", "upload-server", "cleanup", "catalog-probe", "catalog-import"}
    seen = set()
    for s in SCENARIOS:
        kids = _children(s.answer)
        for job in (c for c in kids if c["kind"] == "Job"):
            spec = job["spec"]["template"]["spec"]
            name = job["metadata"]["name"]
            assert spec.get("automountServiceAccountToken") is False, name
            worker = job["metadata"]["labels"].get("ai.deckhouse.io/worker")
            assert worker in reporting, name
            seen.add(worker)
            [vol] = [v for v in spec["volumes"] if "projected" in v and any(
                "serviceAccountToken" in src for src in v["projected"]["sources"])]
            [worker_c] = spec["containers"]
            mounted = [c["name"] for c in spec["containers"] + spec.get("initContainers", [])
                       if any(m["name"] == vol["name"] for m in c.get("volumeMounts", []))]
            assert mounted == [worker_c["name"]], name
            assert next(m for m in worker_c["volumeMounts"] if m["name"] == vol["name"])["readOnly"] is True
            account = spec["serviceAccountName"]
            bindings = [b for b in kids if b["kind"] == "RoleBinding"
                        and {"kind": "ServiceAccount", "name": account,
                             "namespace": job["metadata"]["namespace"]} in b["subjects"]]
            roles = {b["roleRef"]["name"] for b in bindings}
            rules = [r for c in kids if c["kind"] == "Role" and c["metadata"]["name"] in roles for r in c["rules"]
                     if "batch" in r["apiGroups"]]  # (other rules, e.g. Events, are test_security_rbac's)
            assert rules and all(r["verbs"] == ["get", "patch"] and r["resources"] == ["jobs"] for r in rules), name
            assert any(name in r["resourceNames"] for r in rules), f"{name}: its Role does not name it"
    assert seen >= {"publish", "upload-server", "cleanup", "catalog-probe"}
