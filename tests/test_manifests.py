"""Every manifest we ship parses and validates; the Metacontroller objects wire up every hook.

Files are globbed at collection time, so manifests added later under
``crds/``, ``metacontroller/``, ``deploy/`` or ``examples/`` are covered
without touching this file. Core Kubernetes kinds are checked with
``kubernetes-validate`` (strict: unknown fields are errors); our custom
resources with ``tests.support.crd_validate``; Metacontroller's kinds with
a strict schema of the fields Metacontroller v4.17 understands; kustomizations
by the files they list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from hooks.app import HOOKS
from tests.support import crd_validate as cv

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("crds", "metacontroller", "deploy", "examples")
KUBERNETES_VERSION = "1.33.0"  # a version kubernetes-validate ships schemas for; our floor
HOOK_SERVICE = {"name": "ai-models-hooks", "namespace": "d8-ai-models", "port": 8081, "protocol": "http"}
WEBHOOK_PATHS = {
    p for p in HOOKS if not p.startswith("/hooks/")
}  # called by the API server, not Metacontroller


def _yaml_files() -> list[Path]:
    return sorted(
        p for folder in FOLDERS for p in (ROOT / folder).rglob("*") if p.suffix in (".yaml", ".yml")
    )


def _documents() -> list[tuple[str, Path, dict[str, Any]]]:
    docs = []
    for path in _yaml_files():
        try:
            loaded = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue  # test_parses reports it
        for i, doc in enumerate(loaded):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                docs.append((f"{path.relative_to(ROOT)}#{i}:{doc['kind']}", path, doc))
    return docs


DOCS = _documents()
CRDS = {
    doc["spec"]["names"]["kind"]: doc
    for _, _, doc in DOCS
    if doc["kind"] == "CustomResourceDefinition" and doc["spec"]["group"] == "ai.deckhouse.io"
}
CRD_BY_PLURAL = {crd["spec"]["names"]["plural"]: crd for crd in CRDS.values()}


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [
        doc
        for _, _, doc in DOCS
        if doc["kind"] == kind and doc["apiVersion"].startswith("metacontroller.k8s.io/")
    ]


# ---------------------------------------------------------------- parsing and validation


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_parses(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert any(d is not None for d in docs), "empty manifest"
    for doc in docs:
        assert doc is None or isinstance(doc, dict), "a manifest document must be a mapping"


def test_the_manifest_folders_are_not_empty():
    kinds = {doc["kind"] for _, _, doc in DOCS}
    assert {"CustomResourceDefinition", "CompositeController", "DecoratorController"} <= kinds
    assert set(CRDS) == {"Model", "ClusterModel", "ModelCatalogSource"}


# Metacontroller's CRDs as test data: the fields and enums of CompositeController and
# DecoratorController that this module's objects may use, written down from Metacontroller v4.17.2
# (manifests/production/metacontroller-crds-v1.yaml of metacontroller/metacontroller). Anything else
# is refused (additionalProperties: false), so a field Metacontroller does not know fails here and
# not silently in a cluster. Enums: updateStrategy.method (OnDelete, Recreate, InPlace,
# RollingRecreate, RollingInPlace), hook version (v1, v2), webhook responseUnMarshallMode (loose,
# strict; v2 hooks default to strict: pkg/hooks/webhook.go), service protocol (http, https),
# selector operators (In, NotIn, Exists, DoesNotExist). ignoreStatusChanges on a decorator's
# resources and on a composite parent exists from v4.17.2's CRDs on.
_METACONTROLLER_HOOK = {
    "type": "object",
    "additionalProperties": False,
    "required": ["webhook"],
    "properties": {
        "version": {"enum": ["v1", "v2"]},
        "webhook": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "url": {"type": "string"},
                "path": {"type": "string", "pattern": "^/"},
                "timeout": {"type": "string", "pattern": r"^\d+(ms|s|m)$"},
                "caBundle": {"type": "string"},
                "responseUnMarshallMode": {"enum": ["loose", "strict"]},
                "service": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "namespace"],
                    "properties": {
                        "name": {"type": "string"},
                        "namespace": {"type": "string"},
                        "port": {"type": "integer"},
                        "protocol": {"enum": ["http", "https"]},
                    },
                },
                "etag": {"type": "object"},
            },
        },
    },
}
_UPDATE_STRATEGY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "method": {"enum": ["OnDelete", "Recreate", "InPlace", "RollingRecreate", "RollingInPlace"]},
        "statusChecks": {"type": "object"},
    },
}
_CHILD = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "resource"],
    "properties": {
        "apiVersion": {"type": "string"},
        "resource": {"type": "string"},
        "updateStrategy": _UPDATE_STRATEGY,
    },
}
_SELECTOR_EXPRESSIONS = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["key", "operator"],
        "properties": {
            "key": {"type": "string"},
            "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
            "values": {"type": "array", "items": {"type": "string"}},
        },
    },
}
_META = {"type": "object", "required": ["name"]}
_METACONTROLLER_SCHEMAS: dict[str, dict[str, Any]] = {
    "CompositeController": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "metacontroller.k8s.io/v1alpha1"},
            "kind": {"const": "CompositeController"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["parentResource", "hooks"],
                "properties": {
                    "parentResource": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["apiVersion", "resource"],
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "resource": {"type": "string"},
                            "labelSelector": {"type": "object"},
                            "revisionHistory": {"type": "object"},
                            "ignoreStatusChanges": {"type": "boolean"},
                        },
                    },
                    "childResources": {"type": "array", "items": _CHILD},
                    "generateSelector": {"type": "boolean"},
                    "resyncPeriodSeconds": {"type": "integer", "minimum": 1},
                    "hooks": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["sync"],
                        "properties": {
                            k: _METACONTROLLER_HOOK
                            for k in ("sync", "finalize", "customize", "preUpdateChild", "postUpdateChild")
                        },
                    },
                },
            },
        },
    },
    "DecoratorController": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "metacontroller.k8s.io/v1alpha1"},
            "kind": {"const": "DecoratorController"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["resources", "hooks"],
                "properties": {
                    "resources": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["apiVersion", "resource"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "resource": {"type": "string"},
                                "ignoreStatusChanges": {"type": "boolean"},
                                "labelSelector": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "matchLabels": {"type": "object"},
                                        "matchExpressions": _SELECTOR_EXPRESSIONS,
                                    },
                                },
                                "annotationSelector": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "matchAnnotations": {"type": "object"},
                                        "matchExpressions": _SELECTOR_EXPRESSIONS,
                                    },
                                },
                            },
                        },
                    },
                    "attachments": {"type": "array", "items": _CHILD},
                    "resyncPeriodSeconds": {"type": "integer", "minimum": 1},
                    "hooks": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["sync"],
                        "properties": {k: _METACONTROLLER_HOOK for k in ("sync", "finalize", "customize")},
                    },
                },
            },
        },
    },
}


def _kustomization_errors(path: Path, doc: dict[str, Any]) -> list[str]:
    """Every file a kustomization names exists (remote bases excepted)."""
    errors = []
    for key in ("resources", "components", "crds"):
        for entry in doc.get(key, []) or []:
            if "://" in entry or entry.startswith("github.com/"):
                continue
            if not (path.parent / entry).exists():
                errors.append(f"{key}: {entry} does not exist")
    for patch in doc.get("patches", []) or []:
        target = patch.get("path") if isinstance(patch, dict) else None
        if target and not (path.parent / target).exists():
            errors.append(f"patches: {target} does not exist")
    return errors


@pytest.mark.parametrize(("where", "path", "doc"), DOCS, ids=[w for w, _, _ in DOCS])
def test_object_validates(where, path, doc):
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    if group == "ai.deckhouse.io":
        assert doc["kind"] in CRDS, f"no CRD for {doc['kind']}"
        assert cv.validate(CRDS[doc["kind"]], doc) == []
    elif group == "metacontroller.k8s.io":
        assert doc["kind"] in _METACONTROLLER_SCHEMAS, f"unexpected Metacontroller kind {doc['kind']}"
        jsonschema.validate(doc, _METACONTROLLER_SCHEMAS[doc["kind"]])
    elif group == "kustomize.config.k8s.io":
        assert _kustomization_errors(path, doc) == []
    else:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.skip(f"kubernetes-validate has no schema for {doc['apiVersion']} {doc['kind']}")
        if doc["kind"] == "CustomResourceDefinition":
            assert cv.check_crd(doc) == []


@pytest.mark.parametrize(
    "doc",
    [d for _, _, d in DOCS if d["kind"] == "CustomResourceDefinition"],
    ids=lambda d: d["metadata"]["name"],
)
def test_every_crd_has_the_status_subresource(doc):
    for version in doc["spec"]["versions"]:
        assert version.get("subresources", {}).get("status") == {}, version["name"]


# ---------------------------------------------------------------- Metacontroller wiring


def _hooks(controller: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return controller["spec"]["hooks"]


def _all_controllers() -> list[dict[str, Any]]:
    return _of_kind("CompositeController") + _of_kind("DecoratorController")


def test_hook_paths_match_the_hook_service_routes():
    referenced = {h["webhook"]["path"] for c in _all_controllers() for h in _hooks(c).values()}
    metacontroller_routes = set(HOOKS) - WEBHOOK_PATHS
    assert metacontroller_routes, "hooks.app.HOOKS lists no Metacontroller routes"
    assert referenced - set(HOOKS) == set(), "a controller calls a path the hook service does not serve"
    # /hooks/workload/finalize stays served (pinned) so that a DecoratorController of an older
    # install releases its finalizers during an upgrade; no controller of ours declares it.
    uncalled = {"/hooks/workload/finalize"}
    assert metacontroller_routes - referenced == uncalled, "a hook route no controller calls"
    assert not any("finalize" in _hooks(c) for c in _of_kind("DecoratorController")), (
        "a decorator's finalize hook puts a finalizer on every user workload (issue: uninstall)")
    assert not referenced & WEBHOOK_PATHS


@pytest.mark.parametrize("controller", _all_controllers(), ids=lambda c: c["metadata"]["name"])
def test_every_hook_is_v2_on_the_hook_service(controller):
    for name, hook in _hooks(controller).items():
        assert hook["version"] == "v2", name  # v1 cannot relate cluster-scoped objects to a namespaced parent
        assert hook["webhook"]["service"] == HOOK_SERVICE, name
        assert "url" not in hook["webhook"], name


def _composite_for(plural: str) -> dict[str, Any]:
    [controller] = [
        c for c in _of_kind("CompositeController") if c["spec"]["parentResource"]["resource"] == plural
    ]
    return controller


@pytest.mark.parametrize(
    ("plural", "prefix", "hooks"),
    [
        ("models", "/hooks/model/", {"sync", "finalize", "customize"}),
        ("clustermodels", "/hooks/clustermodel/", {"sync", "finalize", "customize"}),
        ("modelcatalogsources", "/hooks/modelcatalogsource/", {"sync", "customize"}),
    ],
)
def test_composite_controllers(plural, prefix, hooks):
    controller = _composite_for(plural)
    spec = controller["spec"]
    assert spec["parentResource"]["apiVersion"] == "ai.deckhouse.io/v1alpha1"
    # Metacontroller ignores a parent without the status subresource.
    assert CRD_BY_PLURAL[plural]["spec"]["versions"][0]["subresources"]["status"] == {}
    assert spec["generateSelector"] is True
    assert spec["resyncPeriodSeconds"] > 0
    assert {name: h["webhook"]["path"] for name, h in _hooks(controller).items()} == {
        h: prefix + h for h in hooks
    }


MODEL_CHILDREN = {
    ("batch/v1", "jobs"),
    ("v1", "secrets"),
    ("v1", "services"),
    ("v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "rolebindings"),
}


@pytest.mark.parametrize(
    ("plural", "required"),
    [
        ("models", MODEL_CHILDREN),
        ("clustermodels", MODEL_CHILDREN),
        # Probes and the catalog imports (module namespace): Jobs, credentials, the workers' RBAC.
        ("modelcatalogsources", {("batch/v1", "jobs"), ("v1", "secrets"), ("v1", "serviceaccounts"),
                                 ("rbac.authorization.k8s.io/v1", "roles"),
                                 ("rbac.authorization.k8s.io/v1", "rolebindings")}),
    ],
)
def test_child_resources_and_update_strategies(plural, required):
    children = _composite_for(plural)["spec"]["childResources"]
    declared = {(c["apiVersion"], c["resource"]) for c in children}
    assert required <= declared
    assert len(declared) == len(children), "a child type is declared twice"
    for child in children:
        method = child.get("updateStrategy", {}).get("method")
        assert method, f"{child['resource']}: choose an update strategy deliberately"
        if child["resource"] == "jobs":
            # A Job's pod template is immutable: an in-place update would fail forever.
            assert method in ("OnDelete", "Recreate"), child
        if child["resource"] == "rolebindings":
            assert method in ("OnDelete", "Recreate"), "roleRef is immutable"


# -- DecoratorController selection, replayed the way Metacontroller does it


KINDS = {
    ("apps/v1", "deployments"): "Deployment",
    ("apps/v1", "statefulsets"): "StatefulSet",
    ("apps/v1", "daemonsets"): "DaemonSet",
    ("batch/v1", "cronjobs"): "CronJob",
}


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels AND matchExpressions); a decorator resource
    without one selects every object of its kind."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        present = expr["key"] in labels
        op = expr["operator"]
        if op == "Exists" and not present or op == "DoesNotExist" and present:
            return False
        if op == "In" and labels.get(expr["key"]) not in expr.get("values", []):
            return False
        if op == "NotIn" and present and labels[expr["key"]] in expr.get("values", []):
            return False
    return True


def _decorator_matches(controller: dict[str, Any], kind: str, labels: dict[str, str]) -> bool:
    # Metacontroller keeps one selector per group+kind: a later entry replaces an earlier one.
    selectors: dict[str, dict[str, Any] | None] = {}
    for res in controller["spec"]["resources"]:
        assert "annotationSelector" not in res, "selection is by the label the webhook keeps"
        selectors[KINDS[(res["apiVersion"], res["resource"])]] = res.get("labelSelector")
    return kind in selectors and _matches(selectors[kind], labels)


def _admitted(kind: str, annotations: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The workload as the API server stores it: our mutating webhook's patch applied."""
    import jsonpatch

    from lib import delivery
    from lib.config import Config

    template = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "a", "image": "a"}]}}
    spec: dict[str, Any] = {"template": template}
    if kind == "CronJob":
        spec = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    obj = {"apiVersion": "batch/v1" if kind == "CronJob" else "apps/v1", "kind": kind,
           "metadata": {"name": "w", "namespace": "ns", "annotations": dict(annotations),
                        **({"labels": labels} if labels is not None else {})}, "spec": spec}
    mutation = delivery.mutate_object(obj, Config(registry="dmcr.test:5000"))
    return jsonpatch.apply_patch(obj, mutation.patch)


ANNOTATION_CASES = {
    "none": {},
    "other": {"example.com/x": "1"},
    "model": {"ai.deckhouse.io/model": "bge-m3"},
    "clustermodel": {"ai.deckhouse.io/clustermodel": "gemma-small"},
    "both": {"ai.deckhouse.io/model": "bge-m3,bge-reranker", "ai.deckhouse.io/clustermodel": "gemma-small"},
}


@pytest.mark.parametrize("kind", sorted(KINDS.values()))
@pytest.mark.parametrize("annotations", ANNOTATION_CASES.values(), ids=ANNOTATION_CASES.keys())
def test_each_annotated_workload_is_decorated_exactly_once(kind, annotations):
    """One controller selects exactly the workloads that name models, through the label the webhook
    keeps, including a workload whose annotations were removed (the label goes, and so does the
    resolution: no finalizer is needed)."""
    decorators = _of_kind("DecoratorController")
    stored = _admitted(kind, annotations)
    matched = [d["metadata"]["name"] for d in decorators
               if _decorator_matches(d, kind, stored["metadata"].get("labels") or {})]
    annotated = any(k.startswith("ai.deckhouse.io/") for k in annotations)
    assert len(matched) == (1 if annotated else 0), matched
    # Later the annotations are removed: the label and the decorator's annotations go too.
    stale = {**annotations, "ai.deckhouse.io/model-resolution": "[]", "ai.deckhouse.io/model-delivery-blocked": "x"}
    for key in ("ai.deckhouse.io/model", "ai.deckhouse.io/clustermodel"):
        stale.pop(key, None)
    after = _admitted(kind, stale, labels={"ai.deckhouse.io/model-consumer": "true"})
    assert not any(_decorator_matches(d, kind, after["metadata"].get("labels") or {}) for d in decorators)
    assert not any(k.startswith("ai.deckhouse.io/") for k in after["metadata"].get("annotations") or {})


@pytest.mark.parametrize("controller", _of_kind("DecoratorController"), ids=lambda c: c["metadata"]["name"])
def test_decorator_controllers(controller):
    spec = controller["spec"]
    assert {(r["apiVersion"], r["resource"]) for r in spec["resources"]} == set(KINDS)
    assert len(spec["resources"]) == len(KINDS), "a second entry for a kind silently replaces the first"
    assert [(a["apiVersion"], a["resource"]) for a in spec["attachments"]] == [("v1", "secrets")]
    assert all(a["updateStrategy"]["method"] for a in spec["attachments"])
    assert {n: h["webhook"]["path"] for n, h in _hooks(controller).items()} == {
        h: f"/hooks/workload/{h}" for h in ("sync", "customize")
    }
    # Metacontroller >= 4.17.2: rollouts and pod churn (status) do not call the hook.
    assert all(r.get("ignoreStatusChanges") is True for r in spec["resources"])
    assert spec["resyncPeriodSeconds"] > 0


def test_docs_name_the_port_the_controllers_call():
    """docs/api.md once said 8080 while every controller called 8081: the page follows the objects."""
    ports = {h["webhook"]["service"]["port"] for c in _all_controllers() for h in _hooks(c).values()}
    assert len(ports) == 1
    [port] = ports
    page = (ROOT / "docs" / "api.md").read_text()
    assert f"port **{port}**" in page
    assert "CronJob (catalog probe)" not in page  # probes are Jobs (docs/catalog.md)
