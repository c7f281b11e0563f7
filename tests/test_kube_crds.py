"""Our CRDs on a real kube-apiserver: the cases tests/test_crds.py checks with its own validator.

tests/test_crds.py validates objects with ``tests.support.crd_validate`` (a
re-implementation of the API server's schema, list and CEL checks). Here the
same cases go to the real API server (``kube`` fixture): what the validator
accepts must be created, what it refuses must be refused by the server's own
OpenAPI/CEL validation with strict field validation, status goes through
the status subresource without pruning, and ``kubectl get`` prints the
columns we declare.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devstack.control_plane import ControlPlane
from tests.test_crds import (
    ACCEPTED,
    BAD_STATUS,
    CATALOG_OK,
    CATALOG_REFUSED,
    REFUSED,
    UPDATES,
    _custom_resources,
    _status_with,
    catalog_source,
    full_catalog_status,
    full_model_status,
    model,
)

ROOT = Path(__file__).resolve().parent.parent
GROUP, VERSION = "ai.deckhouse.io", "v1alpha1"
PLURALS = {"Model": "models", "ClusterModel": "clustermodels", "ModelCatalogSource": "modelcatalogsources"}
CRD_TEXT = "".join(p.read_text() for p in sorted((ROOT / "crds").glob("*.yaml")))
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def crds(kube: ControlPlane) -> ControlPlane:
    """crds/ applied with server-side apply (kustomize) and Established."""
    kube.kubectl("apply", "--server-side", "--field-manager=ai-models-tests", "--force-conflicts", "-k", str(ROOT / "crds"))
    names = [f"crd/{p}.{GROUP}" for p in PLURALS.values()]
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return kube


@pytest.fixture
def api(crds: ControlPlane) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(crds.client)


def _unique(obj: Obj, namespace: str) -> Obj:
    """A copy with a fresh name (cluster-scoped objects outlive a test namespace) in ``namespace``."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["name"] = f"{obj['metadata']['name']}-{secrets.token_hex(3)}"
    if obj["kind"] == "Model":
        obj["metadata"]["namespace"] = namespace
    return obj


def create(api: client.CustomObjectsApi, obj: Obj, namespace: str, *, dry_run: bool = False) -> Obj:
    """Create ``obj`` (Models in ``namespace``) with strict field validation."""
    obj = copy.deepcopy(obj)
    kw: dict[str, Any] = {"field_validation": "Strict"}
    if dry_run:
        kw["dry_run"] = "All"
    plural = PLURALS[obj["kind"]]
    if obj["kind"] == "Model":
        obj["metadata"]["namespace"] = namespace
        return api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, obj, **kw)
    return api.create_cluster_custom_object(GROUP, VERSION, plural, obj, **kw)


def replace(api: client.CustomObjectsApi, obj: Obj, *, status: bool = False) -> Obj:
    plural, name = PLURALS[obj["kind"]], obj["metadata"]["name"]
    ns = obj["metadata"].get("namespace")
    if ns:
        call = api.replace_namespaced_custom_object_status if status else api.replace_namespaced_custom_object
        return call(GROUP, VERSION, ns, plural, name, obj, field_validation="Strict")
    call = api.replace_cluster_custom_object_status if status else api.replace_cluster_custom_object
    return call(GROUP, VERSION, plural, name, obj, field_validation="Strict")


def refusal(fn: Any, *args: Any, **kwargs: Any) -> str:
    """The API server's message for a refused request; fails the test if it was accepted."""
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        assert e.status in (400, 422), (e.status, e.body)
        return str(json.loads(e.body).get("message", e.body))
    pytest.fail("the real API server accepted it")


def assert_reason(message: str, fragment: str) -> None:
    """Refused for the reason our validator gives: our CEL messages (written in crds/) verbatim,
    unknown fields by strict field validation, missing required fields by name."""
    if fragment in CRD_TEXT:
        assert fragment in message, message
    elif m := re.fullmatch(r"'(\w+)' was unexpected", fragment):
        assert "strict decoding error: unknown field" in message and f'{m[1]}"' in message, message
    elif m := re.fullmatch(r"'(\w+)' is a required(?: property)?", fragment):
        assert f"{m[1]}: Required value" in message, message


# ---------------------------------------------------------------- the CRDs and the guide's examples


def test_crds_are_established_with_status_subresource(crds: ControlPlane):
    ext = client.ApiextensionsV1Api(crds.client)
    for plural in PLURALS.values():
        crd = ext.read_custom_resource_definition(f"{plural}.{GROUP}")
        conditions = {c.type: c.status for c in crd.status.conditions}
        assert conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"
        assert conditions.get("NonStructuralSchema") is None
        [version] = crd.spec.versions
        assert version.subresources.status is not None


@pytest.fixture(scope="module")
def example_namespaces(crds: ControlPlane) -> Iterator[None]:
    core = client.CoreV1Api(crds.client)
    names = ["ai-demo", "d8-ai-models"]
    existing = {n.metadata.name for n in core.list_namespace().items}
    made = [n for n in names if n not in existing]
    for n in made:
        core.create_namespace({"metadata": {"name": n}})
    yield
    for n in made:
        core.delete_namespace(n)


def test_every_example_is_accepted_by_server_side_apply(crds: ControlPlane, example_namespaces: None):
    """examples/ as the user guide shows them (Models, Secrets, Deployments, RBAC), applied for real."""
    result = crds.kubectl("apply", "--server-side", "--field-manager=ai-models-tests", "-f", str(ROOT / "examples"))
    applied = [line for line in result.stdout.splitlines() if "serverside-applied" in line]
    docs = [d for p in sorted((ROOT / "examples").glob("*.y*ml")) for d in yaml.safe_load_all(p.read_text()) if d]
    assert len(applied) == len(docs), result.stdout
    assert "Warning" not in result.stderr, result.stderr
    crds.kubectl("delete", "--wait=false", "-f", str(ROOT / "examples"))


@pytest.mark.parametrize(("where", "obj"), _custom_resources(), ids=[w for w, _ in _custom_resources()])
def test_example_custom_resource_is_accepted(api, kube_namespace, where, obj):
    created = create(api, _unique(obj, kube_namespace), kube_namespace, dry_run=True)
    assert created["spec"]["source" if obj["kind"] != "ModelCatalogSource" else "registry"]


# ---------------------------------------------------------------- spec: accepted and refused


@pytest.mark.parametrize("obj", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted(api, kube_namespace, obj):
    created = create(api, obj, kube_namespace, dry_run=True)
    assert created["spec"] == obj["spec"]


@pytest.mark.parametrize(("obj", "fragment"), REFUSED.values(), ids=REFUSED.keys())
def test_refused(api, kube_namespace, obj, fragment):
    assert_reason(refusal(create, api, obj, kube_namespace, dry_run=True), fragment)


@pytest.mark.parametrize(("old", "new"), UPDATES.values(), ids=UPDATES.keys())
def test_source_change_on_update_is_refused(api, kube_namespace, old, new):
    stored = create(api, _unique(old, kube_namespace), kube_namespace)
    changed = copy.deepcopy(stored)
    changed["spec"] = copy.deepcopy(new["spec"])
    message = refusal(replace, api, changed)
    assert "immutable" in message, message


def test_update_that_keeps_the_source_is_accepted(api, kube_namespace):
    old = model({"url": "https://huggingface.co/a/b", "authSecretRef": {"name": "t"}})
    stored = create(api, _unique(old, kube_namespace), kube_namespace)
    stored["metadata"]["labels"] = {"team": "search"}
    updated = replace(api, stored)
    assert updated["metadata"]["labels"] == {"team": "search"}
    assert updated["metadata"]["generation"] == 1  # labels are not spec


@pytest.mark.parametrize("obj", CATALOG_OK.values(), ids=CATALOG_OK.keys())
def test_catalog_source_accepted(api, kube_namespace, obj):
    create(api, obj, kube_namespace, dry_run=True)


@pytest.mark.parametrize(("obj", "fragment"), CATALOG_REFUSED.values(), ids=CATALOG_REFUSED.keys())
def test_catalog_source_refused(api, kube_namespace, obj, fragment):
    assert_reason(refusal(create, api, obj, kube_namespace, dry_run=True), fragment)


def test_catalog_source_defaults_are_applied_by_the_server(api, kube_namespace):
    created = create(api, catalog_source(), kube_namespace, dry_run=True)
    assert (created["spec"]["tag"], created["spec"]["insecure"], created["spec"]["refreshIntervalSeconds"]) == (
        "latest", False, 300)


# ---------------------------------------------------------------- status


def _stored(api: client.CustomObjectsApi, kind: str, namespace: str) -> Obj:
    obj = catalog_source() if kind == "ModelCatalogSource" else model({"upload": {}}, kind=kind)
    return create(api, _unique(obj, namespace), namespace)


def test_status_in_a_create_is_dropped(api, kube_namespace):
    """Only the status subresource writes status: a user cannot forge Ready."""
    obj = _unique({**model({"upload": {}}), "status": {"phase": "Ready"}}, kube_namespace)
    assert "status" not in create(api, obj, kube_namespace)


@pytest.mark.parametrize(
    ("kind", "status"),
    [("Model", full_model_status()), ("ClusterModel", full_model_status()),
     ("ModelCatalogSource", full_catalog_status())],
)
def test_full_status_round_trips_through_the_status_subresource(api, kube_namespace, kind, status):
    """Every field the hooks write is declared: nothing pruned, nothing refused."""
    stored = _stored(api, kind, kube_namespace)
    stored["status"] = status
    assert replace(api, stored, status=True)["status"] == status


def test_status_subresource_ignores_spec_changes(api, kube_namespace):
    stored = _stored(api, "Model", kube_namespace)
    stored["spec"] = {"source": {"url": "https://huggingface.co/a/b"}}
    stored["status"] = {"phase": "Pending"}
    written = replace(api, stored, status=True)
    assert written["spec"] == {"source": {"upload": {}}} and written["status"] == {"phase": "Pending"}


@pytest.mark.parametrize(("path", "value", "fragment"), BAD_STATUS.values(), ids=BAD_STATUS.keys())
def test_bad_status_is_refused(api, kube_namespace, path, value, fragment):
    stored = _stored(api, "Model", kube_namespace)
    stored["status"] = _status_with(path, value)
    assert_reason(refusal(replace, api, stored, status=True), fragment)


# ---------------------------------------------------------------- kubectl get


def _columns(output: str) -> tuple[list[str], list[str]]:
    header, row = output.splitlines()[:2]
    return header.split(), row.split()


def test_printer_columns_as_kubectl_prints_them(api, kube, kube_namespace):
    stored = _stored(api, "Model", kube_namespace)
    stored["status"] = full_model_status()
    replace(api, stored, status=True)
    out = kube.kubectl("get", "models", "-n", kube_namespace, stored["metadata"]["name"]).stdout
    header, row = _columns(out)
    assert header == ["NAME", "PHASE", "FORMAT", "FAMILY", "SIZE", "PROGRESS", "AGE"]
    s = full_model_status()
    assert row[:6] == [stored["metadata"]["name"], s["phase"], s["resolved"]["format"], s["resolved"]["family"],
                       str(s["artifact"]["sizeBytes"]), s["progress"]]


def test_catalog_source_printer_columns(api, kube, kube_namespace):
    stored = _stored(api, "ModelCatalogSource", kube_namespace)
    stored["status"] = full_catalog_status()
    replace(api, stored, status=True)
    header, row = _columns(kube.kubectl("get", "modelcatalogsources", stored["metadata"]["name"]).stdout)
    assert header == ["NAME", "PHASE", "REVISION", "MODELS", "AGE"]
    s = full_catalog_status()
    assert row[:4] == [stored["metadata"]["name"], s["phase"], s["catalogRevision"],
                       ",".join(m["name"] for m in s["models"])]
    api.delete_cluster_custom_object(GROUP, VERSION, "modelcatalogsources", stored["metadata"]["name"])


@pytest.mark.parametrize("validation", ["Ignore", "Warn", "Strict"])
def test_clustermodel_auth_secret_ref_is_refused_even_without_strict_field_validation(api, validation):
    """An undeclared field is pruned silently under Ignore/Warn: a ClusterModel would go on without the
    Secret its author meant. Declared and refused by a CEL rule, it fails for every client."""
    obj = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterModel",
           "metadata": {"name": f"private-{secrets.token_hex(3)}"},
           "spec": {"source": {"url": "https://huggingface.co/acme/private", "authSecretRef": {"name": "hf"}}}}
    message = refusal(api.create_cluster_custom_object, GROUP, VERSION, "clustermodels", obj,
                      field_validation=validation)
    assert "not allowed on a ClusterModel" in message
