"""Tenant-writable data reaching the hooks: shapes and sizes, not just content.

``tests/test_tenancy.py`` proves that forged *content* (another namespace's
repository, a forged credential) gets nowhere. This file covers the rest of
docs/security.md's rule "anything a tenant can write is hostile input": what
a namespace editor of ``team-b`` can put in its Jobs' result and progress
annotations, its workloads' annotations and the pull Secret attached to its
workload must never

- crash a hook (a 500 is a bug: Metacontroller retries for ever, the
  Model cannot be deleted, the webhook with ``failurePolicy: Fail`` refuses
  the write);
- be copied into a status the CRD refuses (the API server rejects the whole
  status write, so the Model is stuck), or unbounded into a message or an
  annotation;
- be copied into a credential Secret the hooks emit: they render it
  themselves.

The last section holds requests only a broken Metacontroller or API server
would send (timestamps, counters and nesting out of range): they get a 400
or are ignored, never a 500 or a hang.

Hooks are called over HTTP as Metacontroller and the API server call them
(the Flask app, v2 request shapes).
"""

from __future__ import annotations

import base64
import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hooks.app import create_app
from hooks.model_status import ARTIFACT_FIELDS, MAX_ITEM_LENGTH, MAX_LENGTH, RESOLVED_FIELDS, SOURCE_FIELDS
from lib import credentials
from lib.api.naming import model_repository
from lib.config import Config
from tests.support import crd_validate
from tests.support import hookreq as hr
from tests.test_tenancy import workload  # a Deployment in team-b naming models

Obj = dict[str, Any]

REGISTRY = "dmcr.test:5000"
CA_PEM = b"-----BEGIN CERTIFICATE-----\nTUlJQmFrZUNB\n-----END CERTIFICATE-----\n"
CFG = Config(
    namespace="d8-ai-models",
    registry=REGISTRY,
    worker_image="worker:test",
    signing_key=b"hostile-inputs-suite-signing-key-0123456789",
    registry_ca_pem=CA_PEM,
)
B = "team-b"
DIGEST = "sha256:" + "b" * 64
ROOT = Path(__file__).resolve().parents[1]
MODEL_CRD = yaml.safe_load((ROOT / "crds" / "models.yaml").read_text())
RESULT = "ai.deckhouse.io/result"
MAX_MESSAGE = 1024  # hooks/model_status.py MAX_MESSAGE
PULL_SECRET = "ai-models-pull-deployment-app"


@pytest.fixture(scope="module")
def http():
    return create_app(CFG).test_client()


def call(http, path: str, body: Obj) -> tuple[int, Obj]:
    r = http.post(path, json=body)
    doc = r.get_json()
    assert r.status_code in (200, 400), (r.status_code, doc)
    assert isinstance(doc, dict)
    if r.status_code == 400:
        assert isinstance(doc.get("error"), str) and doc["error"]
    return r.status_code, doc


def post(http, path: str, body: Obj) -> Obj:
    code, doc = call(http, path, body)
    assert code == 200, doc
    return doc


def ready_message(answer: Obj) -> str:
    return next(c for c in answer["status"]["conditions"] if c["type"] == "Ready")["message"]


def assert_status_is_accepted(parent: Obj, answer: Obj) -> None:
    """The API server would take this status (CRD schema: lengths, int64, patterns), and every
    condition message stays within the hooks' own bound."""
    assert crd_validate.validate_status(MODEL_CRD, parent, answer["status"]) == []
    for c in answer["status"]["conditions"]:
        assert len(c["message"]) <= MAX_MESSAGE, (c["type"], len(c["message"]))


# -- B's own Model, its publish Job running -------------------------------------------


def publishing() -> tuple[Obj, Obj, str]:
    """(B's Model as stored after the first sync, its observed publish Job, its destination)."""
    parent = hr.model("mine", B)
    first = create_app(CFG).test_client().post(
        "/hooks/model/sync", json=hr.sync_request(parent)).get_json()
    job = hr.observe(hr.find_child(first, "Job"), status=hr.job_status(active=1))
    md = parent["metadata"]
    dest = f"{REGISTRY}/{model_repository(namespace=B, name=md['name'], uid=md['uid'])}"
    return hr.next_parent(parent, first), job, dest


PARENT, JOB, DEST = publishing()
COMPLETE = hr.job_status(succeeded=1, condition="Complete", finished="2026-01-01T00:10:00Z")


def sync_with(http, job: Obj, parent: Obj = PARENT) -> Obj:
    return post(http, "/hooks/model/sync", hr.sync_request(parent, [job]))


def finalize_with(http, job: Obj) -> Obj:
    deleting = copy.deepcopy(PARENT)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    return post(http, "/hooks/model/finalize", hr.sync_request(deleting, [job], finalizing=True))


def own_result(**changes: Any) -> Obj:
    """A result for B's own repository (it passes the content check), with ``changes`` at
    ``section.field`` paths (a section itself when there is no dot)."""
    doc = json.loads(hr.success_result(DEST, digest=DIGEST))
    for path, value in changes.items():
        section, _, field = path.partition(".")
        if field:
            doc[section][field] = value
        else:
            doc[section] = value
    return doc


# -- the result annotation ----------------------------------------------------------------


# Deeper than 2500 levels (celpy, which tests/support/crd_validate.py uses, raises Python's
# recursion limit from 1000 to that), within the annotation's 8192 characters.
@pytest.mark.parametrize("value", ["[" * 5000, "[" * 4000 + "]" * 4000, '[{"":' * 1600],
                         ids=["unclosed", "closed-lists", "objects"])
def test_a_deeply_nested_result_annotation_is_ignored_not_a_500(http, value):
    """JSON nested thousands deep (under the 8192-character cap) made the JSON decoder raise
    RecursionError, which no hook caught: sync and finalize answered 500, so B's Model could
    neither progress nor be deleted. It is an unreadable result: named, ignored."""
    for job in (JOB, hr.observe(JOB, status=COMPLETE)):
        forged = hr.reported(job, value)
        answer = sync_with(http, forged)
        assert "artifact" not in answer["status"]
        assert f"{B}/{JOB['metadata']['name']}: {RESULT} is not JSON" in ready_message(answer)
        assert_status_is_accepted(PARENT, answer)
        out = finalize_with(http, forged)
        assert out["finalized"] is True and out["children"] == []  # nothing was published


@pytest.mark.parametrize("section", ["resolved", "source"])
@pytest.mark.parametrize("value", ["GGUF", ["GGUF"], 5, True, None], ids=["str", "list", "int", "bool", "null"])
def test_a_result_whose_sections_are_not_objects_is_not_a_500(http, section, value):
    """``resolved`` that is not an object crashed the Ready condition (``.get`` on a str/list/int):
    a 500 on every sync of B's Model. Whatever is not an object is left out of status."""
    forged = hr.reported(hr.observe(JOB, status=COMPLETE), json.dumps(own_result(**{section: value})))
    answer = sync_with(http, forged)
    st = answer["status"]
    assert st["phase"] == "Ready" and st["artifact"]["digest"] == DIGEST
    if section == "resolved":
        assert "resolved" not in st
        meta = next(c for c in st["conditions"] if c["type"] == "MetadataResolved")
        assert meta["reason"] == "ModelMetadataPartial"
    else:
        assert st["source"] == {"resolvedType": "HuggingFace"}  # the hook's own, nothing of the result's
    assert_status_is_accepted(PARENT, answer)


INT64_MAX = 2**63 - 1

# (path in the result, value beyond what the CRD accepts for that status field)
OUT_OF_BOUNDS = [
    ("resolved.format", "F" * 65),
    ("resolved.family", "f" * 5000),
    ("resolved.architecture", "A" * 257),
    ("resolved.quantization", "Q" * 65),
    ("resolved.parameterCount", INT64_MAX + 1),
    ("resolved.contextWindowTokens", 10**40),
    ("resolved.supportedEndpointTypes", ["Chat", "E" * 129]),
    ("resolved.supportedFeatures", ["F" * 500]),
    ("source.resolvedType", "T" * 65),
    ("source.resolvedRevision", "r" * 3000),
    ("source.remoteDigest", "d" * 129),
]


@pytest.mark.parametrize("path,value", OUT_OF_BOUNDS, ids=[p for p, _ in OUT_OF_BOUNDS])
def test_result_metadata_beyond_the_crd_bounds_never_reaches_status(http, path, value):
    """B's worker result (forgeable: B may patch its Job) for its own repository: Ready, but a value
    the CRD refuses (too long, beyond int64) is left out instead of failing the whole status write
    at the API server (Metacontroller would retry it for ever and the Model would stay stuck)."""
    forged = hr.reported(hr.observe(JOB, status=COMPLETE), json.dumps(own_result(**{path: value})))
    answer = sync_with(http, forged)
    assert answer["status"]["phase"] == "Ready"
    assert_status_is_accepted(PARENT, answer)
    section, _, field = path.partition(".")
    kept = answer["status"].get(section, {}).get(field)
    if isinstance(value, list):
        assert kept in (None, [v for v in value if len(v) <= 128])
    else:
        assert kept != value  # absent, or the hook's own (status.source.resolvedType)
    assert len(json.dumps(answer["status"])) < 8192


def test_the_bounds_the_hooks_copy_within_are_the_crds():
    """``hooks/model_status.py`` bounds what it copies by the CRD's maxLength (and int64): the two
    stay one, for Models and ClusterModels alike."""
    for crd_file in ("models.yaml", "clustermodels.yaml"):
        crd = yaml.safe_load((ROOT / "crds" / crd_file).read_text())
        status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        for section, fields in (("artifact", ARTIFACT_FIELDS), ("resolved", RESOLVED_FIELDS),
                                ("source", SOURCE_FIELDS)):
            declared = status[section]["properties"]
            for name, typ in fields.items():
                schema = declared[name]
                if typ is str:
                    assert MAX_LENGTH[name] == schema["maxLength"], (crd_file, section, name)
                elif typ is list:
                    assert schema["items"]["maxLength"] == MAX_ITEM_LENGTH, (crd_file, section, name)
                else:
                    assert schema["format"] == "int64" and schema["minimum"] == 0, (crd_file, section, name)


@pytest.mark.parametrize("size", [INT64_MAX + 1, 10**4000], ids=["int64+1", "4001-digits"])
def test_an_artifact_size_beyond_int64_is_not_a_publish(http, size):
    """``sizeBytes`` of 10**4000 passed the content check: it was copied into status.artifact (the CRD
    says int64) and into the Ready message (4000 digits). It is a refused result, named."""
    forged = hr.reported(hr.observe(JOB, status=COMPLETE),
                         json.dumps(own_result(**{"artifact.sizeBytes": size})))
    answer = sync_with(http, forged)
    assert answer["status"]["phase"] != "Ready" and "artifact" not in answer["status"]
    assert f"{B}/{JOB['metadata']['name']}: artifact.sizeBytes" in ready_message(answer)
    assert str(size)[:30] not in json.dumps(answer)
    assert_status_is_accepted(PARENT, answer)
    # The largest int64 is a size like any other.
    ok = hr.reported(hr.observe(JOB, status=COMPLETE),
                     json.dumps(own_result(**{"artifact.sizeBytes": INT64_MAX})))
    assert sync_with(http, ok)["status"]["artifact"]["sizeBytes"] == INT64_MAX


def test_long_error_messages_junk_reasons_and_huge_annotations_stay_bounded(http):
    """Already safe, pinned here: an error result's message is clipped, a reason outside the CRD's
    pattern is replaced, a 1 MB result or progress annotation is never copied."""
    err = {"error": {"reason": "Not A Reason <b>", "message": "m" * 7000}}
    answer = sync_with(http, hr.reported(hr.observe(JOB, status=COMPLETE), json.dumps(err)))
    assert {c["reason"] for c in answer["status"]["conditions"]} == {"PublicationFailed"}
    assert_status_is_accepted(PARENT, answer)
    huge = hr.observe(JOB, status=hr.job_status(active=1), annotations={
        RESULT: json.dumps({"error": {"reason": "X", "message": "m" * (1 << 20)}}),
        "ai.deckhouse.io/progress": "9" * (1 << 20) + "%"})
    answer = sync_with(http, huge)
    assert answer["status"].get("progress", "0%") == "0%"
    assert f"{RESULT} is not a result document" in ready_message(answer)
    assert len(json.dumps(answer["status"])) < 8192
    assert_status_is_accepted(PARENT, answer)


def test_owner_references_of_any_shape_change_nothing(http):
    """Already safe: no hook reads ownerReferences (Metacontroller relates children by them, the
    hooks by name); junk there changes no byte of the answer."""
    clean = sync_with(http, JOB)
    for refs in ([{"kind": "Job"}, "x", None, {"apiVersion": 5}], "not a list", {"a": 1}, []):
        job = copy.deepcopy(JOB)
        job["metadata"]["ownerReferences"] = refs
        assert sync_with(http, job) == clean


@pytest.mark.parametrize("where,value", [
    (("metadata", "labels"), ["ai.deckhouse.io/attempt"]),
    (("metadata", "annotations"), [RESULT]),
    (("metadata", "annotations", RESULT), {"artifact": {}}),
    (("status", "conditions"), {"type": "Complete", "status": "True"}),
    (("status", "conditions"), ["Complete"]),
], ids=["labels-list", "annotations-list", "result-object", "conditions-object", "conditions-strings"])
def test_job_fields_of_the_wrong_type_are_a_400(http, where, value):
    """Already safe: shapes the API server never returns (a tenant cannot write a Job's status,
    and labels/annotations are string maps) are refused by the request schema with a 400 that
    names the field, before any hook code runs."""
    job = copy.deepcopy(JOB)
    node = job
    for key in where[:-1]:
        node = node.setdefault(key, {})
    node[where[-1]] = value
    for path, parent in (("/hooks/model/sync", PARENT), ("/hooks/model/finalize", PARENT)):
        code, doc = call(http, path, hr.sync_request(parent, [job], finalizing=path.endswith("finalize")))
        assert code == 400 and "/".join(where[:-1]) in doc["error"], doc


def test_job_condition_fields_of_the_wrong_type_are_read_as_text(http):
    """Already safe: a Failed condition with a list reason and an object message is described,
    not crashed on, and the message is bounded."""
    job = copy.deepcopy(JOB)
    job["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": ["x"] * 2000,
                                    "message": {"m": "y" * 5000}, "lastTransitionTime": 5}]
    answer = sync_with(http, job)
    assert answer["status"]["attempt"] == 2
    assert_status_is_accepted(PARENT, answer)


# -- workloads: the pull Secret and the annotations ----------------------------------------


def ready_model(name: str = "mine") -> Obj:
    m = hr.model(name, B)
    md = m["metadata"]
    dest = f"{REGISTRY}/{model_repository(namespace=B, name=name, uid=md['uid'])}"
    m["status"] = {"phase": "Ready", "artifact": {
        "uri": f"{dest}@{DIGEST}", "digest": DIGEST, "sizeBytes": 1,
        "mediaType": "application/vnd.oci.image.manifest.v1+json"}}
    return m


def decorator_sync(http, obj: Obj, models: list[Obj], attached: list[Obj] = ()) -> Obj:
    body = {
        "controller": {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "DecoratorController",
                       "metadata": {"name": "ai-models-workloads"}},
        "object": obj,
        "attachments": hr.object_map(attached, ("Secret.v1",)),
        "related": hr.object_map(models, ("Model.ai.deckhouse.io/v1alpha1",
                                          "ClusterModel.ai.deckhouse.io/v1alpha1")),
        "finalizing": False,
    }
    return post(http, "/hooks/workload/sync", body)


def pull_secret(data: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": PULL_SECRET, "namespace": B}, "data": data}


def blocked_with(http, data: dict[str, str]) -> list[Obj]:
    """The attachments while B's Model is not Ready (the pull Secret is kept for the old pods),
    with the attached Secret as the tenant edited it."""
    pending = ready_model()
    pending["status"] = {"phase": "Publishing"}
    return decorator_sync(http, workload({"ai.deckhouse.io/model": "mine"}), [pending],
                          [pull_secret(data)])["attachments"]


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def test_a_deeply_nested_pull_secret_is_dropped_not_a_500(http):
    """The tenant edits its attached pull Secret to JSON nested 100,000 deep: the credential check
    raised RecursionError (a 500 on every sync of the workload). It is not a credential: dropped."""
    assert blocked_with(http, {".dockerconfigjson": b64("[" * 100_000)}) == []
    assert blocked_with(http, {".dockerconfigjson": b64('{"auths":' * 5000)}) == []


def test_a_kept_pull_secret_is_rendered_by_the_hook_not_copied(http):
    """While the workload is blocked the decorator keeps its pull Secret. It checked the credential
    but copied the tenant's bytes: extra ``auths`` entries and fields around the verified one, and
    ``ca.crt`` (the CA the init containers trust for DMCR) unchecked. Now the kept Secret is the
    hook's own rendering of the verified credential, with the module's CA."""
    [own] = decorator_sync(http, workload({"ai.deckhouse.io/model": "mine"}), [ready_model()])["attachments"]
    assert base64.b64decode(own["data"]["ca.crt"]) == CA_PEM
    doc = json.loads(base64.b64decode(own["data"][".dockerconfigjson"]))
    doc["auths"]["evil.example.com"] = {"auth": b64("x:y")}
    doc["credsStore"] = "evil"
    edited = {".dockerconfigjson": b64(json.dumps(doc)), "ca.crt": b64("-----BEGIN CERTIFICATE-----\nEVIL\n")}
    [kept] = blocked_with(http, edited)
    assert kept["data"] == own["data"]
    # Untouched, it is kept byte for byte (no diff for Metacontroller to apply).
    assert [s["data"] for s in blocked_with(http, own["data"])] == [own["data"]]
    # A signed credential of another kind is still dropped (test_tenancy.py covers the forged ones).
    push = credentials.dockerconfigjson(REGISTRY, *credentials.publish_credential(CFG.signing_keys, "x"))
    assert blocked_with(http, {".dockerconfigjson": b64(push)}) == []


def review(obj: Obj) -> Obj:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "4f0c", "operation": "UPDATE", "object": obj, "oldObject": obj}}


def test_a_deeply_nested_resolution_annotation_gates_with_a_warning(http):
    """The tenant writes the decorator's resolution annotation itself, nested 100,000 deep: the
    webhook answered 500, and with ``failurePolicy: Fail`` every write of the workload was refused.
    It is an unreadable resolution: the pods are gated, with a bounded warning."""
    obj = workload({"ai.deckhouse.io/model": "mine", "ai.deckhouse.io/model-resolution": "[" * 100_000})
    out = post(http, "/webhooks/workload/mutate", review(obj))["response"]
    assert out["allowed"] is True
    patch = json.loads(base64.b64decode(out["patch"]))
    assert "ai.deckhouse.io/model-delivery" in json.dumps(patch)  # the scheduling gate
    assert out["warnings"] and all(len(w) <= 1024 for w in out["warnings"])


def test_hostile_model_annotations_are_echoed_bounded(http):
    """A 200 KB model annotation was echoed whole into the decorator's blocked annotation (on the
    workload, whose annotations the API server caps at 256 KB in all: the write then fails) and
    into the webhook's warnings; 30,000 valid names into a "not found" list of 470 KB."""
    for value in ("BAD_" * 50_000, ",".join(f"m{i}" for i in range(30_000)),
                  "x" * 200_000 + "," + "mine,mine"):
        obj = workload({"ai.deckhouse.io/model": value})
        blocked = decorator_sync(http, obj, [ready_model()])["annotations"]["ai.deckhouse.io/model-delivery-blocked"]
        reason = json.loads(blocked)
        assert reason["reason"] in ("InvalidModelName", "ModelNotFound")
        assert len(blocked) <= 1200, len(blocked)
        out = post(http, "/webhooks/workload/mutate", review(obj))["response"]
        assert all(len(w) <= 1024 for w in out.get("warnings", [])), [len(w) for w in out["warnings"]]
    # A bad delivery-mode override and a malformed resolution entry are echoed bounded too.
    obj = workload({"ai.deckhouse.io/model": "mine", "ai.deckhouse.io/delivery-mode": "N" * 100_000,
                    "ai.deckhouse.io/model-resolution": json.dumps([{"name": "x" * 100_000}])})
    out = post(http, "/webhooks/workload/mutate", review(obj))["response"]
    assert out["warnings"] and all(len(w) <= 1024 for w in out["warnings"])


# -- requests only a broken Metacontroller would send ----------------------------------------


@pytest.mark.parametrize("path", ["/hooks/model/sync", "/hooks/workload/sync", "/webhooks/workload/mutate",
                                  "/hooks/modelcatalogsource/sync"])
def test_a_request_nested_too_deeply_is_a_400(http, path):
    """The body parser raised RecursionError (a 500) on JSON nested 100,000 deep; parsed bodies that
    nest just under the parser's limit made the handlers recurse past it."""
    r = http.post(path, data=b"[" * 100_000, content_type="application/json")
    assert r.status_code == 400 and "nest" in r.get_json()["error"]
    deep: Any = "x"
    for _ in range(900):
        deep = {"a": deep}
    body = {"controller": {}, "parent": {**hr.model("m", B), "spec": {"source": {"url": deep}}}}
    if path.startswith("/webhooks"):
        body = review({**workload({"ai.deckhouse.io/model": "mine"}), "spec": {"template": deep}})
    r = http.post(path, json=body)
    assert r.status_code in (200, 400), r.get_json()


@pytest.mark.parametrize("created", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_timestamps_out_of_range_are_ignored_or_a_400(http, created):
    """Timestamps whose UTC form is outside years 1-9999 raised OverflowError (a 500)."""
    for source in ({"url": "https://huggingface.co/BAAI/bge-m3"}, {"upload": {}}):
        parent = hr.model("m", B, source=source, created=created)
        code, doc = call(http, "/hooks/model/sync", hr.sync_request(parent))
        if source.get("upload") is not None:
            assert code == 400 and "creationTimestamp" in doc["error"]
        else:
            assert code == 200
    late = hr.secret("s", B, {"k": "v"})
    late["metadata"]["creationTimestamp"] = "9999-12-31T23:59:59-14:00"
    post(http, "/hooks/model/sync", hr.sync_request(hr.model("m", B), [late]))


def test_status_counters_out_of_range_answer_fast_and_never_500(http):
    """``status.attempt`` is an int32 in the CRD: at 2**28 the backoff was computed as 30 * 2**(2**28),
    a 32 MB integer and about 2 s per sync (at the int32 maximum, 256 MB and minutes: gevent cannot
    preempt it, so the whole worker stalls); an upload session of 10**12 overflowed the expiry's
    datetime (a 500)."""
    parent = hr.model("m", B, status={"phase": "Publishing", "attempt": 2**28})
    started = time.perf_counter()
    answer = post(http, "/hooks/model/sync", hr.sync_request(parent))
    assert time.perf_counter() - started < 1
    job = hr.find_child(answer, "Job")
    assert job["spec"]["template"]["spec"]["initContainers"][0]["args"] == ["600"]
    upload = hr.model("u", B, source={"upload": {}}, status={"phase": "WaitForUpload", "upload": {"session": 10**12}})
    code, doc = call(http, "/hooks/model/sync", hr.sync_request(upload))
    assert code == 400 and "session" in doc["error"]


@pytest.mark.parametrize("data", ["not a map", ["token"], 5])
def test_an_auth_secret_whose_data_is_not_a_map_is_not_a_500(http, data):
    """``data`` of the authSecretRef Secret that is not a map: the Secret has none of the keys."""
    parent = hr.model("p", B, source={"url": "https://huggingface.co/a/b", "authSecretRef": {"name": "tok"}})
    secret = hr.secret("tok", B, {"token": "t"})
    secret["data"] = data
    answer = post(http, "/hooks/model/sync", hr.sync_request(parent, [], [secret], related_types=("Secret.v1",)))
    assert answer["status"]["phase"] == "Failed" and "has none of the keys" in ready_message(answer)


@pytest.mark.parametrize("shape", [
    {"status": {"source": {"catalog": "dmz"}}},
    {"status": {"source": {"catalog": ["dmz"]}}},
    {"status": {"source": {"catalog": {"sourceName": 7}}}},
    {"spec": {"source": {"catalog": "qwen3-8b"}}},
    {"spec": {"source": {"catalog": {"name": "qwen3-8b", "sourceName": ["dmz"]}}}},
])
def test_related_models_of_any_shape_never_500_the_catalog_source_hook(http, shape):
    """After a truncated listing the source reads every related Model for the names they ask for;
    a Model whose status.source.catalog was not an object raised AttributeError there (a 500 that
    stalls the catalog for every tenant)."""
    from tests.test_catalog_hooks import SOURCE_CHILDREN, SOURCE_RELATED, pull_secret, ready_status, source

    status = ready_status(attempt=2)
    status["conditions"][0]["reason"] = "CatalogListTruncated"
    model = {**hr.model("qwen", B, source={"catalog": {"name": "qwen3-8b"}}), **shape}
    req = hr.sync_request(source(status=status), [], [pull_secret(), model], child_types=SOURCE_CHILDREN,
                          related_types=SOURCE_RELATED)
    code, doc = call(http, "/hooks/modelcatalogsource/sync", req)
    assert code == 200 or (code == 400 and "related/" in doc["error"]), doc  # answered, or refused by name
