"""deploy/ on a real kube-apiserver: accepted, admitted by Pod Security, and RBAC that means what we say.

``kubectl apply --server-side -k deploy/`` goes to the real API server
(``kube`` fixture) with kube-controller-manager running, so the module
namespace's ``restricted`` Pod Security level judges the real Pods the
Deployment/ReplicaSet and Job controllers create, ClusterRoles aggregate to
view/edit/admin for real, and every permission question is answered by the
RBAC authorizer (SubjectAccessReview), impersonation and its escalation
check. Metacontroller's and cert-manager's CRDs are not ours and not on
these machines: minimal stand-ins (any fields allowed) let their objects in.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devstack.control_plane import ControlPlane

ROOT = Path(__file__).resolve().parent.parent
NS = "d8-ai-models"
MC = "system:serviceaccount:metacontroller:metacontroller"
HOOKS = f"system:serviceaccount:{NS}:ai-models-hooks"
Obj = dict[str, Any]

# (group, kind, plural, scope) of the foreign CRDs deploy/ uses.
FOREIGN = [
    ("metacontroller.k8s.io", "CompositeController", "compositecontrollers", "Cluster"),
    ("metacontroller.k8s.io", "DecoratorController", "decoratorcontrollers", "Cluster"),
    ("cert-manager.io", "Issuer", "issuers", "Namespaced"),
    ("cert-manager.io", "Certificate", "certificates", "Namespaced"),
]


def _stub_crd(group: str, kind: str, plural: str, scope: str) -> Obj:
    version = "v1alpha1" if group.startswith("metacontroller") else "v1"
    # *.k8s.io groups are protected: Metacontroller's own CRDs carry this annotation too.
    annotations = {"api-approved.kubernetes.io": "unapproved"} if group.endswith(".k8s.io") else {}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "annotations": annotations},
        "spec": {
            "group": group, "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [{"name": version, "served": True, "storage": True, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {"type": "object",
                                                         "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }


def wait_for(what: str, ok: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ok()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def deployed(kube: ControlPlane) -> Iterator[tuple[ControlPlane, str, str]]:
    """deploy/ applied with server-side apply; (control plane, kubectl stdout, stderr)."""
    stubs = yaml.safe_dump_all([_stub_crd(*f) for f in FOREIGN])
    kube.kubectl("apply", "--server-side", "-f", "-", input=stubs)
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *[f"crd/{p}.{g}" for g, _, p, _ in FOREIGN])
    wait_for(f"namespace {NS} not terminating (an earlier test may have deleted it)", lambda: _not_terminating(kube))
    result = kube.kubectl("apply", "--server-side", "--field-manager=ai-models-tests", "--force-conflicts", "-k", str(ROOT / "deploy"))
    yield kube, result.stdout, result.stderr
    # failurePolicy Fail towards a Service nobody serves here: do not leave it to other tests.
    kube.kubectl("delete", "mutatingwebhookconfiguration", "ai-models-workloads", "--ignore-not-found")


def _not_terminating(kube: ControlPlane) -> bool:
    try:
        return client.CoreV1Api(kube.client).read_namespace(NS).status.phase != "Terminating"
    except client.ApiException as e:
        return e.status == 404


def rendered(kube: ControlPlane) -> list[Obj]:
    """``kubectl kustomize deploy/`` with the built kubectl."""
    return [d for d in yaml.safe_load_all(kube.kubectl("kustomize", str(ROOT / "deploy")).stdout) if d]


def test_every_object_of_deploy_is_applied_without_warnings(deployed):
    kube, stdout, stderr = deployed
    applied = [line for line in stdout.splitlines() if "serverside-applied" in line]
    assert len(applied) == len(rendered(kube)), stdout
    # Pod Security `warn: restricted` on d8-ai-models reports any workload template that is not.
    assert "Warning" not in stderr, stderr


def test_webhook_configuration_is_stored_as_written(deployed):
    kube = deployed[0]
    api = client.AdmissionregistrationV1Api(kube.client)
    [hook] = api.read_mutating_webhook_configuration("ai-models-workloads").webhooks
    assert (hook.failure_policy, hook.side_effects, hook.reinvocation_policy) == ("Fail", "None", "IfNeeded")
    assert [c.name for c in hook.match_conditions] == ["names-a-model"]  # the CEL compiled


def _deployment(name: str, annotations: dict[str, str] | None = None) -> Obj:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": "busybox"}]}}},
    }


def test_webhook_match_conditions_decide_who_is_called(deployed, kube_namespace):
    """The service behind the webhook does not run here: an unannotated Deployment never calls it
    (admitted), an annotated one does and is refused (failurePolicy Fail)."""
    apps = client.AppsV1Api(deployed[0].client)
    apps.create_namespaced_deployment(kube_namespace, _deployment("plain"))
    with pytest.raises(client.ApiException) as refused:
        apps.create_namespaced_deployment(kube_namespace, _deployment("named", {"ai.deckhouse.io/model": "m"}))
    assert "workloads.ai.deckhouse.io" in refused.value.body
    # The escape hatch label skips the webhook (objectSelector).
    escaped = _deployment("escaped", {"ai.deckhouse.io/model": "m"})
    escaped["metadata"]["labels"] = {"ai.deckhouse.io/model-delivery": "disabled"}
    apps.create_namespaced_deployment(kube_namespace, escaped)


# ---------------------------------------------------------------- Pod Security on real Pods


@pytest.mark.parametrize("deployment", ["ai-models-hooks", "dmcr"])
def test_module_pods_pass_restricted_pod_security(deployed, deployment):
    """The ReplicaSet controller creates the Pods, the PodSecurity admission admits them."""
    kube = deployed[0]
    apps, core = client.AppsV1Api(kube.client), client.CoreV1Api(kube.client)
    ns = core.read_namespace(NS)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"

    def settled() -> list[Any]:
        rss = [rs for rs in apps.list_namespaced_replica_set(NS).items
               if any(o.name == deployment for o in rs.metadata.owner_references or [])]
        failed = [c.message for rs in rss for c in rs.status.conditions or [] if c.type == "ReplicaFailure"]
        assert not failed, failed
        return [rs for rs in rss if rs.spec.replicas and rs.status.replicas == rs.spec.replicas]

    [rs] = wait_for(f"pods of {deployment}", settled)
    pods = [p for p in core.list_namespaced_pod(NS).items
            if any(o.uid == rs.metadata.uid for o in p.metadata.owner_references or [])]
    assert len(pods) == rs.spec.replicas


def test_dmcr_gc_job_pod_passes_restricted_pod_security(deployed):
    kube = deployed[0]
    core = client.CoreV1Api(kube.client)
    kube.kubectl("create", "job", "-n", NS, "--from=cronjob/dmcr-gc", "dmcr-gc-now")

    def pod() -> list[Any]:
        events = client.CoreV1Api(kube.client).list_namespaced_event(
            NS, field_selector="involvedObject.name=dmcr-gc-now").items
        failed = [e.message for e in events if e.reason == "FailedCreate"]
        assert not failed, failed
        return core.list_namespaced_pod(NS, label_selector="job-name=dmcr-gc-now").items

    wait_for("the dmcr-gc Job's pod", pod)


# ---------------------------------------------------------------- RBAC


def _sa_groups(user: str) -> list[str]:
    if not user.startswith("system:serviceaccount:"):
        return ["system:authenticated"]
    ns = user.split(":")[2]
    return ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]


def can(kube: ControlPlane, user: str, verb: str, resource: str, namespace: str = "", name: str = "") -> bool:
    """The RBAC authorizer's answer (SubjectAccessReview); ``resource`` is ``[group/]plural[/sub]``."""
    parts = resource.split("/")
    group = parts.pop(0) if "." in parts[0] or parts[0] in ("apps", "batch") else ""
    attrs = {"verb": verb, "group": group, "resource": parts[0], "subresource": parts[1] if len(parts) > 1 else "",
             "namespace": namespace, "name": name}
    review = client.AuthorizationV1Api(kube.client).create_subject_access_review(
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
         "spec": {"user": user, "groups": _sa_groups(user), "resourceAttributes": attrs}})
    return bool(review.status.allowed)


AI = "ai.deckhouse.io"
# (verb, resource, namespace) Metacontroller needs for our controllers (metacontroller/*.yaml).
MC_ALLOWED = [
    ("watch", f"{AI}/models", ""), ("update", f"{AI}/models", "tenant"), ("patch", f"{AI}/models/status", "tenant"),
    ("list", f"{AI}/clustermodels", ""), ("update", f"{AI}/clustermodels/status", ""),
    ("update", f"{AI}/modelcatalogsources/status", ""),
    ("create", "batch/jobs", "tenant"), ("delete", "batch/jobs", NS), ("list", "namespaces", ""),
    ("create", "secrets", "tenant"), ("create", "services", "tenant"), ("create", "serviceaccounts", "tenant"),
    ("create", "rbac.authorization.k8s.io/roles", "tenant"),
    ("create", "rbac.authorization.k8s.io/rolebindings", "tenant"),
    ("patch", "apps/deployments", "tenant"), ("watch", "apps/statefulsets", ""), ("update", "apps/daemonsets", "t"),
    ("patch", "batch/cronjobs", "tenant"), ("create", "events", "tenant"),
]
# What it must not get from us: deleting users' objects, running code, cluster-wide RBAC.
MC_REFUSED = [
    ("delete", f"{AI}/models", "tenant"), ("create", "pods", "tenant"), ("create", "pods/exec", "tenant"),
    # No hook relates Pods (worker results are on Jobs): Metacontroller caches none of them.
    ("list", "pods", ""), ("watch", "pods", "tenant"),
    ("create", "rbac.authorization.k8s.io/clusterroles", ""),
    ("create", "rbac.authorization.k8s.io/clusterrolebindings", ""),
    ("escalate", "rbac.authorization.k8s.io/roles", "tenant"), ("bind", "rbac.authorization.k8s.io/roles", "tenant"),
    ("impersonate", "users", ""), ("get", "nodes", ""), ("delete", "apps/deployments", "tenant"),
    ("create", "apiextensions.k8s.io/customresourcedefinitions", ""),
]


@pytest.mark.parametrize(("verb", "resource", "ns"), MC_ALLOWED, ids=lambda x: str(x))
def test_metacontroller_may(deployed, verb, resource, ns):
    assert can(deployed[0], MC, verb, resource, ns)


@pytest.mark.parametrize(("verb", "resource", "ns"), MC_REFUSED, ids=lambda x: str(x))
def test_metacontroller_may_not(deployed, verb, resource, ns):
    assert not can(deployed[0], MC, verb, resource, ns)


@pytest.mark.parametrize(
    ("verb", "resource", "ns"),
    [("get", "secrets", NS), ("list", "secrets", ""), ("get", f"{AI}/models", "tenant"),
     ("list", "pods", NS), ("create", "authentication.k8s.io/tokenreviews", ""),
     ("get", "configmaps", NS)],
    ids=lambda x: str(x),
)
def test_the_hook_service_may_do_nothing(deployed, verb, resource, ns):
    assert not can(deployed[0], HOOKS, verb, resource, ns)


def _bind(kube: ControlPlane, namespace: str, user: str, cluster_role: str) -> None:
    rbac = client.RbacAuthorizationV1Api(kube.client)
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": f"{user}-{cluster_role}".replace(":", "-")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})


def _aggregated(kube: ControlPlane, role: str, resource: str) -> bool:
    rules = client.RbacAuthorizationV1Api(kube.client).read_cluster_role(role).rules or []
    return any(AI in (r.api_groups or []) and resource in (r.resources or []) for r in rules)


def test_tenant_roles_aggregate_into_edit_and_view(deployed, kube_namespace):
    """Namespace `edit` may create Models but not write their status; `view` may only read."""
    kube = deployed[0]
    for role in ("view", "edit", "admin"):
        wait_for(f"aggregation into {role}", lambda role=role: _aggregated(kube, role, "models"))
    _bind(kube, kube_namespace, "alice", "edit")
    _bind(kube, kube_namespace, "bob", "view")
    ns = kube_namespace
    assert can(kube, "alice", "create", f"{AI}/models", ns)
    assert can(kube, "alice", "delete", f"{AI}/models", ns)
    assert not can(kube, "alice", "update", f"{AI}/models/status", ns)
    assert not can(kube, "alice", "patch", f"{AI}/models/status", ns)
    assert not can(kube, "alice", "create", f"{AI}/clustermodels")
    assert not can(kube, "alice", "get", "secrets", NS)  # the module namespace's Secrets
    assert not can(kube, "alice", "create", f"{AI}/models", "other")
    assert can(kube, "bob", "list", f"{AI}/models", ns)
    assert can(kube, "bob", "get", f"{AI}/models/status", ns)
    assert not can(kube, "bob", "create", f"{AI}/models", ns)
    assert not can(kube, "bob", "get", "secrets", ns)


def test_cluster_roles_for_the_shared_catalog(deployed):
    kube = deployed[0]
    rbac = client.RbacAuthorizationV1Api(kube.client)
    for user, role in (("carol", "ai-models:cluster-viewer"), ("dave", "ai-models:cluster-admin")):
        rbac.create_cluster_role_binding({
            "metadata": {"name": f"test-{user}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
    assert can(kube, "carol", "list", f"{AI}/clustermodels")
    assert not can(kube, "carol", "create", f"{AI}/clustermodels")
    assert can(kube, "dave", "create", f"{AI}/clustermodels")
    assert can(kube, "dave", "create", f"{AI}/modelcatalogsources")
    assert not can(kube, "dave", "update", f"{AI}/clustermodels/status")
    assert not can(kube, "dave", "get", "secrets", NS)


# ---------------------------------------------------------------- what the hooks emit, applied as Metacontroller


def _emitted_children() -> list[Obj]:
    """Every child the hooks emit across test_security_pods' lifecycle scenarios (deduplicated)."""
    from tests.test_security_pods import SCENARIOS, _children

    seen: dict[tuple[str, str], Obj] = {}
    for s in SCENARIOS:
        for c in _children(s.answer):
            seen.setdefault((c["kind"], c["metadata"]["name"]), c)
    return list(seen.values())


def test_metacontroller_can_create_every_child_the_hooks_emit(deployed, kube_namespace):
    """Created while impersonating Metacontroller's account, in a namespace enforcing `restricted`:
    the schema, RBAC (incl. the escalation check on the per-model Roles) and Pod Security all say yes."""
    kube = deployed[0]
    core = client.CoreV1Api(kube.client)
    core.patch_namespace(kube_namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}})
    children = []
    for c in _emitted_children():
        c = copy.deepcopy(c)
        c["metadata"]["namespace"] = kube_namespace
        for s in c.get("subjects", []):
            s["namespace"] = kube_namespace
        children.append(c)
    kinds = {c["kind"] for c in children}
    assert {"Job", "Secret", "Role", "RoleBinding", "ServiceAccount"} <= kinds, kinds
    docs = yaml.safe_dump_all(children)
    result = kube.kubectl("apply", "--server-side", "--field-manager=metacontroller", "-f", "-",
                          input=docs, as_user=MC, check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    # The Job controller makes their Pods; Pod Security admits them.
    jobs = [c["metadata"]["name"] for c in children if c["kind"] == "Job"]

    def pods() -> bool:
        events = core.list_namespaced_event(kube_namespace).items
        failed = [e.message for e in events if e.reason == "FailedCreate"]
        assert not failed, failed
        names = {p.metadata.labels.get("job-name") for p in core.list_namespaced_pod(kube_namespace).items}
        return set(jobs) <= names

    wait_for("the emitted Jobs' pods", pods)
