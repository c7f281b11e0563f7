"""Model / ClusterModel sync and customize, played as Metacontroller v2 calls.

Each test builds the request Metacontroller would send at one point of the
lifecycle (tests/support/hookreq.py), calls the hook and checks the answer;
every emitted child is validated against Kubernetes 1.33 (strict) and every
emitted status against our CRD.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hooks import model as hooks_model
from hooks.errors import HookInputError
from lib.api.naming import model_repository
from lib.api.types import LABEL_MODEL_UID
from lib.config import Config
from lib.credentials import verify
from tests.support import crd_validate
from tests.support import hookreq as hr

ROOT = Path(__file__).resolve().parents[1]
CFG = Config(
    namespace="d8-ai-models",
    registry="dmcr.test:5000",
    worker_image="worker:test",
    signing_key=b"k" * 32,
    upload_ttl_seconds=3600,
    upload_port=8080,
)
CRDS = {
    "Model": yaml.safe_load((ROOT / "crds" / "models.yaml").read_text()),
    "ClusterModel": yaml.safe_load((ROOT / "crds" / "clustermodels.yaml").read_text()),
}
ANSWER_KEYS = {"status", "children", "resyncAfterSeconds"}


def check(parent: dict[str, Any], answer: dict[str, Any], *, finalize: bool = False) -> dict[str, Any]:
    """The answer is well-formed: strict v2 keys, valid children, status valid for the CRD."""
    assert set(answer) == ANSWER_KEYS | ({"finalized"} if finalize else set())
    assert isinstance(answer["resyncAfterSeconds"], int) and answer["resyncAfterSeconds"] >= 0
    assert "observedGeneration" not in answer["status"]
    names = set()
    for child in answer["children"]:
        kubernetes_validate.validate(child, "1.33", strict=True)
        key = (child["kind"], child["metadata"]["namespace"], child["metadata"]["name"])
        assert key not in names, f"duplicate child {key}"
        names.add(key)
    errors = crd_validate.validate_status(CRDS[parent["kind"]], parent, answer["status"])
    # (some tests send parents the CRD would refuse, to check the hook copes: judge the status only)
    assert [e for e in errors if e.startswith("status")] == [], errors
    return answer


def sync(parent, children=(), related=(), config=CFG):
    fn = hooks_model.clustermodel_sync if parent["kind"] == "ClusterModel" else hooks_model.model_sync
    return check(parent, fn(hr.sync_request(parent, children, related), config))


def kinds(answer):
    return sorted(c["kind"] for c in answer["children"])


def cond(answer, type_="Ready"):
    return next(c for c in answer["status"]["conditions"] if c["type"] == type_)


def running(job, progress=None):
    return hr.observe(
        job,
        status=hr.job_status(active=1),
        annotations={"ai.deckhouse.io/progress": progress} if progress else None,
    )


# ---------------------------------------------------------------- fresh publish


def test_fresh_huggingface_model_gets_job_credential_and_rbac():
    parent = hr.model()
    a = sync(parent)
    assert a["status"]["phase"] == "Pending" and a["status"]["attempt"] == 1
    assert cond(a)["reason"] == "Pending" and cond(a)["status"] == "False"
    assert a["status"]["source"] == {"resolvedType": "HuggingFace"}
    assert kinds(a) == ["Job", "Role", "RoleBinding", "Secret", "ServiceAccount"]
    assert {c["metadata"]["namespace"] for c in a["children"]} == {"ai-demo"}

    job = hr.find_child(a, "Job")
    uid = parent["metadata"]["uid"]
    repo = model_repository(namespace="ai-demo", name="bge-m3", uid=uid)
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "worker:test" and c["command"] == ["python", "-m", "jobs"]
    assert c["args"] == [
        "publish",
        "--source",
        "https://huggingface.co/BAAI/bge-m3",
        "--destination",
        f"dmcr.test:5000/{repo}",
        "--model-name",
        "bge-m3",
        "--registry-auth-file",
        "/var/run/ai-models/registry/.dockerconfigjson",
        "--result-file",
        "/dev/termination-log",
    ]
    assert job["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_UID] == uid
    assert {e["name"]: e["value"] for e in c["env"]}["AI_MODELS_JOB_NAME"] == job["metadata"]["name"]
    assert {e["name"]: e["value"] for e in c["env"]}["AI_MODELS_JOB_NAMESPACE"] == "ai-demo"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    for side in ("requests", "limits"):
        assert {"cpu", "memory", "ephemeral-storage"} <= set(c["resources"][side])
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 65532 and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    # The worker reports progress and its result on its own Job: a projected token and the cluster CA,
    # mounted read-only in the worker container only, where AI_MODELS_KUBE_DIR says.
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["AI_MODELS_KUBE_DIR"] == "/var/run/ai-models/kube"
    assert {"name": "kube-api", "mountPath": "/var/run/ai-models/kube", "readOnly": True} in c["volumeMounts"]
    kube_api = next(v for v in pod["volumes"] if v["name"] == "kube-api")
    assert kube_api["projected"]["sources"] == [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    ]
    assert not any(m["name"] == "kube-api" for x in pod.get("initContainers", []) for m in x.get("volumeMounts", []))
    spec = job["spec"]
    assert (
        spec["backoffLimit"] >= 0
        and spec["activeDeadlineSeconds"] > 0
        and spec["ttlSecondsAfterFinished"] > 0
    )
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2]
    assert "initContainers" not in pod  # no backoff on the first attempt

    # The registry credential: push on this model's repository only, mounted where --registry-auth-file says.
    sec = hr.find_child(a, "Secret", "ai-model-registry-")
    assert sec["type"] == "kubernetes.io/dockerconfigjson"
    auths = json.loads(base64.b64decode(sec["data"][".dockerconfigjson"]))["auths"]["dmcr.test:5000"]
    grant = verify(CFG.signing_key, auths["username"], auths["password"])
    assert grant is not None and grant.kind == "push" and grant.repositories == (repo,)
    vol = next(v for v in pod["volumes"] if v["name"] == "registry-auth")
    assert vol["secret"]["secretName"] == sec["metadata"]["name"]

    # RBAC: get/patch on its own Job only; the pod runs as that ServiceAccount.
    role = hr.find_child(a, "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["batch"],
            "resources": ["jobs"],
            "resourceNames": [job["metadata"]["name"]],
            "verbs": ["get", "patch"],
        },
        # Events on the Model beside it (kubectl describe model), create only.
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    ]
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AI_MODELS_EVENT_NAMESPACE"] == "ai-demo"
    assert json.loads(env["AI_MODELS_EVENT_REGARDING"]) == {
        "apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "Model", "name": parent["metadata"]["name"],
        "namespace": "ai-demo", "uid": parent["metadata"]["uid"]}
    rb = hr.find_child(a, "RoleBinding")
    sa = hr.find_child(a, "ServiceAccount")
    assert rb["roleRef"]["name"] == role["metadata"]["name"]
    assert rb["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "ai-demo"}
    ]
    assert pod["serviceAccountName"] == sa["metadata"]["name"] and sa["automountServiceAccountToken"] is False


def test_ollama_clustermodel_children_live_in_module_namespace():
    parent = hr.cluster_model()
    a = sync(parent)
    assert a["status"]["source"]["resolvedType"] == "Ollama"
    assert {c["metadata"]["namespace"] for c in a["children"]} == {"d8-ai-models"}
    assert all(c["metadata"]["name"].startswith("ai-clustermodel-") for c in a["children"])
    job = hr.find_child(a, "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    repo = model_repository(namespace=None, name="qwen-gguf", uid=parent["metadata"]["uid"])
    assert args[args.index("--destination") + 1] == f"dmcr.test:5000/{repo}"
    assert hr.find_child(a, "RoleBinding")["subjects"][0]["namespace"] == "d8-ai-models"
    other = sync(hr.cluster_model("x"))  # another ClusterModel in the same namespace: no name clash
    assert not (
        {c["metadata"]["name"] for c in a["children"]} & {c["metadata"]["name"] for c in other["children"]}
    )


def test_insecure_registry_flag_is_passed():
    a = sync(hr.model(), config=Config(registry="r:5000", registry_insecure=True, signing_key=CFG.signing_key))
    assert (
        "--insecure-registry" in hr.find_child(a, "Job")["spec"]["template"]["spec"]["containers"][0]["args"]
    )


# ---------------------------------------------------------------- malformed URLs and bad sources


@pytest.mark.parametrize(
    "url",
    [
        "http://huggingface.co/BAAI/bge-m3",
        "https://huggingface.co/BAAI",
        "https://example.com/model.gguf",
        "https://ollama.com/qwen3",
        "https://ollama.com/library/",
        "not a url",
        "",
        "https://huggingface.co/datasets/foo/bar",
    ],
    ids=[
        "http",
        "no-repo",
        "unknown-host",
        "ollama-no-library",
        "ollama-no-name",
        "garbage",
        "empty",
        "dataset",
    ],
)
def test_malformed_url_fails_at_sync_without_job(url):
    a = sync(hr.model(source={"url": url}))
    assert a["status"]["phase"] == "Failed" and cond(a)["reason"] == "UnsupportedSource"
    assert cond(a)["message"] and a["children"] == []


def test_source_with_two_kinds_is_unsupported():
    a = sync(hr.model(source={"url": "https://huggingface.co/a/b", "upload": {}}))
    assert (
        a["status"]["phase"] == "Failed" and cond(a)["reason"] == "UnsupportedSource" and a["children"] == []
    )


# ---------------------------------------------------------------- auth Secret


AUTH = {"url": "https://huggingface.co/acme/private-llm", "authSecretRef": {"name": "hf-private-token"}}


def test_missing_auth_secret_fails_then_recovers_when_it_appears():
    parent = hr.model("private-llm", source=AUTH)
    a = sync(parent)
    assert a["status"]["phase"] == "Failed" and cond(a)["reason"] == "AuthSecretMissing"
    assert "hf-private-token" in cond(a)["message"] and a["children"] == []

    secret = hr.secret("hf-private-token", "ai-demo", {"HF_TOKEN": "hf_secret_value"})
    b = sync(hr.next_parent(parent, a), related=[secret])
    assert b["status"]["phase"] == "Pending" and kinds(b).count("Job") == 1
    job = hr.find_child(b, "Job")
    pod = job["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "source-auth")
    assert vol["secret"]["secretName"] == "hf-private-token"
    assert vol["secret"]["items"] == [{"key": "HF_TOKEN", "path": "token"}]
    args = pod["containers"][0]["args"]
    assert args[args.index("--auth-file") + 1] == "/var/run/ai-models/source/token"
    # The token's value is never copied anywhere.
    encoded = base64.b64encode(b"hf_secret_value").decode()
    assert "hf_secret_value" not in json.dumps(b) and encoded not in json.dumps(b)


def test_auth_secret_without_token_keys_is_invalid():
    secret = hr.secret("hf-private-token", "ai-demo", {"password": "x"})
    a = sync(hr.model("private-llm", source=AUTH), related=[secret])
    assert (
        a["status"]["phase"] == "Failed" and cond(a)["reason"] == "AuthSecretInvalid" and a["children"] == []
    )
    for key in ("token", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        assert key in cond(a)["message"]


@pytest.mark.parametrize(
    ("data", "chosen"),
    [
        ({"token": "a", "HF_TOKEN": "b"}, "token"),
        ({"HUGGING_FACE_HUB_TOKEN": "c", "HF_TOKEN": "b"}, "HF_TOKEN"),
        ({"HUGGING_FACE_HUB_TOKEN": "c"}, "HUGGING_FACE_HUB_TOKEN"),
        ({"token": "", "HUGGING_FACE_HUB_TOKEN": "c"}, "HUGGING_FACE_HUB_TOKEN"),
    ],
    ids=["token-first", "hf-token-second", "hub-token", "empty-skipped"],
)
def test_first_present_token_key_is_mounted(data, chosen):
    a = sync(hr.model("private-llm", source=AUTH), related=[hr.secret("hf-private-token", "ai-demo", data)])
    vol = next(
        v
        for v in hr.find_child(a, "Job")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "source-auth"
    )
    assert vol["secret"]["items"] == [{"key": chosen, "path": "token"}]


def test_auth_secret_deleted_mid_publish_stops_the_job():
    parent = hr.model("private-llm", source=AUTH)
    secret = hr.secret("hf-private-token", "ai-demo", {"token": "t"})
    a = sync(parent, related=[secret])
    job = running(hr.find_child(a, "Job"))
    b = sync(hr.next_parent(parent, a), [job])
    assert cond(b)["reason"] == "AuthSecretMissing" and b["children"] == []


# ---------------------------------------------------------------- publishing, Ready, failure


def test_publishing_shows_progress_from_job_annotation():
    parent = hr.model()
    a = sync(parent)
    job = running(hr.find_child(a, "Job"), "42%")
    b = sync(hr.next_parent(parent, a), [job])
    assert b["status"]["phase"] == "Publishing" and b["status"]["progress"] == "42%"
    assert cond(b)["reason"] == "Publishing" and "42%" in cond(b)["message"]
    assert sorted(c["metadata"]["name"] for c in b["children"]) == sorted(
        c["metadata"]["name"] for c in a["children"]
    )
    # Junk in the annotation is ignored.
    c = sync(hr.next_parent(parent, a), [running(hr.find_child(a, "Job"), "lots")])
    assert c["status"]["progress"] == "0%"


def _ready_flow(parent):
    a = sync(parent)
    job = hr.observe(
        hr.find_child(a, "Job"),
        status=hr.job_status(succeeded=1, condition="Complete", finished="2026-01-01T00:10:01Z"),
    )
    dest = job["spec"]["template"]["spec"]["containers"][0]["args"][4]
    job = hr.reported(job, hr.success_result(dest))
    b = sync(hr.next_parent(parent, a), [job])
    return a, b, job


def test_ready_from_job_result_then_sticky_after_the_job_is_gone():
    parent = hr.model()
    a, b, job = _ready_flow(parent)
    st = b["status"]
    assert st["phase"] == "Ready" and st["artifact"]["digest"] == "sha256:" + "ab" * 32
    assert st["artifact"]["sizeBytes"] == 123456 and st["resolved"]["format"] == "Safetensors"
    assert st["resolved"]["supportedEndpointTypes"] == ["Embeddings"]
    assert st["source"] == {"resolvedType": "HuggingFace", "resolvedRevision": "c0ffee"}
    assert all(c["status"] == "True" for c in st["conditions"])
    assert cond(b, "MetadataResolved")["reason"] == "ModelMetadataCalculated"
    assert cond(b)["lastTransitionTime"] == "2026-01-01T00:10:01Z"  # newest time in the request
    assert kinds(b) == kinds(a)  # the transition call keeps the children once more
    # Next sync: the Job (and its result) gone, status is the record; nothing left running.
    c = sync(hr.next_parent(parent, b))
    assert c["status"] == st and c["children"] == [] and c["resyncAfterSeconds"] == 0
    # Even if the Job still shows up, a Ready model keeps no children.
    d = sync(hr.next_parent(parent, b), [job])
    assert d["status"] == st and d["children"] == []


def test_failed_result_is_permanent_and_sticky():
    parent = hr.model()
    a = sync(parent)
    job = hr.observe(
        hr.find_child(a, "Job"), status=hr.job_status(failed=1, condition="Failed", reason="PodFailurePolicy")
    )
    job = hr.reported(job, hr.error_result("ManifestInvalid", "config.json is not JSON"))
    b = sync(hr.next_parent(parent, a), [job])
    assert b["status"]["phase"] == "Failed" and cond(b)["reason"] == "ManifestInvalid"
    assert "config.json is not JSON" in cond(b)["message"] and b["status"]["attempt"] == 1
    c = sync(hr.next_parent(parent, b))  # the Job is gone: no new attempt
    assert c["status"]["phase"] == "Failed" and c["children"] == [] and c["status"]["attempt"] == 1
    assert c["status"]["conditions"] == b["status"]["conditions"]


def test_permanent_error_decides_before_the_job_is_marked_failed():
    parent = hr.model()
    a = sync(parent)
    job = hr.reported(running(hr.find_child(a, "Job")), hr.error_result("UnsupportedSource", "no weights in repo"))
    b = sync(hr.next_parent(parent, a), [job])
    assert b["status"]["phase"] == "Failed" and cond(b)["reason"] == "UnsupportedSource"
    assert "no weights in repo" in cond(b)["message"]


def test_junk_reason_in_result_becomes_publication_failed():
    parent = hr.model()
    a = sync(parent)
    job = hr.observe(hr.find_child(a, "Job"), status=hr.job_status(failed=1, condition="Failed"))
    job = hr.reported(job, hr.error_result("not a reason!", "boom"))
    b = sync(hr.next_parent(parent, a), [job])
    assert cond(b)["reason"] == "PublicationFailed" and "boom" in cond(b)["message"]
    assert "not a reason!" not in json.dumps(b["status"])


def test_oom_killed_job_without_result_retries_with_backoff():
    parent = hr.model()
    a = sync(parent)
    job1 = hr.find_child(a, "Job")
    # A pod was OOM-killed (it reported nothing) but the Job is still retrying pods: keep publishing.
    ojob = hr.observe(job1, status=hr.job_status(active=1, failed=1))
    b = sync(hr.next_parent(parent, a), [ojob])
    assert b["status"]["phase"] == "Publishing" and cond(b)["reason"] == "Publishing"
    assert b["status"]["attempt"] == 1 and hr.find_child(b, "Job") == job1
    # The Job gave up: a new attempt (a new Job) that first sleeps the backoff; the message names
    # the Job's Failed condition and where the crashed worker's log is.
    failed = hr.observe(
        job1,
        status=hr.job_status(failed=3, condition="Failed", reason="BackoffLimitExceeded",
                             message="Job has reached the specified backoff limit"),
    )
    c = sync(hr.next_parent(parent, b), [failed])
    assert c["status"]["attempt"] == 2 and cond(c)["reason"] == "WorkerFailed"
    assert "BackoffLimitExceeded: Job has reached the specified backoff limit" in cond(c)["message"]
    assert f"kubectl logs job/{job1['metadata']['name']} -n ai-demo" in cond(c)["message"]
    job2 = hr.find_child(c, "Job")
    assert job2["metadata"]["name"] != job1["metadata"]["name"]  # the old Job is left out: deleted
    init = job2["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"] == [str(hooks_model.backoff_seconds(2))]
    assert c["resyncAfterSeconds"] >= hooks_model.backoff_seconds(2)
    assert hr.find_child(c, "Role")["rules"][0]["resourceNames"] == [job2["metadata"]["name"]]
    # Next call with the new Job observed: the same Job is desired again (identical template).
    d = sync(hr.next_parent(parent, c), [running(job2)])
    assert hr.find_child(d, "Job") == job2 and d["status"]["phase"] == "Publishing"


def test_failed_job_without_any_pod_retries():
    parent = hr.model()
    a = sync(parent)
    failed = hr.observe(
        hr.find_child(a, "Job"), status=hr.job_status(failed=1, condition="Failed", reason="DeadlineExceeded")
    )
    b = sync(hr.next_parent(parent, a), [failed])
    assert b["status"]["attempt"] == 2 and "DeadlineExceeded" in cond(b)["message"]


def test_transient_result_retries_until_the_bound_then_fails():
    parent = hr.model()
    answer = sync(parent)
    for attempt in range(1, hooks_model.MAX_ATTEMPTS + 1):
        p = hr.next_parent(parent, answer)
        job = hr.observe(hr.find_child(answer, "Job"), status=hr.job_status(failed=1, condition="Failed"))
        job = hr.reported(job, hr.error_result("SourceUnavailable", "HF answered 503"))
        answer = sync(p, [job])
        if attempt < hooks_model.MAX_ATTEMPTS:
            assert answer["status"]["attempt"] == attempt + 1 and answer["status"]["phase"] == "Publishing"
            assert cond(answer)["reason"] == "SourceUnavailable"
    assert answer["status"]["phase"] == "Failed" and "gave up" in cond(answer)["message"]
    final = sync(hr.next_parent(parent, answer))
    assert final["children"] == [] and final["status"]["phase"] == "Failed"


def test_lost_status_write_adopts_the_newer_attempt():
    parent = hr.model()
    a = sync(parent)
    failed = hr.observe(hr.find_child(a, "Job"), status=hr.job_status(failed=1, condition="Failed"))
    b = sync(hr.next_parent(parent, a), [failed])
    job2 = running(hr.find_child(b, "Job"))
    # Metacontroller applied b's children but the status write was lost: status still says attempt 1.
    c = sync(hr.next_parent(parent, a), [job2])
    assert (
        c["status"]["attempt"] == 2
        and hr.find_child(c, "Job")["metadata"]["name"] == job2["metadata"]["name"]
    )


def test_catalog_source_waits_on_the_catalog_seam():
    parent = hr.model("qwen3-8b", source={"catalog": {"name": "qwen3-8b", "sourceName": "dmz"}})
    a = sync(parent)
    assert a["status"]["phase"] == "Pending" and cond(a)["reason"] == "CatalogSourceNotReady"
    assert a["children"] == []


def test_clustermodel_cannot_use_auth_secret():
    a = sync(hr.cluster_model(source=AUTH))
    assert a["status"]["phase"] == "Failed" and cond(a)["reason"] == "AuthSecretInvalid"


# ---------------------------------------------------------------- determinism and time


def test_identical_requests_give_identical_answers():
    parent = hr.model()
    a = sync(parent)
    job = running(hr.find_child(a, "Job"), "10%")
    req = hr.sync_request(hr.next_parent(parent, a), [job], [hr.pod_of(job)])
    first = json.dumps(hooks_model.model_sync(req, CFG), sort_keys=True)
    for _ in range(3):
        assert json.dumps(hooks_model.model_sync(json.loads(json.dumps(req)), CFG), sort_keys=True) == first


def test_last_transition_time_is_stable_until_status_or_reason_change():
    parent = hr.model()
    a = sync(parent)
    t_pending = cond(a)["lastTransitionTime"]
    assert t_pending == parent["metadata"]["creationTimestamp"]
    # A later request with a newer child time but the same state keeps the time.
    again = sync(hr.next_parent(parent, a), [], [])
    assert cond(again)["lastTransitionTime"] == t_pending
    job = hr.observe(
        hr.find_child(a, "Job"),
        created="2026-01-01T00:00:03Z",
        status=hr.job_status(active=1, start="2026-01-01T00:00:04Z"),
        annotations={"ai.deckhouse.io/progress": "5%"},
    )
    b = sync(hr.next_parent(parent, a), [job])
    t_pub = cond(b)["lastTransitionTime"]
    assert t_pub == "2026-01-01T00:00:04Z"
    job["metadata"]["annotations"]["ai.deckhouse.io/progress"] = "80%"
    job["status"]["startTime"] = "2026-01-01T00:00:04Z"
    c = sync(hr.next_parent(parent, b), [job], [hr.pod_of(job)])
    assert cond(c)["lastTransitionTime"] == t_pub and "80%" in cond(c)["message"]


# ---------------------------------------------------------------- customize


def test_customize_relates_secret_namespace_and_catalog_sources_but_no_pods():
    parent = hr.model("private-llm", source=AUTH)
    r = hooks_model.model_customize(hr.customize_request(parent), CFG)
    assert set(r) == {"relatedResources"}
    # Worker results are on the worker Jobs (children): no Pod is ever asked for.
    assert sorted(r["relatedResources"], key=json.dumps) == sorted([
        {"apiVersion": "v1", "resource": "namespaces", "names": ["ai-demo"]},
        {"apiVersion": "v1", "resource": "secrets", "namespace": "ai-demo", "names": ["hf-private-token"]},
        # Blob mount candidates (hooks/model_mounts.py): ClusterModels, the namespace's Models.
        {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": "clustermodels"},
        {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": "models", "namespace": "ai-demo"},
    ], key=json.dumps)
    # Depends on identity and spec; status only drops the candidates once Ready (never publishes again).
    for phase in ("Pending", "Publishing", "Failed"):
        with_status = dict(parent, status={"phase": phase})
        assert hooks_model.model_customize(hr.customize_request(with_status), CFG) == r
    ready = hooks_model.model_customize(hr.customize_request(dict(parent, status={"phase": "Ready"})), CFG)
    assert ready["relatedResources"] == [x for x in r["relatedResources"] if x["resource"] not in
                                         ("models", "clustermodels")]

    cat = hr.model("q", source={"catalog": {"name": "q"}})
    rc = hooks_model.model_customize(hr.customize_request(cat), CFG)["relatedResources"]
    assert {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": "modelcatalogsources"} in rc
    assert not any(x["resource"] in ("secrets", "pods") for x in rc)

    cm = hr.cluster_model()
    assert hooks_model.clustermodel_customize(hr.customize_request(cm), CFG)["relatedResources"] == [
        {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": "clustermodels"}]
    cat_cm = hr.cluster_model("qc", source={"catalog": {"name": "q"}})
    rcc = hooks_model.clustermodel_customize(hr.customize_request(cat_cm), CFG)["relatedResources"]
    assert rcc and not any(x["resource"] == "pods" for x in rcc)


@pytest.mark.parametrize(
    ("mutate", "fn"),
    [
        (lambda p: p.update(kind="ClusterModel"), hooks_model.model_sync),
        (lambda p: p["metadata"].pop("uid"), hooks_model.model_sync),
        (lambda p: p["metadata"].pop("namespace"), hooks_model.model_sync),
        (lambda p: p.update(spec="x"), hooks_model.model_sync),
        (lambda p: p["spec"].update(source=[]), hooks_model.model_sync),
        (lambda p: p["metadata"].pop("uid"), hooks_model.model_customize),
        (lambda p: p.update(kind="Model"), hooks_model.clustermodel_sync),
    ],
    ids=[
        "wrong-kind",
        "no-uid",
        "no-namespace",
        "spec-not-object",
        "source-not-object",
        "customize-no-uid",
        "cluster-wrong-kind",
    ],
)
def test_malformed_parent_is_a_hook_input_error(mutate, fn):
    parent = hr.cluster_model() if fn is hooks_model.clustermodel_sync else hr.model()
    mutate(parent)
    with pytest.raises(HookInputError):
        fn(hr.sync_request(parent) if "customize" not in fn.__name__ else hr.customize_request(parent), CFG)


def test_complete_job_without_a_result_is_retried_as_worker_failed():
    """The worker patches its result on its Job before it exits: a Complete Job without one means
    the worker could not report it (the API server was unreachable), so the attempt failed."""
    parent = hr.model()
    a = sync(parent)
    job1 = hr.find_child(a, "Job")
    done = hr.observe(job1, status=hr.job_status(succeeded=1, condition="Complete"))
    b = sync(hr.next_parent(parent, a), [done])
    assert b["status"]["phase"] == "Publishing" and b["status"]["attempt"] == 2
    assert cond(b)["reason"] == "WorkerFailed" and "the worker finished without a result" in cond(b)["message"]
    job2 = hr.find_child(b, "Job")
    assert job2["metadata"]["name"] != job1["metadata"]["name"]
    assert job2["spec"]["template"]["spec"]["initContainers"][0]["args"] == [str(hooks_model.backoff_seconds(2))]
    # The same Job with its result: Ready at once, no new attempt.
    dest = job1["spec"]["template"]["spec"]["containers"][0]["args"][4]
    c = sync(hr.next_parent(parent, a), [hr.reported(done, hr.success_result(dest))])
    assert c["status"]["phase"] == "Ready" and c["status"]["attempt"] == 1


def test_failed_job_without_a_result_names_its_condition_and_the_logs_command():
    parent = hr.model()
    a = sync(parent)
    job = hr.find_child(a, "Job")
    failed = hr.observe(
        job,
        status=hr.job_status(failed=1, condition="Failed", reason="DeadlineExceeded",
                             message="Job was active longer than specified deadline"),
    )
    b = sync(hr.next_parent(parent, a), [failed])
    assert b["status"]["attempt"] == 2 and cond(b)["reason"] == "WorkerFailed"
    name = job["metadata"]["name"]
    assert (
        "worker job failed without a result: DeadlineExceeded: Job was active longer than specified deadline "
        f"(kubectl logs job/{name} -n ai-demo shows the worker's log)"
    ) in cond(b)["message"]
    # A ClusterModel's worker runs in the module namespace: the hint names it.
    cm = hr.cluster_model()
    ca = sync(cm)
    cjob = hr.find_child(ca, "Job")
    cfailed = hr.observe(cjob, status=hr.job_status(failed=1, condition="Failed", reason="BackoffLimitExceeded"))
    cb = sync(hr.next_parent(cm, ca), [cfailed])
    assert cond(cb)["reason"] == "WorkerFailed"
    assert f"kubectl logs job/{cjob['metadata']['name']} -n d8-ai-models" in cond(cb)["message"]


def test_an_earlier_result_on_a_job_that_failed_later_is_its_result():
    """The worker clears the annotation when it starts, so a result on a Failed Job is the last Pod's:
    a permanent error reported before the Job was marked Failed decides, not the Job's condition."""
    parent = hr.model()
    a = sync(parent)
    failed = hr.observe(
        hr.find_child(a, "Job"), status=hr.job_status(failed=1, condition="Failed", reason="PodFailurePolicy")
    )
    b = sync(hr.next_parent(parent, a), [hr.reported(failed, hr.error_result("UnsupportedSource", "no weights"))])
    assert b["status"]["phase"] == "Failed" and cond(b)["reason"] == "UnsupportedSource"
    assert "PodFailurePolicy" not in cond(b)["message"]


def test_preflight_refusal_leaves_artifact_conditions_pending():
    a = sync(hr.model("private-llm", source=AUTH))
    assert (
        cond(a, "ArtifactResolved")["reason"] == "Pending"
        and "not started" in cond(a, "ArtifactResolved")["message"]
    )
    assert cond(a, "MetadataResolved")["reason"] == "Pending" and cond(a)["reason"] == "AuthSecretMissing"


def test_worker_reported_auth_failure_is_terminal_even_with_a_secret_present():
    parent = hr.model("private-llm", source=AUTH)
    secret = hr.secret("hf-private-token", "ai-demo", {"token": "hf_x y"})
    a = sync(parent, related=[secret])
    job = hr.observe(hr.find_child(a, "Job"), status=hr.job_status(failed=1, condition="Failed"))
    job = hr.reported(job, hr.error_result("AuthSecretInvalid", "token contains whitespace"))
    b = sync(hr.next_parent(parent, a), [job], [secret])
    assert b["status"]["phase"] == "Failed" and cond(b, "ArtifactResolved")["reason"] == "AuthSecretInvalid"
    c = sync(hr.next_parent(parent, b), [], [secret])  # Job gone: no new run
    assert c["children"] == [] and c["status"] == b["status"]


def test_catalog_worker_failures_keep_retrying_past_the_bound():
    parent = hr.model()
    p = hr.next_parent(parent, sync(parent))
    p["status"]["attempt"] = hooks_model.MAX_ATTEMPTS + 2
    a = sync(p)
    job = hr.observe(hr.find_child(a, "Job"), status=hr.job_status(failed=1, condition="Failed"))
    job = hr.reported(job, hr.error_result("CatalogAuthFailed", "401 from upstream"))
    b = sync(hr.next_parent(p, a), [job])
    assert b["status"]["phase"] == "Publishing" and b["status"]["attempt"] == hooks_model.MAX_ATTEMPTS + 3
    assert cond(b)["reason"] == "CatalogAuthFailed"
    init = hr.find_child(b, "Job")["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"] == [str(hooks_model.BACKOFF_MAX_SECONDS)]


def test_ollama_registry_errors_end_as_publication_failed_after_the_retries():
    """The user guide: Ollama registry, tag and manifest errors are Failed with PublicationFailed.
    An unreachable registry is retried first (SourceUnavailable); the final reason is the guide's and
    the message still says what was unreachable."""
    parent = hr.model("qwen", source={"url": "https://ollama.com/library/qwen3:0.6b"})
    answer = sync(parent)
    for attempt in range(1, hooks_model.MAX_ATTEMPTS + 1):
        p = hr.next_parent(parent, answer)
        job = hr.observe(hr.find_child(answer, "Job"), status=hr.job_status(failed=1, condition="Failed"))
        msg = "Ollama registry unavailable (manifest): registry.ollama.ai answered 503"
        answer = sync(p, [hr.reported(job, hr.error_result("SourceUnavailable", msg))])
        if attempt < hooks_model.MAX_ATTEMPTS:
            assert answer["status"]["phase"] == "Publishing" and cond(answer)["reason"] == "SourceUnavailable"
    assert answer["status"]["phase"] == "Failed" and cond(answer)["reason"] == "PublicationFailed"
    assert "Ollama registry unavailable (manifest)" in cond(answer)["message"] and "gave up" in cond(answer)["message"]
    # Hugging Face keeps its own reason (the guide names none for it).
    hf = hr.model()
    answer = sync(hf)
    for _ in range(hooks_model.MAX_ATTEMPTS):
        job = hr.observe(hr.find_child(answer, "Job"), status=hr.job_status(failed=1, condition="Failed"))
        answer = sync(hr.next_parent(hf, answer), [hr.reported(job, hr.error_result("SourceUnavailable", "HF answered 503"))])
    assert cond(answer)["reason"] == "SourceUnavailable"
