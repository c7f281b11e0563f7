
"""The Roles the hooks emit are least privilege, and the hook service needs none at all.

Per model the hooks emit at most two Roles: the worker's (``get``/``patch``
on its own Job, for the progress annotation) and, for uploads, the reader
Role users bind (``get`` on the one upload Secret). Both are checked on real
hook answers across the lifecycle in ``test_security_pods.SCENARIOS``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from hooks.worker_jobs import EVENTS_RULE
from tests.test_security_pods import SCENARIOS, _children

ROOT = Path(__file__).resolve().parent.parent
Obj = dict[str, Any]


def emitted_roles() -> list[Obj]:
    return [c for s in SCENARIOS for c in _children(s.answer) if c["kind"] in ("Role", "ClusterRole")]


def _answers_with_roles() -> list[tuple[str, list[Obj]]]:
    return [(s.name, _children(s.answer)) for s in SCENARIOS
            if any(c["kind"] == "Role" for c in _children(s.answer))]


def test_the_scenarios_emit_both_kinds_of_role():
    names = {r["metadata"]["name"] for r in emitted_roles()}
    assert any(n.startswith("ai-model-upload-reader-") for n in names)
    assert any(n.startswith("ai-clustermodel-upload-reader-") for n in names)
    assert any("-upload-reader-" not in n for n in names)


def test_hooks_emit_no_cluster_wide_rbac():
    kinds = {c["kind"] for s in SCENARIOS for c in _children(s.answer)}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}


@pytest.mark.parametrize("role", emitted_roles(), ids=lambda r: r["metadata"]["name"])
def test_every_emitted_rule_names_its_objects_and_has_no_wildcards(role):
    assert role["rules"]
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), rule
            assert all("*" not in v for v in rule.get(field, [])), rule
        if rule == EVENTS_RULE:
            continue  # create cannot name its object (RBAC ignores resourceNames for create)
        assert rule.get("resourceNames"), f"rule without resourceNames: {rule}"
        assert len(rule["resourceNames"]) == 1
        assert not {"list", "watch", "create", "delete", "deletecollection", "escalate", "bind",
                    "impersonate"} & set(rule["verbs"]), rule
        assert not any("/" in r for r in rule["resources"]), "no subresources (status, exec, ...)"


@pytest.mark.parametrize(("scenario", "children"), _answers_with_roles(), ids=lambda x: x if isinstance(x, str) else "")
def test_each_role_grants_exactly_what_its_user_needs(scenario, children):
    by_kind: dict[str, list[Obj]] = {}
    for c in children:
        by_kind.setdefault(c["kind"], []).append(c)
    jobs = {j["metadata"]["name"]: j for j in by_kind.get("Job", [])}
    secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
    for role in by_kind["Role"]:
        rules = [r for r in role["rules"] if r != EVENTS_RULE]
        if not rules:  # events beside a Model, for its catalog import's worker in the module namespace
            [binding] = [b for b in by_kind["RoleBinding"] if b["roleRef"]["name"] == role["metadata"]["name"]]
            [subject] = binding["subjects"]
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] != role["metadata"]["namespace"]
            continue
        [rule] = rules
        ns = role["metadata"]["namespace"]
        # Events only beside the Model its worker works for (a Model's own namespace).
        assert role["rules"] in ([rule], [rule, EVENTS_RULE])
        if "-upload-reader-" in role["metadata"]["name"]:
            # get on exactly the upload Secret (the one carrying url + token), nothing else.
            assert rule == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                            "resourceNames": rule["resourceNames"]}
            [name] = rule["resourceNames"]
            assert set(secrets[name]["data"]) >= {"url", "token"}
            assert secrets[name]["metadata"]["namespace"] == ns
            continue
        # The worker's Role: get+patch on one Job of this answer, in its namespace.
        assert (rule["apiGroups"], rule["resources"], sorted(rule["verbs"])) == (["batch"], ["jobs"], ["get", "patch"])
        [job_name] = rule["resourceNames"]
        assert job_name in jobs and jobs[job_name]["metadata"]["namespace"] == ns
        # Bound to the ServiceAccount that Job's pod runs as, and to nothing else.
        [binding] = [b for b in by_kind["RoleBinding"] if b["roleRef"]["name"] == role["metadata"]["name"]]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": role["metadata"]["name"]}
        [subject] = binding["subjects"]
        pod = jobs[job_name]["spec"]["template"]["spec"]
        assert subject == {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": ns}
        # No other Job in the answer runs as that account (it could patch a Job that is not its own).
        users = [n for n, j in jobs.items() if j["spec"]["template"]["spec"].get("serviceAccountName")
                 == subject["name"]]
        assert users == [job_name]
        [sa] = [s for s in by_kind["ServiceAccount"] if s["metadata"]["name"] == subject["name"]]
        assert sa["automountServiceAccountToken"] is False  # only the pod that needs it opts in


def test_no_emitted_binding_grants_a_cluster_role():
    for s in SCENARIOS:
        for c in _children(s.answer):
            if c["kind"] == "RoleBinding":
                assert c["roleRef"]["kind"] == "Role", (s.name, c["metadata"]["name"])


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_the_hook_service_cannot_call_the_kubernetes_api():
    """Why its ServiceAccount has no binding and no token: no client, no HTTP library, no sockets."""
    forbidden = {"kubernetes", "requests", "urllib3", "http", "socket", "httpx", "aiohttp"}
    for path in sorted((ROOT / "hooks").glob("*.py")):
        assert not _imports(path) & forbidden, f"{path.name} imports {_imports(path) & forbidden}"
    # lib/ modules the hooks import must not reach the API either.
    seen: set[str] = set()
    todo = [p for p in (ROOT / "hooks").glob("*.py")]
    while todo:
        path = todo.pop()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mod = node.module if isinstance(node, ast.ImportFrom) and node.level == 0 else None
            names = [mod] if mod else ([a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name and name.startswith("lib") and name not in seen:
                    seen.add(name)
                    file = ROOT / (name.replace(".", "/") + ".py")
                    pkg = ROOT / name.replace(".", "/") / "__init__.py"
                    for f in (file, pkg):
                        if f.exists():
                            assert "kubernetes" not in _imports(f), f"{f} (imported by the hooks) uses kubernetes"
                            todo.append(f)
    assert "lib.config" in seen
