"""Finalize: a cleanup Job deletes what was published; finalized only once it succeeded."""

from __future__ import annotations

import base64
import json

from hooks import model as hooks_model
from lib.credentials import verify
from tests.support import hookreq as hr
from tests.test_model_hooks import CFG, check, cond, kinds, running

DIGEST = "sha256:" + "cd" * 32


def finalize(parent, children=(), related=()):
    fn = hooks_model.clustermodel_finalize if parent["kind"] == "ClusterModel" else hooks_model.model_finalize
    return check(parent, fn(hr.sync_request(parent, children, related, finalizing=True), CFG), finalize=True)


def ready(parent):
    p = hr.next_parent(
        parent,
        {
            "status": {
                "phase": "Ready",
                "attempt": 1,
                "artifact": {
                    "uri": f"x@{DIGEST}",
                    "digest": DIGEST,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "sizeBytes": 10,
                },
            }
        },
    )
    return p


def test_finalize_without_artifact_is_immediate_and_deletes_everything():
    parent = hr.model(source={"upload": {}})
    running_children = [
        hr.observe(c) for c in hooks_model.model_sync(hr.sync_request(parent), CFG)["children"]
    ]
    a = finalize(parent, running_children)
    assert a["finalized"] is True and a["children"] == []
    assert a["status"]["phase"] == "Deleting" and cond(a)["reason"] == "Deleting"


def test_finalize_with_artifact_runs_cleanup_until_it_succeeds():
    parent = ready(hr.model())
    a = finalize(parent)
    assert a["finalized"] is False and a["status"]["phase"] == "Deleting"
    assert a["status"]["artifact"]["digest"] == DIGEST
    assert kinds(a) == ["Job", "Secret"]
    job = hr.find_child(a, "Job")
    c = job["spec"]["template"]["spec"]["containers"][0]
    repo = f"ai-models/catalog/namespaced/ai-demo/bge-m3/{parent['metadata']['uid']}"
    assert c["args"][:5] == [
        "cleanup",
        "--artifact",
        f"dmcr.test:5000/{repo}@{DIGEST}",
        "--auth-file",
        "/var/run/ai-models/registry/.dockerconfigjson",
    ]
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    sec = hr.find_child(a, "Secret")
    auth = json.loads(base64.b64decode(sec["data"][".dockerconfigjson"]))["auths"]["dmcr.test:5000"]
    grant = verify(CFG.signing_key, auth["username"], auth["password"])
    assert grant is not None and grant.kind == "delete" and grant.repositories == (repo,)

    b = finalize(hr.next_parent(parent, a), [running(job)])
    assert b["finalized"] is False and hr.find_child(b, "Job") == job

    done = hr.observe(job, status=hr.job_status(succeeded=1, condition="Complete"))
    c2 = finalize(hr.next_parent(parent, b), [done], [hr.pod_of(done, exit_code=0, message="{}")])
    assert c2["finalized"] is True


def test_failing_cleanup_shows_why_and_retries():
    parent = ready(hr.model())
    a = finalize(parent)
    job = hr.find_child(a, "Job")
    failed = hr.observe(
        job, status=hr.job_status(failed=4, condition="Failed", reason="BackoffLimitExceeded")
    )
    pod = hr.pod_of(failed, exit_code=1, message=hr.error_result("RegistryUnavailable", "dmcr answered 503"))
    b = finalize(hr.next_parent(parent, a), [failed], [pod])
    assert b["finalized"] is False
    assert cond(b)["reason"] == "CleanupFailed" and "503" in cond(b)["message"]
    assert b["status"]["cleanup"]["attempt"] == 2 and "503" in b["status"]["cleanup"]["message"]
    job2 = hr.find_child(b, "Job")
    assert job2["metadata"]["name"] != job["metadata"]["name"]
    assert job2["spec"]["template"]["spec"]["initContainers"][0]["args"] == [
        str(hooks_model.backoff_seconds(2))
    ]
    # The message stays visible while the next attempt runs.
    c = finalize(hr.next_parent(parent, b), [running(job2)])
    assert "503" in c["status"]["cleanup"]["message"] and c["finalized"] is False


def test_finalize_uses_a_result_not_yet_copied_to_status():
    parent = hr.model()
    a = hooks_model.model_sync(hr.sync_request(parent), CFG)
    job = hr.observe(hr.find_child(a, "Job"), status=hr.job_status(succeeded=1, condition="Complete"))
    dest = job["spec"]["template"]["spec"]["containers"][0]["args"][4]
    pod = hr.pod_of(job, exit_code=0, message=hr.success_result(dest, digest=DIGEST))
    b = finalize(hr.next_parent(parent, a), [job], [pod])
    assert (
        b["finalized"] is False
        and DIGEST in hr.find_child(b, "Job")["spec"]["template"]["spec"]["containers"][0]["args"][2]
    )


def test_clustermodel_cleanup_runs_in_module_namespace():
    parent = ready(hr.cluster_model())
    a = finalize(parent)
    assert {c["metadata"]["namespace"] for c in a["children"]} == {"d8-ai-models"}
    assert (
        "/cluster/qwen-gguf/"
        in hr.find_child(a, "Job")["spec"]["template"]["spec"]["containers"][0]["args"][2]
    )


def test_cleanup_retried_pod_that_succeeded_finalizes_before_the_job_says_so():
    parent = ready(hr.model())
    a = finalize(parent)
    job = running(hr.find_child(a, "Job"))
    bad = hr.pod_of(
        job,
        index=0,
        exit_code=1,
        finished="2026-01-01T00:01:00Z",
        message=hr.error_result("RegistryUnavailable", "503"),
    )
    good = hr.pod_of(
        job,
        index=1,
        exit_code=0,
        finished="2026-01-01T00:02:00Z",
        message=json.dumps({"artifact": {"uri": "x", "digest": DIGEST}, "cleanup": {"deleted": True}}),
    )
    assert finalize(hr.next_parent(parent, a), [job], [bad])["finalized"] is False
    assert finalize(hr.next_parent(parent, a), [job], [bad, good])["finalized"] is True
