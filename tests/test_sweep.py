"""The DMCR sweep (``jobs sweep``) and what makes namespace deletion finish.

Deleting a namespace that holds published Models used to hang: finalize asked
for a cleanup Job in that namespace, and the API server refuses creates in a
Terminating namespace. Now finalize answers ``finalized: true`` there and the
sweep reclaims the artifact: it lists the registry, then the live Models and
ClusterModels (the real API server here), and deletes the manifests of every
repository whose object is gone. Its grant lists the catalog and deletes only
under ``ai-models/catalog/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from hooks import model as hooks_model
from hooks.token import Scope, narrow
from jobs.sweep import live_repositories, orphans
from lib import credentials
from lib.api.naming import model_repository
from lib.capacity import USAGE_CONFIGMAP, total_used
from lib.config import Config
from tests.support import hookreq as hr
from tests.support.dmcr import DmcrServer

ROOT = Path(__file__).resolve().parents[1]
KEY = b"sweep-test-signing-key-0123456789abcdef"


# -- the grant ----------------------------------------------------------------------------


def test_the_sweep_grant_covers_the_module_tree_and_the_catalog_only():
    grant = credentials.verify(KEY, *credentials.sweep_credential(KEY))
    assert grant is not None and grant.catalog
    assert grant.allowed("ai-models/catalog/namespaced/a/m/uid") == ("pull", "delete")
    assert grant.allowed("ai-models/catalog/cluster/m/uid") == ("pull", "delete")
    for outside in ("ai-models/catalogx/y", "ai-models/catalog", "other/repo", "ai-models/catalog/../x"):
        assert grant.allowed(outside) == (), outside
    access = narrow(grant, [Scope("registry", "catalog", ("*",)),
                            Scope("repository", "ai-models/catalog/cluster/m/u", ("push", "delete"))])
    assert [(a.type, a.name, a.actions) for a in access] == [
        ("repository", "ai-models/catalog/cluster/m/u", ("delete",)), ("registry", "catalog", ("*",))]
    # Nobody else lists the catalog, and a widened username does not verify.
    pull = credentials.verify(KEY, *credentials.pull_credential(KEY, ["ai-models/catalog/cluster/m/u"]))
    assert pull is not None and not pull.catalog
    assert narrow(pull, [Scope("registry", "catalog", ("*",))]) == []
    _, pw = credentials.pull_credential(KEY, ["ai-models/catalog/cluster/m/u"])
    assert credentials.verify(KEY, "sweep;ai-models/catalog/", pw) is None


def test_orphans_are_the_repositories_of_objects_that_are_gone():
    live = live_repositories(lambda plural: {
        "models": [{"metadata": {"name": "m", "namespace": "a", "uid": "u1"}}],
        "clustermodels": [{"metadata": {"name": "c", "uid": "u2"}}],
    }[plural])
    repos = [model_repository(namespace="a", name="m", uid="u1"), model_repository(namespace=None, name="c", uid="u2"),
             model_repository(namespace="a", name="m", uid="old-uid"),  # recreated under the same name
             model_repository(namespace="gone", name="x", uid="u3"), "someone/else"]
    assert orphans(repos, live) == sorted([repos[2], repos[3]])


# -- finalize in a terminating namespace ------------------------------------------------------


def _ready_model() -> dict:
    m = hr.model("bge", "team")
    dest = f"dmcr.test:5000/{model_repository(namespace='team', name='bge', uid=m['metadata']['uid'])}"
    m["status"] = {"phase": "Ready", "attempt": 1, "artifact": {
        "uri": f"{dest}@sha256:{'a' * 64}", "digest": "sha256:" + "a" * 64}}
    m["metadata"]["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    return m


def _namespace(terminating: bool) -> dict:
    ns: dict = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team", "uid": "ns-uid"},
                "status": {"phase": "Terminating" if terminating else "Active"}}
    if terminating:
        ns["metadata"]["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    return ns


CFG = Config(namespace="d8-ai-models", registry="dmcr.test:5000", worker_image="w:1", signing_key=KEY)


def test_finalize_in_a_terminating_namespace_finishes_at_once_without_a_job():
    m = _ready_model()
    req = hr.sync_request(m, (), [_namespace(True)], finalizing=True, related_types=("Pod.v1", "Namespace.v1"))
    out = hooks_model.model_finalize(req, CFG)
    assert out["finalized"] is True and out["children"] == []
    assert "sweep" in next(c for c in out["status"]["conditions"] if c["type"] == "Ready")["message"]
    # In a live namespace the Model cleans up after itself, as before.
    req = hr.sync_request(m, (), [_namespace(False)], finalizing=True, related_types=("Pod.v1", "Namespace.v1"))
    out = hooks_model.model_finalize(req, CFG)
    assert out["finalized"] is False and [c["kind"] for c in out["children"]] == ["Secret", "ServiceAccount", "Role", "RoleBinding", "Job"]


def test_customize_relates_the_models_namespace_only_for_models():
    rules = hooks_model.model_customize(hr.customize_request(hr.model("bge", "team")), CFG)["relatedResources"]
    assert {"apiVersion": "v1", "resource": "namespaces", "names": ["team"]} in rules
    rules = hooks_model.clustermodel_customize(hr.customize_request(hr.cluster_model("c")), CFG)["relatedResources"]
    assert not [r for r in rules if r["resource"] == "namespaces"]


# -- the sweep against a real registry and a real API server ----------------------------------


@pytest.fixture
def dmcr(tmp_path):
    with DmcrServer(tmp_path / "dmcr", signing_key=KEY) as d:
        yield d


def _manifest_exists(dmcr: DmcrServer, repo: str, digest: str) -> bool:
    tok = dmcr.token(*dmcr.pull_credential([repo]), [f"repository:{repo}:pull"]).json()["token"]
    r = requests.head(f"{dmcr.url}/v2/{repo}/manifests/{digest}", timeout=10, headers={
        "Authorization": f"Bearer {tok}", "Accept": "application/vnd.oci.image.manifest.v1+json"})
    return r.status_code == 200


def test_sweep_deletes_exactly_the_artifacts_whose_object_is_gone(kube, kube_namespace, dmcr, tmp_path):
    from kubernetes import client

    kube.kubectl("apply", "--server-side", "--field-manager=ai-models-tests", "--force-conflicts", "-k", str(ROOT / "crds"))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/models.ai.deckhouse.io", "crd/clustermodels.ai.deckhouse.io")
    api = client.CustomObjectsApi(kube.client)
    live = api.create_namespaced_custom_object("ai.deckhouse.io", "v1alpha1", kube_namespace, "models", {
        "apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "Model", "metadata": {"name": "keep"},
        "spec": {"source": {"url": "https://huggingface.co/acme/keep"}}})
    live_repo = model_repository(namespace=kube_namespace, name="keep", uid=live["metadata"]["uid"])
    gone_repo = model_repository(namespace=kube_namespace, name="deleted", uid="0000-gone")
    gone_cluster = model_repository(namespace=None, name="deleted-cluster", uid="0000-gone-too")
    pushed = {repo: dmcr.push_artifact(repo, ("latest",))[0] for repo in (live_repo, gone_repo, gone_cluster)}
    # A published artifact's size: the sweep records the total for the capacity check (lib/capacity.py).
    api.patch_namespaced_custom_object_status("ai.deckhouse.io", "v1alpha1", kube_namespace, "models", "keep", {
        "status": {"artifact": {"uri": f"{dmcr.host}/{live_repo}@{pushed[live_repo]}", "digest": pushed[live_repo],
                                "sizeBytes": 123456789}}})
    key_file = tmp_path / "signing.key"
    key_file.write_bytes(KEY)
    env = {**os.environ, "AI_MODELS_SIGNING_KEY_FILE": str(key_file), "AI_MODELS_NAMESPACE": kube_namespace}
    core = client.CoreV1Api(kube.client)

    def usage_record() -> dict | None:
        try:
            return core.read_namespaced_config_map(USAGE_CONFIGMAP, kube_namespace).data
        except client.ApiException as e:
            assert e.status == 404
            return None

    def expected_usage() -> int:
        return total_used(o for plural in ("models", "clustermodels")
                          for o in api.list_cluster_custom_object("ai.deckhouse.io", "v1alpha1", plural)["items"])

    def run(*extra: str) -> dict:
        result = tmp_path / "result.json"
        p = subprocess.run(
            [sys.executable, "-m", "jobs", "sweep", "--registry", dmcr.host, "--insecure-registry",
             "--kubeconfig", str(kube.kubeconfig), "--result-file", str(result), *extra],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        return json.loads(result.read_text())["sweep"]

    dry = run("--dry-run")
    assert dry["orphans"] >= 2 and dry["deleted"] == 0
    assert usage_record() is None and dry["usage"]["written"] is False  # a dry run writes nothing
    assert all(_manifest_exists(dmcr, repo, d) for repo, d in pushed.items())
    out = run()
    assert out["deleted"] >= 2 and out["live"] >= 1
    assert _manifest_exists(dmcr, live_repo, pushed[live_repo])
    assert not _manifest_exists(dmcr, gone_repo, pushed[gone_repo])
    assert not _manifest_exists(dmcr, gone_cluster, pushed[gone_cluster])
    record = usage_record()
    assert out["usage"] == {"usedBytes": expected_usage(), "written": True} and expected_usage() >= 123456789
    assert record is not None and record["usedBytes"] == str(expected_usage()) and record["updatedAt"]
    again = run()
    assert again["deleted"] == 0  # converged
    assert again["usage"]["written"] is False and usage_record() == record  # unchanged: not rewritten


def test_sweep_without_signing_keys_fails_clearly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_MODELS_")}
    result = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "jobs", "sweep", "--registry", "127.0.0.1:1", "--insecure-registry",
                        "--result-file", str(result)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert p.returncode != 0
    assert "signing key" in json.loads(result.read_text())["error"]["message"]
