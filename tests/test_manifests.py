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
    assert metacontroller_routes - referenced == set(), "a hook route no controller calls"
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


def _matches(selector: dict[str, Any] | None, annotations: dict[str, str]) -> bool:
    if selector is None:
        return True
    if any(annotations.get(k) != v for k, v in (selector.get("matchAnnotations") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        present = expr["key"] in annotations
        op = expr["operator"]
        if op == "Exists" and not present or op == "DoesNotExist" and present:
            return False
        if op == "In" and annotations.get(expr["key"]) not in expr.get("values", []):
            return False
        if op == "NotIn" and present and annotations[expr["key"]] in expr.get("values", []):
            return False
    return True


def _decorator_matches(controller: dict[str, Any], kind: str, annotations: dict[str, str]) -> bool:
    # Metacontroller keeps one selector per group+kind: a later entry replaces an earlier one.
    selectors: dict[str, dict[str, Any] | None] = {}
    for res in controller["spec"]["resources"]:
        selectors[KINDS[(res["apiVersion"], res["resource"])]] = res.get("annotationSelector")
    return kind in selectors and _matches(selectors[kind], annotations)


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
    decorators = _of_kind("DecoratorController")
    matched = [d["metadata"]["name"] for d in decorators if _decorator_matches(d, kind, annotations)]
    annotated = any(k.startswith("ai.deckhouse.io/") for k in annotations)
    assert len(matched) == (1 if annotated else 0), matched


@pytest.mark.parametrize("controller", _of_kind("DecoratorController"), ids=lambda c: c["metadata"]["name"])
def test_decorator_controllers(controller):
    spec = controller["spec"]
    assert {(r["apiVersion"], r["resource"]) for r in spec["resources"]} == set(KINDS)
    assert len(spec["resources"]) == len(KINDS), "a second entry for a kind silently replaces the first"
    assert [(a["apiVersion"], a["resource"]) for a in spec["attachments"]] == [("v1", "secrets")]
    assert all(a["updateStrategy"]["method"] for a in spec["attachments"])
    assert {n: h["webhook"]["path"] for n, h in _hooks(controller).items()} == {
        h: f"/hooks/workload/{h}" for h in ("sync", "finalize", "customize")
    }
    assert spec["resyncPeriodSeconds"] > 0
