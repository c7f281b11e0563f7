"""Upload sessions, seen from the Model hooks: children, token, expiry, Ready."""

from __future__ import annotations

import base64

import kubernetes_validate

from hooks import model as hooks_model
from lib import credentials
from lib.api.types import LABEL_MODEL_UID
from lib.config import Config
from tests.support import hookreq as hr
from tests.test_model_hooks import CFG, cond, kinds, running, sync

UPLOAD = {"upload": {}}


def decoded(secret):
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def upload_model(name="uploaded-model", **kw):
    return hr.model(name, source=UPLOAD, **kw)


def test_upload_session_children_and_status():
    parent = upload_model()
    a = sync(parent)
    st = a["status"]
    assert st["phase"] == "WaitForUpload" and cond(a)["reason"] == "WaitingForUserUpload"
    assert st["upload"] == {
        "secretName": "ai-model-upload-uploaded-model-0",
        "expiresAt": "2026-01-01T01:00:00Z",
        "session": 0,
    }
    assert st["source"] == {"resolvedType": "Upload"}
    assert (
        "ai-model-upload-uploaded-model-0" in cond(a)["message"]
        and "2026-01-01T01:00:00Z" in cond(a)["message"]
    )
    assert kinds(a) == ["Job", "Role", "Role", "RoleBinding", "Secret", "Secret", "Service", "ServiceAccount"]

    secret = hr.find_child(a, "Secret", "ai-model-upload-")
    data = decoded(secret)
    assert set(data) == {"url", "token"}
    assert data["url"] == "http://ai-model-upload-uploaded-model.ai-demo.svc:8080/upload"
    uid = parent["metadata"]["uid"]
    assert data["token"] == credentials.upload_token(CFG.signing_key, uid, 0)

    role = hr.find_child(a, "Role", "ai-model-upload-reader-")
    assert role["metadata"]["name"] == "ai-model-upload-reader-uploaded-model"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [secret["metadata"]["name"]],
            "verbs": ["get"],
        }
    ]

    job = hr.find_child(a, "Job")
    c = job["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    assert args[0] == "upload-server"
    assert args[args.index("--listen") + 1] == "0.0.0.0:8080"
    assert args[args.index("--token-file") + 1] == "/var/run/ai-models/upload/token"
    assert args[args.index("--expires-at") + 1] == st["upload"]["expiresAt"]
    assert args[args.index("--result-file") + 1] == "/dev/termination-log"
    assert args[args.index("--registry-auth-file") + 1] == "/var/run/ai-models/registry/.dockerconfigjson"
    assert args[args.index("--scratch-dir") + 1] == "/scratch"
    vols = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert vols["upload-token"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert vols["scratch"]["emptyDir"]["sizeLimit"]

    # The Service selects exactly the upload server's pod and targets its port.
    svc = hr.find_child(a, "Service")
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["selector"][LABEL_MODEL_UID] == uid
    assert svc["spec"]["ports"][0]["port"] == 8080 and c["ports"][0]["containerPort"] == 8080
    assert c["ports"][0]["name"] == svc["spec"]["ports"][0]["targetPort"]


def test_upload_token_stable_across_calls_and_distinct_across_uids():
    p1 = upload_model()
    t1 = decoded(hr.find_child(sync(p1), "Secret", "ai-model-upload-"))["token"]
    t1b = decoded(hr.find_child(sync(hr.next_parent(p1, sync(p1))), "Secret", "ai-model-upload-"))["token"]
    assert t1 == t1b
    p2 = upload_model(uid=hr.uid_for("another"))
    t2 = decoded(hr.find_child(sync(p2), "Secret", "ai-model-upload-"))["token"]
    assert t2 != t1
    other_key = Config(signing_key=b"z" * 32)
    t3 = decoded(hr.find_child(sync(p1, config=other_key), "Secret", "ai-model-upload-"))["token"]
    assert t3 != t1


def test_upload_progress_then_ready_then_children_removed():
    parent = upload_model()
    a = sync(parent)
    job = running(hr.find_child(a, "Job"))
    b = sync(hr.next_parent(parent, a), [job])
    assert b["status"]["phase"] == "WaitForUpload"
    job = running(hr.find_child(a, "Job"), "30%")
    c = sync(hr.next_parent(parent, b), [job])
    assert c["status"]["phase"] == "Publishing" and c["status"]["progress"] == "30%"
    done = hr.observe(hr.find_child(a, "Job"), status=hr.job_status(succeeded=1, condition="Complete"))
    dest = done["spec"]["template"]["spec"]["containers"][0]["args"][2]
    done = hr.reported(done, hr.success_result(dest, fmt="GGUF", resolved_type="Upload"))
    d = sync(hr.next_parent(parent, c), [done])
    assert d["status"]["phase"] == "Ready" and d["status"]["source"]["resolvedType"] == "Upload"
    assert d["status"]["resolved"]["format"] == "GGUF"
    e = sync(hr.next_parent(parent, d))
    assert e["status"]["phase"] == "Ready" and e["children"] == [] and "upload" not in e["status"]


def test_upload_expiry_opens_a_new_session_with_a_new_token():
    parent = upload_model()
    a = sync(parent)
    job = hr.observe(
        hr.find_child(a, "Job"),
        status=hr.job_status(failed=1, condition="Failed", finished="2026-01-01T01:00:01Z"),
    )
    job = hr.reported(job, hr.error_result("UploadExpired", "no upload arrived before 2026-01-01T01:00:00Z"))
    b = sync(hr.next_parent(parent, a), [job])
    st = b["status"]
    assert st["phase"] == "WaitForUpload" and st["upload"]["session"] == 1
    assert st["upload"]["expiresAt"] == "2026-01-01T02:00:00Z"
    assert "expired" in cond(b)["message"] and "session 1" in cond(b)["message"]
    old_token = decoded(hr.find_child(a, "Secret", "ai-model-upload-"))["token"]
    new_token = decoded(hr.find_child(b, "Secret", "ai-model-upload-"))["token"]
    assert new_token != old_token
    # A new Secret per session (a new pod can never mount the old token); the reader Role follows it.
    assert st["upload"]["secretName"] == "ai-model-upload-uploaded-model-1"
    assert hr.find_child(b, "Secret", "ai-model-upload-")["metadata"]["name"] == st["upload"]["secretName"]
    role = hr.find_child(b, "Role", "ai-model-upload-reader-")
    assert role["metadata"]["name"] == "ai-model-upload-reader-uploaded-model"
    assert role["rules"][0]["resourceNames"] == [st["upload"]["secretName"]]
    new_job = hr.find_child(b, "Job")
    assert new_job["metadata"]["name"] != job["metadata"]["name"]
    args = new_job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--expires-at") + 1] == "2026-01-01T02:00:00Z"
    # Next call (status written): the same session and Job, stable.
    c = sync(hr.next_parent(parent, b), [running(new_job)])
    assert c["status"]["upload"] == st["upload"] and hr.find_child(c, "Job") == new_job
    assert "expired" in cond(c)["message"]


def test_upload_expiry_noticed_late_skips_to_a_session_still_ahead():
    parent = upload_model()
    a = sync(parent)
    job = hr.observe(
        hr.find_child(a, "Job"),
        status=hr.job_status(failed=1, condition="Failed", finished="2026-01-01T03:30:00Z"),
    )
    b = sync(hr.next_parent(parent, a), [hr.reported(job, hr.error_result("UploadExpired", "x"))])
    assert (
        b["status"]["upload"]["session"] == 3 and b["status"]["upload"]["expiresAt"] == "2026-01-01T04:00:00Z"
    )


def test_upload_with_external_base_gets_ingress_and_external_url():
    cfg = Config(
        namespace="d8-ai-models",
        registry="dmcr.test:5000",
        signing_key=b"k" * 32,
        upload_external_base="https://upload.example.com/",
    )
    a = sync(upload_model(), config=cfg)
    data = decoded(hr.find_child(a, "Secret", "ai-model-upload-"))
    uid = upload_model()["metadata"]["uid"]
    assert data["url"] == f"https://upload.example.com/ai-models/upload/model/ai-demo/uploaded-model/{uid}"
    assert data["inClusterURL"].startswith("http://ai-model-upload-uploaded-model.ai-demo.svc:")
    ing = hr.find_child(a, "Ingress")
    kubernetes_validate.validate(ing, "1.33", strict=True)
    assert ing["spec"]["rules"][0]["host"] == "upload.example.com"
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert (
        ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
        == hr.find_child(a, "Service")["metadata"]["name"]
    )


def test_clustermodel_upload_lives_in_module_namespace():
    a = sync(hr.cluster_model("shared", source=UPLOAD))
    assert {c["metadata"]["namespace"] for c in a["children"]} == {"d8-ai-models"}
    data = decoded(hr.find_child(a, "Secret", "ai-clustermodel-upload-"))
    assert data["url"] == "http://ai-clustermodel-upload-shared.d8-ai-models.svc:8080/upload"
    assert a["status"]["upload"]["secretName"] == "ai-clustermodel-upload-shared-0"


def test_upload_transient_failure_retries_in_the_same_session():
    parent = upload_model()
    a = sync(parent)
    job = hr.observe(hr.find_child(a, "Job"), status=hr.job_status(failed=1, condition="Failed"))
    b = sync(hr.next_parent(parent, a), [hr.reported(job, hr.error_result("InsufficientStorage", "registry full"))])
    assert b["status"]["attempt"] == 2 and b["status"]["upload"]["session"] == 0
    assert cond(b)["reason"] == "InsufficientStorage"
    assert decoded(hr.find_child(b, "Secret", "ai-model-upload-")) == decoded(
        hr.find_child(a, "Secret", "ai-model-upload-")
    )


def test_upload_without_creation_timestamp_is_bad_input():
    import pytest

    from hooks.errors import HookInputError

    parent = upload_model(created="")
    with pytest.raises(HookInputError):
        hooks_model.model_sync(hr.sync_request(parent), CFG)

