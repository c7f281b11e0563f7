"""The CRDs accept the user guide's examples, refuse what issue 2 lists, and declare every status field.

Objects are checked with ``tests.support.crd_validate`` (OpenAPI schema with
strict unknown fields, list semantics, every CEL rule including transition
rules); the validator's own behaviour is pinned at the end of this file,
since other tests rely on it to catch a hook writing a status the API
server would prune or refuse.
"""

from __future__ import annotations

import copy
import os
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from lib.api import types
from tests.support import crd_validate as cv

ROOT = Path(__file__).resolve().parent.parent
API = "ai.deckhouse.io/v1alpha1"


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "crds" / name).read_text())


CRDS = {
    "Model": _load("models.yaml"),
    "ClusterModel": _load("clustermodels.yaml"),
    "ModelCatalogSource": _load("modelcatalogsources.yaml"),
}


def check(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return cv.validate(CRDS[obj["kind"]], obj, old)


def model(source: Any, *, kind: str = "Model", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "m"}
    if kind == "Model":
        meta["namespace"] = "ai-demo"
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": {"source": source}, **extra}


# ---------------------------------------------------------------- the CRDs themselves


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_crd_lints_clean(kind):
    """Structural, every field described (kubectl explain), rules compile, columns resolve."""
    assert cv.check_crd(CRDS[kind]) == []


@pytest.mark.parametrize(
    ("kind", "plural", "scope"),
    [
        ("Model", "models", "Namespaced"),
        ("ClusterModel", "clustermodels", "Cluster"),
        ("ModelCatalogSource", "modelcatalogsources", "Cluster"),
    ],
)
def test_names_scope_and_status_subresource(kind, plural, scope):
    spec = CRDS[kind]["spec"]
    assert spec["group"] == "ai.deckhouse.io"
    assert (spec["names"]["kind"], spec["names"]["plural"], spec["scope"]) == (kind, plural, scope)
    [version] = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"].get("status") == {}


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("Model", ["Phase", "Format", "Family", "Size", "Progress", "Age"]),
        ("ClusterModel", ["Phase", "Format", "Family", "Size", "Progress", "Age"]),
        ("ModelCatalogSource", ["Phase", "Revision", "Models", "Age"]),
    ],
)
def test_printer_columns(kind, columns):
    [version] = CRDS[kind]["spec"]["versions"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns


def test_model_and_clustermodel_differ_only_by_auth_secret_ref():
    def schema(kind: str) -> dict[str, Any]:
        return copy.deepcopy(CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])

    namespaced, cluster = schema("Model"), schema("ClusterModel")
    assert namespaced["properties"]["status"] == cluster["properties"]["status"]
    source = namespaced["properties"]["spec"]["properties"]["source"]
    assert "authSecretRef" in source["properties"]
    # The ClusterModel declares it too, only to refuse it with a CEL rule: an undeclared field would be
    # dropped silently by a client without strict field validation (the API server prunes it).
    csource = cluster["properties"]["spec"]["properties"]["source"]
    assert "authSecretRef" in csource["properties"]
    assert any(r["rule"] == "!has(self.authSecretRef)" for r in csource["x-kubernetes-validations"])
    for src in (source, csource):
        del src["properties"]["authSecretRef"]
        src["x-kubernetes-validations"] = [r for r in src["x-kubernetes-validations"] if "authSecretRef" not in r["rule"]]
    for s in (namespaced, cluster):
        for node in (s, s["properties"]["spec"], s["properties"]["spec"]["properties"]["source"]):
            node.pop("description")
    assert namespaced == cluster


def test_spec_source_rules_are_declared_on_the_source_node():
    source = CRDS["Model"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["source"]
    rules = [r["rule"] for r in source["x-kubernetes-validations"]]
    assert "self == oldSelf" in rules
    assert not any(cv.is_transition_rule(r) for r in rules if r != "self == oldSelf")


# ---------------------------------------------------------------- the user guide's examples

EXAMPLES = ROOT / "examples"
GUIDE_EXAMPLES = [
    "model-huggingface.yaml",
    "secret-hf-private-token.yaml",
    "model-huggingface-private.yaml",
    "clustermodel-ollama.yaml",
    "model-upload.yaml",
    "rolebinding-model-uploader.yaml",
    "model-catalog.yaml",
    "model-catalog-default-source.yaml",
    "deployment-model.yaml",
    "deployment-clustermodel.yaml",
    "deployment-multiple-models.yaml",
]


@pytest.mark.parametrize("name", GUIDE_EXAMPLES)
def test_every_guide_example_is_in_examples(name):
    assert (EXAMPLES / name).is_file()


def _example_documents() -> list[dict[str, Any]]:
    return [d for p in sorted(EXAMPLES.glob("*.y*ml")) for d in yaml.safe_load_all(p.read_text()) if d]


def _guide_manifests(text: str) -> list[dict[str, Any]]:
    """Complete manifests in the guide: from an ``apiVersion:`` line at column 0 to the next blank line."""
    blocks, current = [], None
    for line in text.splitlines():
        if current is None and line.startswith("apiVersion:"):
            current = [line]
        elif current is not None and line.strip():
            current.append(line)
        elif current is not None:
            blocks.append("\n".join(current))
            current = None
    if current:
        blocks.append("\n".join(current))
    return [d for b in blocks for d in yaml.safe_load_all(b) if d]


GUIDE = Path(os.environ.get("AI_MODELS_USER_GUIDE", ROOT.parent / "shared" / "spec" / "user-guide.txt"))


@pytest.mark.skipif(not GUIDE.is_file(), reason="the user guide is not beside this checkout")
def test_examples_are_the_guides_manifests_verbatim():
    guide = _guide_manifests(GUIDE.read_text())
    assert len(guide) >= 8
    examples = _example_documents()
    missing = [f"{d['kind']}/{d['metadata']['name']}" for d in guide if d not in examples]
    assert missing == []


def _custom_resources() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.y*ml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ai.deckhouse.io/"):
                out.append((f"{path.name}#{i}", doc))
    return out


@pytest.mark.parametrize(("where", "obj"), _custom_resources(), ids=[w for w, _ in _custom_resources()])
def test_example_custom_resources_validate(where, obj):
    assert check(obj) == []


def test_examples_cover_every_source_kind_and_resource():
    found = {(o["kind"], next(iter(o["spec"].get("source", {"-": 0})))) for _, o in _custom_resources()}
    assert {("Model", "url"), ("Model", "upload"), ("Model", "catalog"), ("ClusterModel", "url")} <= found
    assert any(k == "ModelCatalogSource" for k, _ in found)


# ---------------------------------------------------------------- spec: accepted and refused

ACCEPTED = {
    "hf-url": model({"url": "https://huggingface.co/BAAI/bge-m3"}),
    "url-with-auth": model({"url": "https://huggingface.co/a/b", "authSecretRef": {"name": "tok"}}),
    "malformed-url-is-a-status-matter": model({"url": "not a url at all"}),
    "ftp-url-is-a-status-matter": model({"url": "ftp://example.com/x.gguf"}),
    "upload": model({"upload": {}}),
    "catalog-with-source": model({"catalog": {"name": "qwen3-8b", "sourceName": "dmz"}}),
    "catalog-without-source": model({"catalog": {"name": "qwen3-8b"}}),
    "cluster-url": model({"url": "https://ollama.com/library/qwen3:0.6b"}, kind="ClusterModel"),
    "cluster-upload": model({"upload": {}}, kind="ClusterModel"),
    "cluster-catalog": model({"catalog": {"name": "x"}}, kind="ClusterModel"),
}


@pytest.mark.parametrize("obj", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted(obj):
    assert check(obj) == []


def _without_source() -> dict[str, Any]:
    obj = model({})
    obj["spec"] = {}
    return obj


def _without_spec() -> dict[str, Any]:
    obj = model({})
    del obj["spec"]
    return obj


# (object, a fragment the error must contain: refused for the right reason)
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "url-and-upload": (model({"url": "https://huggingface.co/a/b", "upload": {}}), "exactly one"),
    "upload-and-catalog": (model({"upload": {}, "catalog": {"name": "x"}}), "exactly one"),
    "url-and-catalog": (model({"url": "https://x", "catalog": {"name": "x"}}), "exactly one"),
    "all-three": (model({"url": "u", "upload": {}, "catalog": {"name": "x"}}), "exactly one"),
    "empty-source": (model({}), "exactly one"),
    "missing-source": (_without_source(), "'source' is a required property"),
    "missing-spec": (_without_spec(), "'spec' is a required property"),
    "catalog-without-name": (model({"catalog": {"sourceName": "dmz"}}), "'name' is a required property"),
    "catalog-empty-name": (model({"catalog": {"name": ""}}), "spec.source.catalog.name"),
    "auth-on-clustermodel": (
        model({"url": "https://huggingface.co/a/b", "authSecretRef": {"name": "t"}}, kind="ClusterModel"),
        "not allowed on a ClusterModel",
    ),
    "auth-with-upload": (model({"upload": {}, "authSecretRef": {"name": "t"}}), "allowed only with"),
    "auth-with-catalog": (
        model({"catalog": {"name": "x"}, "authSecretRef": {"name": "t"}}),
        "allowed only with",
    ),
    "auth-without-name": (model({"url": "https://x", "authSecretRef": {}}), "'name' is a required"),
    "auth-extra-field": (
        model({"url": "https://x", "authSecretRef": {"name": "t", "namespace": "other"}}),
        "'namespace' was unexpected",
    ),
    "unknown-spec-field": ({**model({"url": "https://x"}), "spec": {"source": {"url": "u"}, "x": 1}}, "'x'"),
    "unknown-source-field": (model({"url": "https://x", "revision": "main"}), "'revision' was unexpected"),
    "unknown-upload-field": (model({"upload": {"file": "a.gguf"}}), "'file' was unexpected"),
    "unknown-top-level-field": ({**model({"upload": {}}), "extra": True}, "'extra' was unexpected"),
    "unknown-metadata-field": (
        {**model({"upload": {}}), "metadata": {"name": "m", "namespace": "a", "lables": {}}},
        "'lables' was unexpected",
    ),
    "url-int": (model({"url": 42}), "42 is not of type 'string'"),
    "url-list": (model({"url": ["https://x"]}), "is not of type 'string'"),
    "url-object": (model({"url": {"href": "https://x"}}), "is not of type 'string'"),
    "upload-string": (model({"upload": "yes"}), "'yes' is not of type 'object'"),
    "bad-name": (
        {**model({"upload": {}}), "metadata": {"name": "Bad_Name", "namespace": "a"}},
        "metadata.name",
    ),
}


@pytest.mark.parametrize(("obj", "fragment"), REFUSED.values(), ids=REFUSED.keys())
def test_refused(obj, fragment):
    errors = check(obj)
    assert errors, "accepted, but the API server must refuse it"
    assert any(fragment in e for e in errors), errors


UPDATES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "url-changed": (
        model({"url": "https://huggingface.co/a/b"}),
        model({"url": "https://huggingface.co/a/c"}),
    ),
    "url-to-upload": (model({"url": "https://huggingface.co/a/b"}), model({"upload": {}})),
    "upload-to-catalog": (model({"upload": {}}), model({"catalog": {"name": "x"}})),
    "catalog-name-changed": (model({"catalog": {"name": "x"}}), model({"catalog": {"name": "y"}})),
    "catalog-source-added": (
        model({"catalog": {"name": "x"}}),
        model({"catalog": {"name": "x", "sourceName": "d"}}),
    ),
    "auth-added": (model({"url": "https://x"}), model({"url": "https://x", "authSecretRef": {"name": "t"}})),
    "cluster-url-changed": (
        model({"url": "https://ollama.com/library/a"}, kind="ClusterModel"),
        model({"url": "https://ollama.com/library/b"}, kind="ClusterModel"),
    ),
}


@pytest.mark.parametrize(("old", "new"), UPDATES.values(), ids=UPDATES.keys())
def test_source_change_on_update_is_refused(old, new):
    assert check(old) == [] and check(new) == []  # each is fine on its own
    errors = check(new, old=old)
    assert any("immutable" in e for e in errors), errors


def test_update_that_keeps_the_source_is_accepted():
    old = model({"url": "https://huggingface.co/a/b", "authSecretRef": {"name": "t"}})
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"team": "search"}
    new["status"] = {"phase": "Ready"}
    assert check(new, old=old) == []


# ---------------------------------------------------------------- status: declared, so never pruned

NOW = "2026-11-27T04:00:00Z"


def full_model_status() -> dict[str, Any]:
    """Every status field the hooks write, filled in."""
    condition = {
        "reason": "ArtifactPublished",
        "message": "published",
        "lastTransitionTime": NOW,
        "observedGeneration": 1,
    }
    return {
        "phase": "Ready",
        "progress": "100%",
        "observedGeneration": 1,
        "attempt": 2,
        "conditions": [
            {"type": t, "status": "True", **condition}
            for t in ("ArtifactResolved", "MetadataResolved", "Ready")
        ],
        "artifact": {
            "uri": "dmcr.d8-ai-models.svc:5000/ai-models/catalog/namespaced/ai-demo/m/uid@sha256:" + "a" * 64,
            "digest": "sha256:" + "a" * 64,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "sizeBytes": 17_179_869_184,  # 16 GiB: needs int64
        },
        "resolved": {
            "format": "GGUF",
            "family": "qwen3",
            "architecture": "qwen3",
            "parameterCount": 8_190_735_360,
            "quantization": "Q4_K_M",
            "contextWindowTokens": 40960,
            "supportedEndpointTypes": ["Chat", "TextGeneration"],
            "supportedFeatures": ["ToolCalling"],
        },
        "source": {
            "resolvedType": "Catalog",
            "resolvedRevision": "0123456789abcdef0123456789abcdef01234567",
            "remoteDigest": "sha256:" + "b" * 64,
            "catalog": {
                "sourceName": "dmz",
                "catalogRevision": "sha256:" + "c" * 64,
                "remoteDigest": "sha256:" + "b" * 64,
                "reference": "ai-models/qwen3-8b@sha256:" + "b" * 64,
            },
        },
        "upload": {"secretName": "ai-model-upload-m", "expiresAt": NOW, "session": 1},
        "cleanup": {"attempt": 1, "message": "registry answered 503; retrying"},
    }


def full_catalog_status() -> dict[str, Any]:
    return {
        "phase": "Ready",
        "catalogRevision": "sha256:" + "c" * 64,
        "models": [
            {
                "name": "qwen3-8b",
                "reference": "ai-models/qwen3-8b@sha256:" + "b" * 64,
                "digest": "sha256:" + "b" * 64,
                "format": "GGUF",
                "family": "qwen3",
                "sizeBytes": 5_000_000_000,
            }
        ],
        "lastProbeTime": NOW,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "CatalogReady",
                "message": "",
                "lastTransitionTime": NOW,
                "observedGeneration": 3,
            }
        ],
        "observedGeneration": 3,
        "probeAttempt": 7,
    }


def _leaves(schema: dict[str, Any], path: str = "") -> list[str]:
    if schema.get("type") == "object" and schema.get("properties"):
        return [leaf for k, s in schema["properties"].items() for leaf in _leaves(s, f"{path}.{k}")]
    if schema.get("type") == "array" and schema["items"].get("type") == "object":
        return _leaves(schema["items"], f"{path}[*]")
    return [path]


def _has(value: Any, path: str) -> bool:
    for part in path.strip(".").replace("[*]", ".[*]").split("."):
        if part == "[*]":
            if not isinstance(value, list) or not value:
                return False
            value = value[0]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return False
    return True


def _status_schema(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("Model", full_model_status()),
        ("ClusterModel", full_model_status()),
        ("ModelCatalogSource", full_catalog_status()),
    ],
)
def test_full_status_validates_and_covers_every_declared_field(kind, status):
    obj = model({"upload": {}}, kind=kind) if kind != "ModelCatalogSource" else catalog_source()
    assert cv.validate_status(CRDS[kind], obj, status) == []
    missing = [p for p in _leaves(_status_schema(kind)) if not _has(status, p)]
    assert missing == [], "the full status fixture must fill every declared field"


@pytest.mark.parametrize(
    ("typed", "path"),
    [
        (types.ArtifactInfo, "artifact"),
        (types.ResolvedInfo, "resolved"),
        (types.SourceInfo, "source"),
        (types.Condition, "conditions"),
    ],
)
def test_status_declares_every_field_of_the_worker_result_types(typed, path):
    schema = _status_schema("Model")["properties"][path]
    schema = schema.get("items", schema)
    assert set(typing.get_type_hints(typed)) <= set(schema["properties"])


def test_phase_enum_is_the_phase_type():
    assert _status_schema("Model")["properties"]["phase"]["enum"] == [p.value for p in types.Phase]


def test_every_reason_fits_the_condition_reason_pattern():
    obj = model({"upload": {}})
    for reason in types.Reason:
        cond = {
            "type": "Ready",
            "status": "False",
            "reason": reason.value,
            "message": "",
            "lastTransitionTime": NOW,
        }
        assert cv.validate_status(CRDS["Model"], obj, {"conditions": [cond]}) == [], reason


def _status_with(path: str, value: Any) -> dict[str, Any]:
    status = full_model_status()
    node = status
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return status


_DELETE = object()

BAD_STATUS = {
    "undeclared-field-would-be-pruned": ("artifact.tag", "latest", "'tag' was unexpected"),
    "upload-url-is-not-status": ("upload.url", "http://x/upload", "'url' was unexpected"),
    "unknown-phase": ("phase", "Done", "is not one of"),
    "progress-number": ("progress", 42, "is not of type 'string'"),
    "size-string": ("artifact.sizeBytes", "12", "is not of type 'integer'"),
    "size-negative": ("artifact.sizeBytes", -1, "less than the minimum"),
    "attempt-float": ("attempt", 1.5, "is not of type 'integer'"),
    "condition-status-yes": ("conditions.0.status", "Yes", "is not one of"),
    "condition-bad-time": ("conditions.0.lastTransitionTime", "yesterday", "date-time"),
    "condition-time-out-of-range": ("conditions.0.lastTransitionTime", "2026-13-01T00:00:00Z", "date-time"),
    "condition-without-reason": ("conditions.0.reason", _DELETE, "'reason' is a required property"),
    "condition-empty-reason": ("conditions.0.reason", "", "conditions[0].reason"),
    "condition-reason-with-spaces": ("conditions.0.reason", "Publication failed", "does not match"),
    "duplicate-condition-type": ("conditions.1.type", "ArtifactResolved", "Duplicate value"),
    "duplicate-feature": ("resolved.supportedFeatures", ["ToolCalling", "ToolCalling"], "Duplicate value"),
    "expires-not-a-time": ("upload.expiresAt", "in 1h", "date-time"),
    "catalog-extra": ("source.catalog.tag", "latest", "'tag' was unexpected"),
    "cleanup-attempt-string": ("cleanup.attempt", "1", "is not of type 'integer'"),
}


@pytest.mark.parametrize(("path", "value", "fragment"), BAD_STATUS.values(), ids=BAD_STATUS.keys())
def test_bad_status_is_refused(path, value, fragment):
    errors = cv.validate_status(CRDS["Model"], model({"upload": {}}), _status_with(path, value))
    assert any(fragment in e for e in errors), errors


# ---------------------------------------------------------------- ModelCatalogSource


def catalog_source(**spec: Any) -> dict[str, Any]:
    base = {"registry": "registry.dmz.example.com:5000", "repository": "ai-models/catalog"}
    return {
        "apiVersion": API,
        "kind": "ModelCatalogSource",
        "metadata": {"name": "dmz"},
        "spec": {**base, **spec},
    }


def test_catalog_source_defaults():
    obj = cv.apply_defaults(CRDS["ModelCatalogSource"], catalog_source())
    assert obj["spec"]["tag"] == "latest"
    assert obj["spec"]["insecure"] is False
    assert obj["spec"]["refreshIntervalSeconds"] == 300


CATALOG_OK = {
    "minimal": catalog_source(),
    "ip-port": catalog_source(registry="10.0.0.5:5000"),
    "ipv6": catalog_source(registry="[fd00::1]:5000"),
    "host-only": catalog_source(registry="registry.example.com"),
    "everything": catalog_source(
        tag="v2026.11",
        authSecretRef={"namespace": "d8-ai-models", "name": "dmz-auth"},
        caBundle="LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
        refreshIntervalSeconds=3600,
    ),
    "insecure": catalog_source(insecure=True),
}


@pytest.mark.parametrize("obj", CATALOG_OK.values(), ids=CATALOG_OK.keys())
def test_catalog_source_accepted(obj):
    assert check(obj) == []


def _catalog_without(field: str) -> dict[str, Any]:
    obj = catalog_source()
    del obj["spec"][field]
    return obj


CATALOG_REFUSED = {
    "missing-registry": (_catalog_without("registry"), "'registry' is a required property"),
    "missing-repository": (_catalog_without("repository"), "'repository' is a required property"),
    "registry-with-scheme": (catalog_source(registry="https://registry.example.com"), "does not match"),
    "registry-with-path": (catalog_source(registry="registry.example.com/ai"), "does not match"),
    "repository-uppercase": (catalog_source(repository="AI/Catalog"), "does not match"),
    "repository-with-tag": (catalog_source(repository="ai/catalog:latest"), "does not match"),
    "bad-tag": (catalog_source(tag="-x"), "does not match"),
    "auth-without-namespace": (catalog_source(authSecretRef={"name": "a"}), "'namespace' is a required"),
    "ca-not-base64": (catalog_source(caBundle="-----BEGIN CERTIFICATE-----"), "byte"),
    "insecure-with-ca": (catalog_source(insecure=True, caBundle="QUJD"), "caBundle has no effect"),
    "insecure-string": (catalog_source(insecure="yes"), "is not of type 'boolean'"),
    "refresh-too-often": (catalog_source(refreshIntervalSeconds=5), "less than the minimum"),
    "unknown-field": (catalog_source(url="oci://x"), "'url' was unexpected"),
}


@pytest.mark.parametrize(("obj", "fragment"), CATALOG_REFUSED.values(), ids=CATALOG_REFUSED.keys())
def test_catalog_source_refused(obj, fragment):
    errors = check(obj)
    assert any(fragment in e for e in errors), errors


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda s: s["models"].append(dict(s["models"][0])), "Duplicate value"),
        (lambda s: s["models"][0].update(size=1), "'size' was unexpected"),
        (lambda s: s.update(phase="NotReady"), "is not one of"),
        (lambda s: s.update(lastProbeTime="now"), "date-time"),
        (lambda s: s.update(probeAttempt="1"), "is not of type 'integer'"),
    ],
    ids=["duplicate-model", "unknown-model-field", "unknown-phase", "bad-probe-time", "attempt-string"],
)
def test_catalog_source_bad_status(mutate, fragment):
    status = full_catalog_status()
    mutate(status)
    errors = cv.validate_status(CRDS["ModelCatalogSource"], catalog_source(), status)
    assert any(fragment in e for e in errors), errors


# ---------------------------------------------------------------- the validator itself


def _tiny_crd(schema_props: dict[str, Any], **root: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"kind": "Thing", "plural": "things"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"metadata": {"type": "object"}, **schema_props},
                            **root,
                        }
                    },
                }
            ],
        },
    }


def _thing(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}, **fields}


ITEMS_MAP = {
    "type": "array",
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
    "items": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "size": {
                "type": "integer",
                "x-kubernetes-validations": [{"rule": "self >= oldSelf", "message": "shrunk"}],
            },
        },
    },
}


def test_transition_rules_correlate_map_list_items_by_key():
    crd = _tiny_crd({"disks": ITEMS_MAP})
    old = _thing(disks=[{"name": "a", "size": 5}, {"name": "b", "size": 5}])
    grown = _thing(disks=[{"name": "b", "size": 6}, {"name": "a", "size": 5}])  # reordered
    shrunk = _thing(disks=[{"name": "b", "size": 4}, {"name": "c", "size": 1}])  # c is new: no oldSelf
    assert cv.validate(crd, grown, old) == []
    assert cv.validate(crd, shrunk, old) == ["disks[0].size: shrunk"]
    assert cv.validate(crd, shrunk) == []  # create: transition rules do not run


def test_transition_rules_do_not_correlate_atomic_list_items():
    atomic = copy.deepcopy(ITEMS_MAP)
    atomic["x-kubernetes-list-type"] = "atomic"
    del atomic["x-kubernetes-list-map-keys"]
    crd = _tiny_crd({"disks": atomic})
    assert (
        cv.validate(crd, _thing(disks=[{"name": "a", "size": 1}]), _thing(disks=[{"name": "a", "size": 5}]))
        == []
    )
    assert any("cannot be correlated" in e for e in cv.check_crd(crd))


def test_defaults_apply_before_cel_and_message_expression_and_field_path():
    crd = _tiny_crd(
        {
            "spec": {
                "type": "object",
                "properties": {"replicas": {"type": "integer", "default": 0}, "max": {"type": "integer"}},
                "x-kubernetes-validations": [
                    {
                        "rule": "self.replicas <= self.max",
                        "messageExpression": "'replicas ' + string(self.replicas) + ' > max'",
                        "fieldPath": ".replicas",
                    }
                ],
            }
        }
    )
    assert cv.validate(crd, _thing(spec={"max": 0})) == []  # replicas defaulted to 0
    assert cv.validate(crd, _thing(spec={"replicas": 3, "max": 1})) == ["spec.replicas: replicas 3 > max"]
    assert any("could not be evaluated" in e for e in cv.validate(crd, _thing(spec={"replicas": 1})))


def test_nullable_int_or_string_preserve_unknown_and_null_pruning():
    crd = _tiny_crd(
        {
            "a": {"type": "string", "nullable": True},
            "b": {"type": "string"},
            "port": {"x-kubernetes-int-or-string": True},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        }
    )
    ok = _thing(a=None, b=None, port="http", free={"anything": [1, {"x": 2}]}, labels={"k": "v"})
    assert cv.validate(crd, ok) == []
    assert cv.validate(crd, _thing(port=8080)) == []
    assert cv.validate(crd, _thing(port=1.5)) != []
    assert cv.validate(crd, _thing(labels={"k": 1})) != []


def test_date_time_becomes_a_cel_timestamp():
    crd = _tiny_crd(
        {
            "window": {
                "type": "object",
                "properties": {
                    "start": {"type": "string", "format": "date-time"},
                    "end": {"type": "string", "format": "date-time"},
                },
                "x-kubernetes-validations": [
                    {"rule": "self.start < self.end", "message": "ends before it starts"}
                ],
            }
        }
    )
    # Compared as strings these would sort the other way round ("+01:00" vs "Z").
    assert (
        cv.validate(crd, _thing(window={"start": "2026-01-01T10:30:00+01:00", "end": "2026-01-01T10:00:00Z"}))
        == []
    )
    assert cv.validate(
        crd, _thing(window={"start": "2026-01-01T12:00:00Z", "end": "2026-01-01T10:00:00Z"})
    ) == ["window: ends before it starts"]


def test_check_crd_finds_what_the_api_server_or_kubectl_explain_would_miss():
    crd = _tiny_crd(
        {
            "spec": {
                "type": "object",
                "description": "d",
                "properties": {
                    "untyped": {"description": "no type"},
                    "undocumented": {"type": "string"},
                    "defaulted": {"type": "integer", "description": "d", "minimum": 1, "default": 0},
                    "rule": {
                        "type": "string",
                        "description": "d",
                        "x-kubernetes-validations": [{"rule": "self ==", "message": "m"}],
                    },
                },
            }
        }
    )
    crd["spec"]["versions"][0]["additionalPrinterColumns"] = [
        {"name": "X", "type": "string", "jsonPath": ".spec.nope"}
    ]
    errors = "\n".join(cv.check_crd(crd))
    for fragment in (
        "spec.untyped: no type",
        "spec.undocumented: no description",
        "does not compile",
        "default 0 is invalid",
        ".spec.nope",
    ):
        assert fragment in errors


def test_kind_and_version_must_match_the_crd():
    crd = CRDS["Model"]
    assert cv.validate(crd, {**model({"upload": {}}), "kind": "ClusterModel"})
    assert cv.validate(crd, {**model({"upload": {}}), "apiVersion": "ai.deckhouse.io/v1"})
