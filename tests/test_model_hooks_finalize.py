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
    assert kinds(a) == ["Job", "Role", "RoleBinding", "Secret", "ServiceAccount"]
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
    # No automounted token: the worker container alone gets a projected one, for a ServiceAccount whose
    # Role may get/patch this one Job (it reports its result there).
    spec = job["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == hr.find_child(a, "ServiceAccount")["metadata"]["name"]
    assert any(v["name"] == "kube-api" for v in spec["volumes"])
    assert {"name": "kube-api", "mountPath": "/var/run/ai-models/kube", "readOnly": True} in c["volumeMounts"]
    # (Only its Job: other rules of the Role, if any, grant nothing on Jobs.)
    assert [r for r in hr.find_child(a, "Role")["rules"] if "batch" in r["apiGroups"]] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": [job["metadata"]["name"]],
         "verbs": ["get", "patch"]}
    ]
    assert hr.find_child(a, "RoleBinding")["subjects"][0]["name"] == spec["serviceAccountName"]
    sec = hr.find_child(a, "Secret")
    auth = json.loads(base64.b64decode(sec["data"][".dockerconfigjson"]))["auths"]["dmcr.test:5000"]
    grant = verify(CFG.signing_key, auth["username"], auth["password"])
    assert grant is not None and grant.kind == "delete" and grant.repositories == (repo,)

    b = finalize(hr.next_parent(parent, a), [running(job)])
    assert b["finalized"] is False and hr.find_child(b, "Job") == job

    done = hr.observe(job, status=hr.job_status(succeeded=1, condition="Complete"))
    result = json.dumps({"artifact": {"uri": f"dmcr.test:5000/{repo}@{DIGEST}", "digest": DIGEST},
                         "cleanup": {"deleted": True}})
    c2 = finalize(hr.next_parent(parent, b), [hr.reported(done, result)])
    assert c2["finalized"] is True and "deleted" in cond(c2)["message"]


def test_failing_cleanup_shows_why_and_retries():
    parent = ready(hr.model())
    a = finalize(parent)
    job = hr.find_child(a, "Job")
    failed = hr.observe(
        job, status=hr.job_status(failed=4, condition="Failed", reason="BackoffLimitExceeded")
    )
    failed = hr.reported(failed, hr.error_result("RegistryUnavailable", "dmcr answered 503"))
    b = finalize(hr.next_parent(parent, a), [failed])
    assert b["finalized"] is False
    assert cond(b)["reason"] == "CleanupFailed" and "503" in cond(b)["message"]
    assert b["status"]["cleanup"]["attempt"] == 2 and "503" in b["status"]["cleanup"]["message"]
    job2 = hr.find_child(b, "Job")
    assert job2["metadata"]["name"] != job["metadata"]["name"]
    assert job2["spec"]["template"]["spec"]["initContainers"][0]["args"] == [
        str(hooks_model.backoff_seconds(2))
    ]
    assert hr.find_child(b, "Role")["rules"][0]["resourceNames"] == [job2["metadata"]["name"]]
    # The message stays visible while the next attempt runs.
    c = finalize(hr.next_parent(parent, b), [running(job2)])
    assert "503" in c["status"]["cleanup"]["message"] and c["finalized"] is False


def test_finalize_uses_a_result_not_yet_copied_to_status():
    parent = hr.model()
    a = hooks_model.model_sync(hr.sync_request(parent), CFG)
    job = hr.observe(hr.find_child(a, "Job"), status=hr.job_status(succeeded=1, condition="Complete"))
    dest = job["spec"]["template"]["spec"]["containers"][0]["args"][4]
    b = finalize(hr.next_parent(parent, a), [hr.reported(job, hr.success_result(dest, digest=DIGEST))])
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


def test_cleanup_finalizes_only_when_the_job_is_complete():
    """The Job retries its pod: the first one reported a transient error, the next one (which cleared
    that result when it started) reported the deletion. A result alone is not enough (anyone who may
    edit Jobs can write one): only the Job controller's Complete finalizes."""
    parent = ready(hr.model())
    a = finalize(parent)
    job = running(hr.find_child(a, "Job"))
    bad = hr.reported(job, hr.error_result("RegistryUnavailable", "503"))
    b = finalize(hr.next_parent(parent, a), [bad])
    assert b["finalized"] is False and cond(b)["reason"] == "CleanupFailed" and "retrying" in cond(b)["message"]
    assert hr.find_child(b, "Job") == hr.find_child(a, "Job")  # the same Job keeps retrying
    good = hr.reported(job, json.dumps({"artifact": {"uri": "x", "digest": DIGEST}, "cleanup": {"deleted": True}}))
    assert finalize(hr.next_parent(parent, a), [good])["finalized"] is False  # still running
    done = hr.observe(good, status=hr.job_status(succeeded=1, condition="Complete"))
    assert finalize(hr.next_parent(parent, a), [done])["finalized"] is True
    assert finalize(hr.next_parent(parent, a), [job])["finalized"] is False  # running, nothing reported


def test_finalize_uses_an_import_result_from_the_module_namespace():
    """A catalog Model's import runs in the module namespace (a related Job): its result, when it names
    this model's repository, is what finalize cleans up; one naming another repository is not."""
    parent = hr.model("qwen", source={"catalog": {"name": "qwen3-8b"}}, status={"phase": "Publishing", "attempt": 1})
    uid = parent["metadata"]["uid"]
    dest = f"dmcr.test:5000/ai-models/catalog/namespaced/ai-demo/qwen/{uid}"
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "ai-catalog-import-x", "namespace": "d8-ai-models",
                     "labels": {"ai.deckhouse.io/model-uid": uid, "ai.deckhouse.io/worker": "catalog-import"}},
        "spec": {"template": {"metadata": {"labels": {}}, "spec": {"containers": [{"name": "worker", "image": "w"}]}}},
    }
    observed = hr.observe(job, status=hr.job_status(succeeded=1, condition="Complete"))
    req = hr.sync_request(parent, [], [hr.reported(observed, hr.success_result(dest, digest=DIGEST))],
                          finalizing=True, related_types=("Job.batch/v1",))
    a = check(parent, hooks_model.model_finalize(req, CFG), finalize=True)
    assert a["finalized"] is False and a["status"]["artifact"]["digest"] == DIGEST
    assert f"{dest}@{DIGEST}" in hr.find_child(a, "Job")["spec"]["template"]["spec"]["containers"][0]["args"]
    other = "dmcr.test:5000/ai-models/catalog/namespaced/team-a/secret-model/0000"
    req = hr.sync_request(parent, [], [hr.reported(observed, hr.success_result(other, digest=DIGEST))],
                          finalizing=True, related_types=("Job.batch/v1",))
    b = check(parent, hooks_model.model_finalize(req, CFG), finalize=True)
    assert b["finalized"] is True and b["children"] == [] and "secret-model" not in json.dumps(b)
