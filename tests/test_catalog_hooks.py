"""Pure hook tests: the ModelCatalogSource controller and the Model hooks' catalog plan.

Requests have Metacontroller v2 shapes (tests/support/hookreq.py); answers are
checked like the Model hooks' (strict children, status valid for the CRD).
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hooks import catalogsource as cs
from hooks import model as hooks_model
from hooks import model_catalog
from lib.config import Config
from lib.credentials import dockerconfigjson
from tests.support import crd_validate
from tests.support import hookreq as hr

ROOT = Path(__file__).resolve().parents[1]
CFG = Config(namespace="d8-ai-models", registry="dmcr.test:5000", worker_image="worker:test", signing_key=b"k" * 32)
CRDS = {
    "ModelCatalogSource": yaml.safe_load((ROOT / "crds" / "modelcatalogsources.yaml").read_text()),
    "Model": yaml.safe_load((ROOT / "crds" / "models.yaml").read_text()),
    "ClusterModel": yaml.safe_load((ROOT / "crds" / "clustermodels.yaml").read_text()),
}
SOURCE = "ModelCatalogSource.ai.deckhouse.io/v1alpha1"
MODEL = "Model.ai.deckhouse.io/v1alpha1"
SOURCE_CHILDREN = ("Job.batch/v1", "Secret.v1", "ServiceAccount.v1", "Role.rbac.authorization.k8s.io/v1",
                   "RoleBinding.rbac.authorization.k8s.io/v1")
SOURCE_RELATED = ("Secret.v1", MODEL, "ClusterModel.ai.deckhouse.io/v1alpha1")
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
REV1, REV2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64


# -- builders ----------------------------------------------------------------------


def source(
    name: str = "dmz", *, status: dict | None = None, auth: bool = True, ca: bool = True, **spec: Any
) -> dict:
    sp: dict[str, Any] = {"registry": "registry.dmz.example:5000", "repository": "ai-models/catalog",
                          "refreshIntervalSeconds": 600, **spec}
    if auth:
        sp["authSecretRef"] = {"namespace": "catalog-admin", "name": "dmz-pull"}
    if ca:
        sp["caBundle"] = base64.b64encode(PEM.encode()).decode()
    obj = {
        "apiVersion": "ai.deckhouse.io/v1alpha1",
        "kind": "ModelCatalogSource",
        "metadata": {"name": name, "uid": hr.uid_for("MCS", name), "generation": 1, "creationTimestamp": hr.T0},
        "spec": sp,
    }
    if status is not None:
        obj["status"] = status
    return obj


def pull_secret(user: str = "reader", pw: str = "s3cret") -> dict:
    return hr.secret("dmz-pull", "catalog-admin", {".dockerconfigjson": dockerconfigjson(
        "registry.dmz.example:5000", user, pw)}, "kubernetes.io/dockerconfigjson")


def entry(name: str, digest: str) -> dict:
    return {"name": name, "reference": f"models/{name}@{digest}", "digest": digest, "format": "GGUF",
            "family": "qwen3", "sizeBytes": 1234}


def ready_status(revision: str = REV1, models: list | None = None, attempt: int = 2) -> dict:
    return {
        "phase": "Ready",
        "catalogRevision": revision,
        "models": models if models is not None else [entry("qwen3-8b", D1)],
        "lastProbeTime": "2026-01-01T00:10:00Z",
        "probeAttempt": attempt,
        "conditions": [{"type": "Ready", "status": "True", "reason": "CatalogProbed", "message": "ok",
                        "lastTransitionTime": "2026-01-01T00:10:00Z"}],
    }


def failed_status(reason: str, message: str = "broken", **extra: Any) -> dict:
    return {
        "phase": "Failed",
        "probeAttempt": 3,
        "conditions": [{"type": "Ready", "status": "False", "reason": reason, "message": message,
                        "lastTransitionTime": "2026-01-01T00:20:00Z"}],
        **extra,
    }


def check(parent: dict, answer: dict) -> dict:
    assert set(answer) == {"status", "children", "resyncAfterSeconds"}
    assert "observedGeneration" not in answer["status"]
    seen = set()
    for child in answer["children"]:
        kubernetes_validate.validate(child, "1.33", strict=True)
        key = (child["kind"], child["metadata"]["namespace"], child["metadata"]["name"])
        assert key not in seen
        seen.add(key)
    errors = crd_validate.validate_status(CRDS[parent["kind"]], parent, answer["status"])
    assert [e for e in errors if e.startswith("status")] == [], errors
    return answer


def src_sync(parent: dict, children=(), related=(), config: Config = CFG) -> dict:
    req = hr.sync_request(parent, children, related, child_types=SOURCE_CHILDREN, related_types=SOURCE_RELATED)
    return check(parent, cs.sync(req, config))


def jobs(answer: dict) -> dict[str, dict]:
    return {c["metadata"]["name"]: c for c in answer["children"] if c["kind"] == "Job"}


def secrets(answer: dict) -> dict[tuple[str, str], dict]:
    return {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in answer["children"]
            if c["kind"] == "Secret"}


def ready_cond(answer: dict) -> dict:
    return next(c for c in answer["status"]["conditions"] if c["type"] == "Ready")


def finished(job: dict, result: dict | None, *, exit_code: int = 0, at: str = "2026-01-01T00:10:00Z") -> dict:
    """The observed Job (Complete, or Failed for a non-zero exit) carrying ``result`` as its worker reported it."""
    cond_type = "Complete" if exit_code == 0 else "Failed"
    observed = hr.observe(job, status=hr.job_status(succeeded=int(exit_code == 0), failed=int(exit_code != 0),
                                                    condition=cond_type, finished=at))
    return hr.reported(observed, json.dumps(result)) if result is not None else observed


def waiting(job: dict) -> dict:
    return hr.observe(job, status=hr.job_status(active=1))


# As the probe writes it: ``digest`` is implied by ``reference``.
PROBE_OK = {
    "catalogRevision": REV1,
    "models": [{k: v for k, v in entry(n, d).items() if k != "digest"} for n, d in (("qwen3-8b", D1), ("gemma", D2))],
}


# -- ModelCatalogSource controller ----------------------------------------------------


def test_customize_relates_auth_secret_and_models_but_no_pods():
    """The probe's result is on its Job (a child): no Pod is ever asked for."""
    rel = cs.customize(hr.customize_request(source()), CFG)["relatedResources"]
    assert rel == [
        {"apiVersion": "v1", "resource": "secrets", "namespace": "catalog-admin", "names": ["dmz-pull"]},
        {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": "models", "labelSelector": {}},
        {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": "clustermodels", "labelSelector": {}},
    ]
    anon = cs.customize(hr.customize_request(source(auth=False)), CFG)["relatedResources"]
    assert not any(r["resource"] in ("secrets", "pods") for r in anon) and anon


def test_first_sync_starts_a_restricted_probe_with_copied_credentials():
    a = src_sync(source(), related=[pull_secret()])
    assert a["status"]["phase"] == "Pending" and a["status"]["probeAttempt"] == 1
    assert ready_cond(a)["status"] == "Unknown"
    assert a["resyncAfterSeconds"] == 600
    (name, job), = jobs(a).items()
    assert name == "ai-catalog-probe-dmz-1" and job["metadata"]["namespace"] == "d8-ai-models"
    pod = job["spec"]["template"]["spec"]
    assert "initContainers" not in pod  # the first probe runs at once
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    # The probe reports its result on its own Job: a projected token (worker container only) for a
    # ServiceAccount whose Role may get/patch exactly the probe Jobs of this answer.
    sa = next(c for c in a["children"] if c["kind"] == "ServiceAccount")
    role = next(c for c in a["children"] if c["kind"] == "Role")
    binding = next(c for c in a["children"] if c["kind"] == "RoleBinding")
    assert pod["serviceAccountName"] == sa["metadata"]["name"] and sa["automountServiceAccountToken"] is False
    assert [r for r in role["rules"] if "batch" in r["apiGroups"]] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": [name], "verbs": ["get", "patch"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": "d8-ai-models"}]
    assert {"name": "kube-api", "mountPath": "/var/run/ai-models/kube", "readOnly": True} in (
        pod["containers"][0]["volumeMounts"])
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    args = c["args"]
    assert args[:3] == ["catalog-probe", "--catalog", "registry.dmz.example:5000/ai-models/catalog:latest"]
    assert args[args.index("--auth-file") + 1] == "/var/run/ai-models/source/.dockerconfigjson"
    assert args[args.index("--ca-file") + 1] == "/var/run/ai-models/source-ca/ca.crt"
    assert "--insecure-registry" not in args
    mounted = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert mounted == {"ai-catalog-auth-dmz", "ai-catalog-ca-dmz"}
    sec = secrets(a)
    auth = sec[("d8-ai-models", "ai-catalog-auth-dmz")]
    assert auth["type"] == "kubernetes.io/dockerconfigjson"
    assert auth["data"][".dockerconfigjson"] == pull_secret()["data"][".dockerconfigjson"]
    assert base64.b64decode(sec[("d8-ai-models", "ai-catalog-ca-dmz")]["data"]["ca.crt"]).decode() == PEM


def test_insecure_and_anonymous_source():
    a = src_sync(source(auth=False, ca=False, insecure=True, tag="v2"))
    (job,) = jobs(a).values()
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--insecure-registry" in args and "--auth-file" not in args and "--ca-file" not in args
    assert "registry.dmz.example:5000/ai-models/catalog:v2" in args
    assert secrets(a) == {}


def test_successful_probe_is_recorded_and_the_next_one_waits_the_interval():
    parent = source()
    a = src_sync(parent, related=[pull_secret()])
    job1 = finished(jobs(a)["ai-catalog-probe-dmz-1"], PROBE_OK)
    b = src_sync(hr.next_parent(parent, a), [job1], [pull_secret()])
    st = b["status"]
    assert st["phase"] == "Ready" and st["catalogRevision"] == REV1 and st["probeAttempt"] == 2
    assert st["models"] == [entry("qwen3-8b", D1), entry("gemma", D2)]
    assert st["lastProbeTime"] == "2026-01-01T00:10:00Z"
    assert ready_cond(b)["status"] == "True" and "2 models" in ready_cond(b)["message"]
    js = jobs(b)
    assert set(js) == {"ai-catalog-probe-dmz-1", "ai-catalog-probe-dmz-2"}  # the finished one is kept
    init = js["ai-catalog-probe-dmz-2"]["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"] == ["600"]  # sleeps refreshIntervalSeconds, then probes
    # Next call: probe 2 sleeping, status recorded: nothing new starts, status is stable.
    job2 = waiting(js["ai-catalog-probe-dmz-2"])
    c = src_sync(hr.next_parent(parent, b), [job1, job2], [pull_secret()])
    assert set(jobs(c)) == {"ai-catalog-probe-dmz-1", "ai-catalog-probe-dmz-2"}
    # The Role names the newest probe only: the finished one has nothing left to report.
    role = next(x for x in c["children"] if x["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "patch"],
                              "resourceNames": ["ai-catalog-probe-dmz-2"]}]
    assert c["status"] == b["status"]
    assert c["resyncAfterSeconds"] == 600


def test_lost_status_write_is_recovered_from_the_kept_job():
    parent = source()
    a = src_sync(parent, related=[pull_secret()])
    job1 = finished(jobs(a)["ai-catalog-probe-dmz-1"], PROBE_OK)
    b = src_sync(hr.next_parent(parent, a), [job1], [pull_secret()])
    job2 = waiting(jobs(b)["ai-catalog-probe-dmz-2"])
    # The status write of b was lost: the parent still says Pending / attempt 1.
    c = src_sync(hr.next_parent(parent, a), [job1, job2], [pull_secret()])
    assert c["status"]["phase"] == "Ready" and c["status"]["probeAttempt"] == 2
    assert c["status"]["catalogRevision"] == REV1


@pytest.mark.parametrize(
    "reason", ["CatalogAuthFailed", "CatalogTLSInvalid", "CatalogSourceNotReady", "CatalogInvalid"]
)
def test_probe_errors_become_failed_with_the_probe_reason(reason):
    parent = source(status=ready_status(attempt=4))
    job4 = cs.probe_job(cs.parse_source(parent), CFG, attempt=4, delay=600, inputs="x", auth=True, ca=True)
    obs = finished(job4, {"error": {"reason": reason, "message": f"{reason} details"}},
                   exit_code=1, at="2026-01-01T01:00:00Z")
    a = src_sync(parent, [obs], [pull_secret()])
    st = a["status"]
    assert st["phase"] == "Failed" and ready_cond(a)["reason"] == reason
    assert ready_cond(a)["message"] == f"{reason} details"
    assert st["lastProbeTime"] == "2026-01-01T01:00:00Z" and st["probeAttempt"] == 5
    assert st["catalogRevision"] == REV1 and st["models"]  # the last good listing stays for information
    assert "ai-catalog-probe-dmz-5" in jobs(a)


@pytest.mark.parametrize("reason", ["not a reason!", "x" * 200, 42, ["CatalogAuthFailed"], None])
def test_a_probe_reason_outside_the_crd_pattern_becomes_not_ready(reason):
    """A reason the CRD's condition pattern refuses would make the status write fail: replaced."""
    parent = source(status=ready_status(attempt=4))
    job4 = cs.probe_job(cs.parse_source(parent), CFG, attempt=4, delay=600, inputs="x", auth=True, ca=True)
    obs = finished(job4, {"error": {"reason": reason, "message": None}}, exit_code=1, at="2026-01-01T01:00:00Z")
    a = src_sync(parent, [obs], [pull_secret()])  # check() validates the status against the CRD
    assert a["status"]["phase"] == "Failed" and ready_cond(a)["reason"] == "CatalogSourceNotReady"


def test_probe_job_failed_without_result_is_worker_failed():
    parent = source(status=ready_status(attempt=2))
    job2 = cs.probe_job(cs.parse_source(parent), CFG, attempt=2, delay=600, inputs="x", auth=True, ca=True)
    obs = hr.observe(job2, status=hr.job_status(failed=1, condition="Failed", reason="DeadlineExceeded",
                                                message="Job was active longer than specified deadline"))
    a = src_sync(parent, [obs], [pull_secret()])
    assert a["status"]["phase"] == "Failed" and ready_cond(a)["reason"] == "WorkerFailed"
    assert ready_cond(a)["message"] == (
        "probe job failed without a result: DeadlineExceeded: Job was active longer than specified deadline"
        " (kubectl logs job/ai-catalog-probe-dmz-2 -n d8-ai-models shows the worker's log)")


def test_changed_credentials_replace_the_sleeping_probe_at_once():
    parent = source()
    a = src_sync(parent, related=[pull_secret()])
    job1 = finished(jobs(a)["ai-catalog-probe-dmz-1"], PROBE_OK)
    b = src_sync(hr.next_parent(parent, a), [job1], [pull_secret()])
    job2 = waiting(jobs(b)["ai-catalog-probe-dmz-2"])
    fixed = pull_secret("reader", "rotated")
    c = src_sync(hr.next_parent(parent, b), [job1, job2], [fixed])
    js = jobs(c)
    assert "ai-catalog-probe-dmz-2" not in js and "ai-catalog-probe-dmz-3" in js
    assert "initContainers" not in js["ai-catalog-probe-dmz-3"]["spec"]["template"]["spec"]
    assert c["status"]["probeAttempt"] == 3 and c["status"]["phase"] == "Ready"
    copy_ = secrets(c)[("d8-ai-models", "ai-catalog-auth-dmz")]
    assert copy_["data"][".dockerconfigjson"] == fixed["data"][".dockerconfigjson"]
    # A spec change (another tag) does the same.
    moved = copy.deepcopy(hr.next_parent(parent, c))
    moved["spec"]["tag"] = "v2"
    job3 = waiting(js["ai-catalog-probe-dmz-3"])
    d = src_sync(moved, [job3], [fixed])
    assert "ai-catalog-probe-dmz-4" in jobs(d) and "ai-catalog-probe-dmz-3" not in jobs(d)
    assert "registry.dmz.example:5000/ai-models/catalog:v2" in json.dumps(jobs(d)["ai-catalog-probe-dmz-4"])


def test_missing_or_invalid_auth_secret_and_bad_ca_fail_without_a_probe():
    a = src_sync(source())
    assert a["status"]["phase"] == "Failed" and ready_cond(a)["reason"] == "CatalogAuthFailed"
    assert "catalog-admin/dmz-pull" in ready_cond(a)["message"] and a["children"] == []
    bad = hr.secret("dmz-pull", "catalog-admin", {"token": "x"})
    a = src_sync(source(), related=[bad])
    assert ready_cond(a)["reason"] == "CatalogAuthFailed" and ".dockerconfigjson" in ready_cond(a)["message"]
    a = src_sync(source(auth=False, ca=False, caBundle=base64.b64encode(b"not a cert").decode()))
    assert a["status"]["phase"] == "Failed" and ready_cond(a)["reason"] == "CatalogTLSInvalid"


def asking(name: str, ns: str, catalog: dict, *, phase: str = "Pending", reason: str = "Pending",
           frozen: dict | None = None, attempt: int = 1) -> dict:
    """A catalog Model whose status (written by the Model hooks) asks ``frozen['sourceName']`` to import."""
    status = {"phase": phase, "attempt": attempt,
              "conditions": [{"type": "Ready", "status": "False", "reason": reason, "message": "",
                              "lastTransitionTime": hr.T0}]}
    if frozen is not None:
        status["source"] = {"resolvedType": "Catalog", "catalog": frozen}
    if ns:
        return hr.model(name, ns, source={"catalog": catalog}, status=status)
    return hr.cluster_model(name, source={"catalog": catalog}, status=status)


def test_credentials_never_leave_the_module_namespace_imports_run_there():
    """Tenancy finding 2: no copy of the catalog credential in a tenant namespace, for any Model."""
    frozen = {**FROZEN}
    models = [
        asking("a", "ai-demo", {"name": "qwen3-8b", "sourceName": "dmz"}, frozen=frozen),
        asking("b", "team-b", {"name": "qwen3-8b", "sourceName": "dmz"}, phase="Ready", reason="ArtifactPublished",
               frozen=frozen),
        asking("c", "team-c", {"name": "qwen3-8b"}, phase="Publishing", reason="Publishing", frozen=frozen,
               attempt=3),
        asking("d", "team-d", {"name": "qwen3-8b", "sourceName": "other"},
               frozen={**frozen, "sourceName": "other"}),
        # The review's reproduction: a name the catalog does not have (no frozen selection).
        asking("e", "team-e", {"name": "does-not-exist", "sourceName": "dmz"}, phase="Failed",
               reason="CatalogModelNotFound"),
        asking("f", "team-f", {"name": "qwen3-8b", "sourceName": "dmz"}, reason="CatalogSourceNotReady",
               frozen=frozen),  # refused in preflight: nothing to run
        hr.model("g", "team-g"),  # not a catalog model
        asking("h", "", {"name": "qwen3-8b"}, frozen=frozen),  # a ClusterModel
    ]
    for parent in (source(status=ready_status()), source(status=failed_status("CatalogSourceNotReady"))):
        a = src_sync(parent, related=[pull_secret(), *models])
        assert {ns for ns, _ in secrets(a)} == {"d8-ai-models"}
        assert {c["metadata"]["namespace"] for c in a["children"]} == {"d8-ai-models"}
        by_uid = {j["metadata"]["labels"]["ai.deckhouse.io/model-uid"]: j for j in jobs(a).values()
                  if j["metadata"]["labels"].get("ai.deckhouse.io/worker") == "catalog-import"}
        wanted = {m["metadata"]["uid"]: m for m in models if m["metadata"]["name"] in ("a", "c", "h")}
        assert set(by_uid) == set(wanted)
        for uid, job in by_uid.items():
            m = wanted[uid]
            ns = m["metadata"].get("namespace")
            repo = (f"ai-models/catalog/namespaced/{ns}/{m['metadata']['name']}/{uid}" if ns
                    else f"ai-models/catalog/cluster/{m['metadata']['name']}/{uid}")
            spec = job["spec"]["template"]["spec"]
            args = spec["containers"][0]["args"]
            assert args[args.index("--source") + 1] == f"oci://registry.dmz.example:5000/models/qwen3-8b@{D1}"
            assert args[args.index("--destination") + 1] == f"dmcr.test:5000/{repo}"
            assert job["metadata"]["labels"]["ai.deckhouse.io/attempt"] == str(m["status"]["attempt"])
            vols = {v["name"]: v for v in spec["volumes"]}
            assert vols["source-auth"]["secret"]["secretName"] == "ai-catalog-auth-dmz"
            assert vols["source-ca"]["secret"]["secretName"] == "ai-catalog-ca-dmz"
            # The push credential next to it grants exactly that model's repository.
            reg = secrets(a)[("d8-ai-models", vols["registry-auth"]["secret"]["secretName"])]
            conf = json.loads(base64.b64decode(reg["data"][".dockerconfigjson"]))
            user = conf["auths"]["dmcr.test:5000"]["username"]
            assert user.endswith(f"push;{repo}")
        # Same-named Models in different namespaces get different objects (names from the UID).
        assert len({j["metadata"]["name"] for j in by_uid.values()}) == len(by_uid)


def test_source_sync_is_deterministic():
    parent = source()
    a = src_sync(parent, related=[pull_secret()])
    job1 = finished(jobs(a)["ai-catalog-probe-dmz-1"], PROBE_OK)
    req = hr.sync_request(hr.next_parent(parent, a), [job1], [pull_secret()],
                          child_types=SOURCE_CHILDREN, related_types=SOURCE_RELATED)
    first = json.dumps(cs.sync(copy.deepcopy(req), CFG), sort_keys=True)
    assert all(json.dumps(cs.sync(copy.deepcopy(req), CFG), sort_keys=True) == first for _ in range(3))


# -- the Model side: plan() and the Model hooks --------------------------------------


def cat_model(catalog: dict, status: dict | None = None, *, cluster: bool = False) -> dict:
    if cluster:
        return hr.cluster_model("qwen", source={"catalog": catalog}, status=status)
    return hr.model("qwen", "ai-demo", source={"catalog": catalog}, status=status)


def related_sources(*sources: dict) -> dict:
    return hr.object_map(sources, (SOURCE,))


def test_plan_uses_the_only_ready_source_and_freezes_the_selection():
    p = model_catalog.plan(cat_model({"name": "qwen3-8b"}), related_sources(
        source(status=ready_status()), source("lab", status=failed_status("CatalogTLSInvalid"))), CFG)
    assert p.error is None
    assert p.source_url == f"oci://registry.dmz.example:5000/models/qwen3-8b@{D1}"
    assert p.frozen == model_catalog.CatalogFrozen("dmz", REV1, D1, f"models/qwen3-8b@{D1}")
    cluster = model_catalog.plan(cat_model({"name": "qwen3-8b"}, cluster=True),
                                 related_sources(source(status=ready_status())), CFG)
    assert cluster.source_url == p.source_url and cluster.frozen == p.frozen


def test_plan_refuses_none_ready_ambiguous_unknown_and_missing_names():
    none_ready = model_catalog.plan(cat_model({"name": "qwen3-8b"}), related_sources(
        source(status=failed_status("CatalogSourceNotReady"))), CFG)
    # The user guide: CatalogSourceNotReady is shown as Failed (recoverable), not Pending.
    assert none_ready.error.reason == "CatalogSourceNotReady" and none_ready.error.phase == "Failed"
    assert none_ready.frozen is None
    two = related_sources(source(status=ready_status()), source("lab", status=ready_status()))
    amb = model_catalog.plan(cat_model({"name": "qwen3-8b"}), two, CFG)
    assert (amb.error.reason, amb.error.phase) == ("CatalogSourceAmbiguous", "Failed")
    assert "dmz, lab" in amb.error.message and "sourceName" in amb.error.message and amb.source_url == ""
    named = model_catalog.plan(cat_model({"name": "qwen3-8b", "sourceName": "lab"}), two, CFG)
    assert named.error is None and named.frozen.sourceName == "lab"
    missing = model_catalog.plan(cat_model({"name": "llama", "sourceName": "dmz"}), two, CFG)
    assert (missing.error.reason, missing.error.phase) == ("CatalogModelNotFound", "Failed")
    assert "'llama'" in missing.error.message
    unknown = model_catalog.plan(cat_model({"name": "qwen3-8b", "sourceName": "nope"}), two, CFG)
    assert unknown.error.reason == "CatalogSourceNotReady" and "does not exist" in unknown.error.message
    auth = model_catalog.plan(cat_model({"name": "qwen3-8b", "sourceName": "dmz"}), related_sources(
        source(status=failed_status("CatalogAuthFailed", "401 from registry"))), CFG)
    assert (auth.error.reason, auth.error.phase) == ("CatalogAuthFailed", "Failed")


FROZEN = {"sourceName": "dmz", "catalogRevision": REV1, "remoteDigest": D1, "reference": f"models/qwen3-8b@{D1}"}


def test_frozen_selection_never_moves_when_the_catalog_publishes_a_new_revision():
    newer = source(status=ready_status(REV2, [entry("qwen3-8b", D3)], attempt=9))
    parent = cat_model({"name": "qwen3-8b"}, {"phase": "Publishing", "source": {"catalog": FROZEN}})
    p = model_catalog.plan(parent, related_sources(newer, source("lab", status=ready_status())), CFG)
    assert p.error is None and p.frozen.as_status() == FROZEN  # not ambiguous either: the source is frozen
    assert p.source_url.endswith(f"@{D1}")
    # Even when the new revision no longer lists the model.
    gone = source(status=ready_status(REV2, [entry("gemma", D2)]))
    assert model_catalog.plan(parent, related_sources(gone), CFG).source_url.endswith(f"@{D1}")


def test_frozen_import_waits_for_the_source_and_keeps_its_digest():
    parent = cat_model({"name": "qwen3-8b"}, {"phase": "Failed", "source": {"catalog": FROZEN}})
    for reason, phase in (("CatalogAuthFailed", "Failed"), ("CatalogTLSInvalid", "Failed"),
                          ("CatalogSourceNotReady", "Failed"), ("CatalogInvalid", "Failed")):
        p = model_catalog.plan(parent, related_sources(source(status=failed_status(reason))), CFG)
        expected = reason if reason in ("CatalogAuthFailed", "CatalogTLSInvalid") else "CatalogSourceNotReady"
        assert (p.error.reason, p.error.phase) == (expected, phase)
        assert p.frozen.as_status() == FROZEN and D1 in p.error.message


# Through the Model hooks (hooks/model.py consumes the plan).


def model_sync(parent: dict, children=(), related=()) -> dict:
    fn = hooks_model.clustermodel_sync if parent["kind"] == "ClusterModel" else hooks_model.model_sync
    req = hr.sync_request(parent, children, related, related_types=("Job.batch/v1", SOURCE))
    answer = fn(req, CFG)
    errors = crd_validate.validate_status(CRDS[parent["kind"]], parent, answer["status"])
    assert [e for e in errors if e.startswith("status")] == [], errors
    return answer


def import_job_for(model: dict, parent_source: dict | None = None) -> dict:
    """The import Job the ModelCatalogSource controller runs for ``model`` (as its status asks)."""
    a = src_sync(parent_source or source(status=ready_status()), related=[pull_secret(), model])
    found = [j for j in jobs(a).values() if j["metadata"]["labels"].get("ai.deckhouse.io/worker") == "catalog-import"]
    assert len(found) == 1, list(jobs(a))
    return found[0]


def test_model_hook_imports_the_frozen_digest_and_recovers_after_a_source_failure():
    parent = cat_model({"name": "qwen3-8b"})
    a = model_sync(parent, related=[source(status=ready_status())])
    assert a["status"]["source"]["catalog"] == FROZEN
    # The import runs under the source, in the module namespace; beside the Model only the
    # Role that lets that import's worker record Events on it.
    assert [(c["kind"], c["metadata"]["namespace"]) for c in a["children"]] == [
        ("Role", "ai-demo"), ("RoleBinding", "ai-demo")]
    [subject] = a["children"][1]["subjects"]
    assert subject["namespace"] == "d8-ai-models" and subject["name"].startswith("ai-catalog-import-worker-")
    assert a["children"][0]["rules"] == [{"apiGroups": ["events.k8s.io"], "resources": ["events"],
                                          "verbs": ["create"]}]
    assert a["status"]["phase"] == "Pending" and "'dmz'" in next(
        c for c in a["status"]["conditions"] if c["type"] == "Ready")["message"]
    p1 = hr.next_parent(parent, a)
    job = import_job_for(p1)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--source") + 1] == f"oci://registry.dmz.example:5000/models/qwen3-8b@{D1}"
    # The source fails (rotated token): the Model shows it, starts nothing new, keeps the frozen digest.
    b = model_sync(p1, related=[source(status=failed_status("CatalogAuthFailed", "401"))])
    assert b["status"]["phase"] == "Failed"
    assert next(c for c in b["status"]["conditions"] if c["type"] == "Ready")["reason"] == "CatalogAuthFailed"
    assert b["status"]["source"]["catalog"] == FROZEN
    p2 = hr.next_parent(p1, b)
    assert not [j for j in jobs(src_sync(source(status=failed_status("CatalogAuthFailed", "401")),
                                         related=[pull_secret(), p2])).values()
                if j["metadata"]["labels"].get("ai.deckhouse.io/worker") == "catalog-import"]
    # Fixed, and meanwhile the catalog moved on to a new revision: the same digest is imported.
    c = model_sync(p2, related=[source(status=ready_status(REV2, [entry("qwen3-8b", D3)]))])
    assert c["status"]["phase"] in ("Pending", "Publishing") and c["status"]["source"]["catalog"] == FROZEN
    p3 = hr.next_parent(p2, c)
    args = import_job_for(p3, source(status=ready_status(REV2, [entry("qwen3-8b", D3)])))[
        "spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--source") + 1].endswith(f"@{D1}")


def test_model_hook_reads_the_import_from_the_module_namespace_and_checks_it():
    parent = cat_model({"name": "qwen3-8b"})
    src = source(status=ready_status())
    p1 = hr.next_parent(parent, model_sync(parent, related=[src]))
    job = import_job_for(p1)
    dest = f"dmcr.test:5000/ai-models/catalog/namespaced/ai-demo/qwen/{parent['metadata']['uid']}"
    # A result that names another repository is ignored and named in the message.
    other = "dmcr.test:5000/ai-models/catalog/namespaced/team-a/secret-model/0000"
    forged = finished(job, json.loads(hr.success_result(other)))
    b = model_sync(p1, related=[src, forged])
    assert b["status"]["phase"] != "Ready" and "artifact" not in b["status"]
    ready = next(c for c in b["status"]["conditions"] if c["type"] == "Ready")
    assert "ignored worker results" in ready["message"]
    assert f"d8-ai-models/{job['metadata']['name']}: " in ready["message"] and "secret-model" not in ready["message"]
    # The real result: Ready, with the frozen selection kept.
    obs = finished(job, json.loads(hr.success_result(dest, resolved_type="Catalog")))
    c = model_sync(p1, related=[src, obs])
    assert c["status"]["phase"] == "Ready" and c["status"]["artifact"]["uri"].startswith(dest + "@")
    assert c["status"]["source"]["catalog"] == FROZEN
    # Once Ready, the source stops running the import.
    assert not [j for j in jobs(src_sync(src, related=[pull_secret(), hr.next_parent(p1, c)])).values()
                if j["metadata"]["labels"].get("ai.deckhouse.io/worker") == "catalog-import"]


def test_model_customize_relates_its_import_in_the_module_namespace():
    req = hr.customize_request(cat_model({"name": "qwen3-8b"}))
    rules = hooks_model.model_customize(req, CFG)["relatedResources"]
    uid = req["parent"]["metadata"]["uid"]
    mine = {"matchLabels": {"ai.deckhouse.io/model-uid": uid}}
    assert {"apiVersion": "batch/v1", "resource": "jobs", "namespace": "d8-ai-models", "labelSelector": mine} in rules
    assert not any(r["resource"] == "pods" for r in rules)  # the import's result is on its Job
    cluster = hooks_model.clustermodel_customize(hr.customize_request(cat_model({"name": "qwen3-8b"}, cluster=True)),
                                                 CFG)["relatedResources"]
    assert {"apiVersion": "batch/v1", "resource": "jobs", "namespace": "d8-ai-models",
            "labelSelector": {"matchLabels": {"ai.deckhouse.io/model-uid": hr.uid_for("ClusterModel", "", "qwen")}}} \
        in cluster
    assert not any(r["resource"] == "pods" for r in cluster)


def test_model_hook_two_ready_sources_without_name_is_failed_ambiguous():
    a = model_sync(cat_model({"name": "qwen3-8b"}),
                   related=[source(status=ready_status()), source("lab", status=ready_status())])
    assert a["status"]["phase"] == "Failed" and a["children"] == []
    ready = next(c for c in a["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "CatalogSourceAmbiguous" and "sourceName" in ready["message"]


def test_truncated_listing_reprobes_with_the_names_models_ask_for():
    status = ready_status(attempt=2)
    status["conditions"][0]["reason"] = "CatalogListTruncated"
    parent = source(status=status)
    job2 = cs.probe_job(cs.parse_source(parent), CFG, attempt=2, delay=600, inputs="old", auth=True, ca=True)
    obs = waiting(job2)
    asking = [hr.model("a", "ai-demo", source={"catalog": {"name": "zeta-70b", "sourceName": "dmz"}}),
              hr.cluster_model("b", source={"catalog": {"name": "alpha-1b"}})]
    req = hr.sync_request(parent, [obs], [pull_secret(), *asking], child_types=SOURCE_CHILDREN,
                          related_types=(*SOURCE_RELATED, "ClusterModel.ai.deckhouse.io/v1alpha1"))
    a = check(parent, cs.sync(req, CFG))
    js = jobs(a)
    assert set(js) == {"ai-catalog-probe-dmz-3"}  # replaced at once, no delay
    args = js["ai-catalog-probe-dmz-3"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [args[i + 1] for i, x in enumerate(args) if x == "--want"] == ["alpha-1b", "zeta-70b"]
    assert "initContainers" not in js["ai-catalog-probe-dmz-3"]["spec"]["template"]["spec"]
    # Not truncated: no --want (the whole catalog is listed anyway).
    plain = source(status=ready_status(attempt=2))
    b = src_sync(plain, [waiting(job2)], [pull_secret(), *asking[:1]])
    assert "--want" not in json.dumps(b["children"])


def test_completed_probe_without_a_result_moves_on_and_keeps_the_last_listing():
    parent = source(status=ready_status(attempt=2))
    job2 = cs.probe_job(cs.parse_source(parent), CFG, attempt=2, delay=600, inputs="x", auth=True, ca=True)
    obs = hr.observe(job2, status=hr.job_status(succeeded=1, condition="Complete"))
    a = src_sync(parent, [obs], [pull_secret()])
    assert a["status"]["phase"] == "Ready" and a["status"]["catalogRevision"] == REV1
    assert a["status"]["probeAttempt"] == 3 and "ai-catalog-probe-dmz-3" in jobs(a)


def test_a_probe_failure_does_not_stop_an_import_in_flight():
    parent = cat_model({"name": "qwen3-8b"}, {"phase": "Publishing", "source": {"catalog": FROZEN}})
    p = model_catalog.plan(parent, related_sources(source(status=failed_status("CatalogSourceNotReady"))), CFG)
    assert p.error is None and p.source_url.endswith(f"@{D1}")
    gone = model_catalog.plan(parent, related_sources(), CFG)  # the source was deleted
    assert gone.error.reason == "CatalogSourceNotReady" and gone.frozen.as_status() == FROZEN


def test_long_source_names_give_valid_object_names_and_labels():
    long = "catalog." + "x" * 200
    a = src_sync(source(long), related=[pull_secret()])  # kubernetes_validate checks names and labels
    assert all(len(c["metadata"]["name"]) <= 63 for c in a["children"])
    label_sets = [c["metadata"]["labels"] for c in a["children"]]
    label_sets += [c["spec"]["template"]["metadata"]["labels"] for c in a["children"] if c["kind"] == "Job"]
    assert all(len(v) <= 63 for labels in label_sets for v in labels.values())


def test_http_routes_answer_and_refuse_malformed_parents():
    from hooks.app import create_app

    client = create_app(CFG).test_client()
    req = hr.sync_request(source(), [], [pull_secret()], child_types=SOURCE_CHILDREN, related_types=SOURCE_RELATED)
    r = client.post("/hooks/modelcatalogsource/sync", json=req)
    assert r.status_code == 200 and r.get_json()["status"]["phase"] == "Pending"
    r = client.post("/hooks/modelcatalogsource/customize", json=hr.customize_request(source()))
    assert r.status_code == 200 and r.get_json()["relatedResources"]
    bad = copy.deepcopy(req)
    del bad["parent"]["spec"]["registry"]
    r = client.post("/hooks/modelcatalogsource/sync", json=bad)
    assert r.status_code == 400 and "registry" in r.get_json()["error"]


def test_the_only_source_failing_with_auth_or_tls_shows_its_reason_without_source_name():
    """The user guide: with sourceName omitted and the only source Failed with CatalogAuthFailed or
    CatalogTLSInvalid, the Model shows Failed with that reason (recoverable)."""
    for reason in ("CatalogAuthFailed", "CatalogTLSInvalid"):
        p = model_catalog.plan(cat_model({"name": "qwen3-8b"}), related_sources(
            source(status=failed_status(reason, "401 from registry"))), CFG)
        assert (p.error.reason, p.error.phase) == (reason, "Failed"), p.error
        a = model_sync(cat_model({"name": "qwen3-8b"}), related=[source(status=failed_status(reason, "x"))])
        assert a["status"]["phase"] == "Failed" and a["children"] == []
        assert next(c for c in a["status"]["conditions"] if c["type"] == "Ready")["reason"] == reason
    # Two sources, none Ready: no guess at which one was meant.
    two = related_sources(source(status=failed_status("CatalogAuthFailed")), source("lab", status=failed_status("x")))
    p = model_catalog.plan(cat_model({"name": "qwen3-8b"}), two, CFG)
    assert (p.error.reason, p.error.phase) == ("CatalogSourceNotReady", "Failed")


def test_catalog_errors_of_the_import_job_show_failed_and_are_retried_with_the_same_digest():
    """The user guide: catalog errors during the import end as Failed with the catalog reason,
    recoverable with the same revision and digest; not an endless Publishing."""
    parent = cat_model({"name": "qwen3-8b"})
    src = source(status=ready_status())
    p1 = hr.next_parent(parent, model_sync(parent, related=[src]))
    job1 = import_job_for(p1)
    obs = finished(job1, {"error": {"reason": "CatalogAuthFailed", "message": "401 from the catalog"}},
                   exit_code=1)
    b = model_sync(p1, related=[src, obs])
    st = b["status"]
    assert st["phase"] == "Failed" and st["attempt"] == 2 and st["source"]["catalog"] == FROZEN
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "CatalogAuthFailed" and "recoverable" in ready["message"]
    # The source runs the next attempt, same digest, while the Model keeps showing Failed.
    p2 = hr.next_parent(p1, b)
    job2 = import_job_for(p2)
    assert job2["metadata"]["labels"]["ai.deckhouse.io/attempt"] == "2"
    args = job2["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--source") + 1].endswith(f"@{D1}")
    running = hr.observe(job2, status=hr.job_status(active=1))
    c = model_sync(p2, related=[src, running])
    assert c["status"]["phase"] == "Failed"
    assert next(x for x in c["status"]["conditions"] if x["type"] == "Ready")["reason"] == "CatalogAuthFailed"
    # The administrator fixed the credential: the retry publishes and the Model is Ready.
    dest = f"dmcr.test:5000/ai-models/catalog/namespaced/ai-demo/qwen/{parent['metadata']['uid']}"
    obs2 = finished(job2, json.loads(hr.success_result(dest, resolved_type="Catalog")))
    d = model_sync(hr.next_parent(p2, c), related=[src, obs2])
    assert d["status"]["phase"] == "Ready" and d["status"]["source"]["catalog"] == FROZEN
    # A permanent catalog error (the pinned digest is gone upstream) stays Failed: nothing retried.
    obs3 = finished(job1, {"error": {"reason": "CatalogModelNotFound", "message": "gone"}}, exit_code=2)
    e = model_sync(p1, related=[src, obs3])
    assert e["status"]["phase"] == "Failed"
    assert not [j for j in jobs(src_sync(src, related=[pull_secret(), hr.next_parent(p1, e)])).values()
                if j["metadata"]["labels"].get("ai.deckhouse.io/worker") == "catalog-import"]
