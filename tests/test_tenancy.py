"""Tenant isolation: a hostile namespace admin gets nothing that is not theirs.

The adversary owns namespace ``team-b`` with everything a namespace admin may
do there: create Pods, Jobs, Secrets, ConfigMaps, Services and Ingresses with
any labels, annotations and ownerReferences, and edit its own workloads' and
Jobs' annotations (the worker's result is one: ``ai.deckhouse.io/result`` on
its Job). It cannot write any object's status subresource, nor anything in
another namespace (deploy/rbac/user-roles.yaml). Each test below is one path
it tries towards namespace ``team-a``'s models or the module's secrets, and
proves the attempt fails and nothing leaks. docs/security.md's threat table
names each test; the end-to-end test at the bottom replays the review's
reproduction against the real hook service and a real DMCR with token auth.

Hooks are called over HTTP as Metacontroller calls them (the Flask app, v2
request shapes).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from typing import Any

import kubernetes_validate
import pytest
import requests

from hooks.app import create_app
from lib import credentials
from lib.api.naming import model_repository
from lib.config import Config
from lib.registry_token import generate_signing_key
from tests.support import hookreq as hr

Obj = dict[str, Any]

REGISTRY = "dmcr.test:5000"
TOKEN_KEY = generate_signing_key()
CFG = Config(
    namespace="d8-ai-models",
    registry=REGISTRY,
    worker_image="worker:test",
    signing_key=b"tenancy-suite-signing-key-0123456789",
    token_key_pem=TOKEN_KEY,
    upload_external_base="https://upload.example.com",
)
A, B = "team-a", "team-b"
VICTIM = hr.model("secret-model", A)
VICTIM_REPO = model_repository(namespace=A, name="secret-model", uid=VICTIM["metadata"]["uid"])
VICTIM_URI = f"{REGISTRY}/{VICTIM_REPO}@sha256:" + "a" * 64
DIGEST = "sha256:" + "b" * 64


@pytest.fixture(scope="module")
def http():
    return create_app(CFG).test_client()


def post(http, path: str, body: Obj) -> Obj:
    r = http.post(path, json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def model_sync(http, parent: Obj, children=(), related=()) -> Obj:
    kind = "clustermodel" if parent["kind"] == "ClusterModel" else "model"
    req = hr.sync_request(parent, children, related, related_types=("Job.batch/v1",))
    answer = post(http, f"/hooks/{kind}/sync", req)
    for child in answer["children"]:
        kubernetes_validate.validate(child, "1.33", strict=True)
    return answer


def ready_message(answer: Obj) -> str:
    return next(c for c in answer["status"]["conditions"] if c["type"] == "Ready")["message"]


def forged_pod(job: Obj, message: str, *, name: str = "forged") -> Obj:
    """A Pod the tenant created itself: the Job's labels, a controller ownerReference to the
    Job's UID (both writable by anyone who may create Pods) and its own termination message."""
    pod = hr.pod_of(job, exit_code=0, message=message)
    pod["metadata"]["name"] = name
    pod["metadata"]["uid"] = hr.uid_for("Pod", B, name)
    return pod


def publishing_model(http, name: str = "thief") -> tuple[Obj, Obj, Obj]:
    """B's own Model with its publish Job running: (parent as stored, answer, observed Job)."""
    parent = hr.model(name, B)
    a = model_sync(http, parent)
    job = hr.observe(hr.find_child(a, "Job"), status=hr.job_status(active=1))
    return hr.next_parent(parent, a), a, job


def own_destination(parent: Obj) -> str:
    md = parent["metadata"]
    return f"{REGISTRY}/{model_repository(namespace=md.get('namespace'), name=md['name'], uid=md['uid'])}"


# -- forged worker results ------------------------------------------------------------


def test_forged_job_result_naming_another_namespace_is_ignored(http):
    """Finding 1, on the result channel: B patches ``ai.deckhouse.io/result`` on its own publish Job
    with a result naming A's repository."""
    parent, _, job = publishing_model(http)
    forged = hr.reported(job, hr.success_result(VICTIM_URI.split("@")[0]))
    b = model_sync(http, parent, [forged])
    assert b["status"]["phase"] == "Publishing" and "artifact" not in b["status"]
    assert VICTIM_REPO not in json.dumps(b)
    msg = ready_message(b)
    # Shown, naming the Job and why ("<namespace>/<job>: why"), never echoing the forged values.
    assert "ignored worker results" in msg and f"{B}/{job['metadata']['name']}: " in msg
    # Once the Job is Complete with that result: a failed attempt, still nothing copied.
    done = hr.reported(hr.observe(job, status=hr.job_status(succeeded=1, condition="Complete")),
                       hr.success_result(VICTIM_URI.split("@")[0]))
    c = model_sync(http, parent, [done])
    assert c["status"]["phase"] != "Ready" and c["status"]["attempt"] == 2 and VICTIM_REPO not in json.dumps(c)
    assert f"{B}/{job['metadata']['name']}: " in ready_message(c)
    # The same Job with B's own result is Ready: the content check, not the channel, is what refused it.
    own = hr.reported(job, hr.success_result(own_destination(parent)))
    assert model_sync(http, parent, [own])["status"]["phase"] == "Ready"


def test_forged_result_from_a_job_the_tenant_made_is_ignored(http):
    """A Job the tenant created with the hook's name, labels and an ownerReference to its Model
    (Metacontroller adopts it as a child): it completes, carrying a result that names A's repository."""
    parent, a, _ = publishing_model(http)
    tenant_job = copy.deepcopy(hr.find_child(a, "Job"))
    tenant_job["spec"]["template"]["spec"]["containers"][0]["args"] = ["echo", "forged"]
    job = hr.observe(tenant_job, status=hr.job_status(succeeded=1, condition="Complete",
                                                        finished="2026-01-01T00:10:00Z"))
    job = hr.reported(job, hr.success_result(VICTIM_URI.split("@")[0]))
    b = model_sync(http, parent, [job])
    assert b["status"]["phase"] != "Ready" and VICTIM_REPO not in json.dumps(b["status"])
    assert "ignored worker results" in ready_message(b)
    # It retries with a new attempt instead: a Complete Job without a trustworthy result.
    assert b["status"]["attempt"] == 2


@pytest.mark.parametrize(
    "artifact",
    [
        {"digest": "sha256:" + "b" * 63},  # short
        {"digest": "sha256:../../" + "b" * 58},
        {"digest": "SHA256:" + "B" * 64},
        {"digest": DIGEST, "uri": "{dest}/../team-a/secret-model@" + DIGEST},
        {"digest": DIGEST, "uri": "{dest}@sha256:" + "c" * 64},  # uri and digest disagree
        {"digest": DIGEST, "uri": "evil.example.com/{repo}@" + DIGEST},  # another registry
        {"digest": DIGEST, "mediaType": "text/html"},
        {"digest": DIGEST, "sizeBytes": -1},
    ],
    ids=["short", "path", "upper", "dotdot", "mismatch", "host", "media-type", "size"],
)
def test_malformed_results_for_the_own_repository_are_ignored(http, artifact):
    parent, _, job = publishing_model(http)
    dest = own_destination(parent)
    result = json.loads(hr.success_result(dest))
    result["artifact"].update(artifact)
    result["artifact"]["uri"] = result["artifact"].get("uri", "{dest}@" + result["artifact"]["digest"])
    result["artifact"]["uri"] = result["artifact"]["uri"].format(dest=dest, repo=dest.split("/", 1)[1])
    b = model_sync(http, parent, [hr.reported(job, json.dumps(result))])
    assert b["status"]["phase"] != "Ready" and "artifact" not in b["status"]
    assert f"ignored worker results that are not this model's: {B}/{job['metadata']['name']}: " in ready_message(b)


def test_pods_with_forged_termination_messages_are_never_read(http):
    """The hooks never read Pods (customize relates none; a stale rule that still sent them changes
    nothing): a Pod of B's with the Job's labels, a controller reference to the observed Job and a
    termination message that would pass the content check (B's own repository) is not a result."""
    parent, _, job = publishing_model(http)
    own = hr.success_result(own_destination(parent))
    pod = forged_pod(job, own)
    b = model_sync(http, parent, [job], [pod])
    assert b["status"]["phase"] == "Publishing" and "artifact" not in b["status"]
    assert "ignored worker results" not in ready_message(b)  # not even looked at
    done = hr.observe(job, status=hr.job_status(succeeded=1, condition="Complete"))
    c = model_sync(http, parent, [done], [forged_pod(done, own)])
    assert c["status"]["phase"] != "Ready" and c["status"]["attempt"] == 2 and "artifact" not in c["status"]
    # At deletion: no digest from a Pod, so nothing to clean up.
    deleting = copy.deepcopy(parent)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    out = post(http, "/hooks/model/finalize", hr.sync_request(deleting, [job], [pod], finalizing=True))
    assert out["finalized"] is True and out["children"] == []
    # No hook asks Metacontroller for Pods.
    for path, obj in (("/hooks/model/customize", parent), ("/hooks/model/customize", hr.model("c", B, source={
            "catalog": {"name": "x"}})), ("/hooks/clustermodel/customize", hr.cluster_model("shared"))):
        rules = post(http, path, hr.customize_request(obj))["relatedResources"]
        assert not any(r["resource"] == "pods" for r in rules), (path, rules)


def test_finalize_never_cleans_up_or_reports_another_repository(http):
    """A forged result at deletion time (on B's publish Job): no cleanup of A's artifact, no credential
    for it."""
    parent = hr.model("thief", B, status={"phase": "Publishing", "attempt": 1})
    parent["metadata"]["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    job = hr.observe(hr.find_child(model_sync(http, hr.model("thief", B)), "Job"),
                     status=hr.job_status(succeeded=1, condition="Complete"))
    forged = hr.reported(job, hr.success_result(VICTIM_URI.split("@")[0], digest=DIGEST))
    out = post(http, "/hooks/model/finalize", hr.sync_request(parent, [forged], finalizing=True))
    assert out["finalized"] is True and out["children"] == []  # nothing of B's was published
    assert VICTIM_REPO not in json.dumps(out) and DIGEST not in json.dumps(out)
    # The same result for B's own repository is cleaned up (with a credential for that repository only).
    own = hr.reported(job, hr.success_result(own_destination(parent), digest=DIGEST))
    out = post(http, "/hooks/model/finalize", hr.sync_request(parent, [own], finalizing=True))
    assert out["finalized"] is False and DIGEST in json.dumps(out) and VICTIM_REPO not in json.dumps(out)


def test_forged_progress_annotation_and_counters_are_not_copied(http):
    parent, a, _ = publishing_model(http)
    job = hr.observe(hr.find_child(a, "Job"), status=hr.job_status(active=1),
                     annotations={"ai.deckhouse.io/progress": "50%<img src=x onerror=alert(1)>"})
    job["metadata"]["labels"]["ai.deckhouse.io/attempt"] = "99999"  # the tenant edits its Job's labels
    b = model_sync(http, parent, [job])
    assert "img" not in json.dumps(b["status"]) and b["status"].get("progress", "0%") == "0%"
    assert b["status"]["attempt"] == 1


def test_pre_created_objects_with_the_hooks_names_change_nothing(http):
    """The tenant pre-creates the registry Secret (a credential it crafted for A's repository) and
    the upload Secret under the names the hooks use: the answer does not read them, and the crafted
    credential is refused by the token service."""
    parent = hr.model("thief", B)
    first = model_sync(http, parent)
    reg = copy.deepcopy(hr.find_child(first, "Secret", "ai-model-registry-"))
    crafted = credentials.dockerconfigjson(REGISTRY, f"push;{VICTIM_REPO}", "0" * 64)
    reg["data"][".dockerconfigjson"] = base64.b64encode(crafted.encode()).decode()
    again = model_sync(http, hr.next_parent(parent, first), [hr.observe(reg)])
    assert hr.find_child(again, "Secret", "ai-model-registry-")["data"] == hr.find_child(
        first, "Secret", "ai-model-registry-")["data"]
    assert token_request(http, f"push;{VICTIM_REPO}", "0" * 64, f"repository:{VICTIM_REPO}:pull,push")[0] == 401


# -- credentials and the token service ------------------------------------------------


def token_request(http, user: str, password: str, scope: str) -> tuple[int, list[Obj]]:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    r = http.get("/registry/token", query_string={"service": CFG.token_service, "scope": scope},
                 headers={"Authorization": f"Basic {auth}"})
    if r.status_code != 200:
        return r.status_code, []
    payload = r.get_json()["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return 200, claims.get("access") or []


def test_credentials_minted_for_other_repositories_are_refused(http):
    own = model_repository(namespace=B, name="thief", uid=hr.uid_for("Model", B, "thief"))
    user, pw = credentials.pull_credential(CFG.signing_keys, [own])
    status, access = token_request(http, user, pw, f"repository:{own}:pull")
    assert status == 200 and [a["name"] for a in access] == [own]
    # The grant is the username: widening it breaks the HMAC.
    for forged_user in (user.replace(own, VICTIM_REPO), f"{user};{VICTIM_REPO}", f"push;{own}",
                        user.replace("pull;", "pull;" + VICTIM_REPO + ";")):
        assert token_request(http, forged_user, pw, f"repository:{VICTIM_REPO}:pull")[0] == 401
    # Path tricks in the scope are other repositories: nothing granted.
    for scope in (f"repository:{own}/../../{A}/secret-model/{VICTIM['metadata']['uid']}:pull",
                  f"repository:{VICTIM_REPO}:pull", f"repository:{own.upper()}:pull",
                  f"repository:{own}/x:pull"):
        status, access = token_request(http, user, pw, scope)
        assert status in (200, 400) and not access, scope


# -- workloads ----------------------------------------------------------------------------


def workload(annotations: dict[str, str]) -> Obj:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": B, "uid": hr.uid_for("Deployment", B, "app"),
                     "generation": 1, "annotations": annotations},
        "spec": {"selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}},
                              "spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
    }


def decorator_sync(http, obj: Obj, *models: Obj) -> Obj:
    related = hr.object_map(models, ("Model.ai.deckhouse.io/v1alpha1", "ClusterModel.ai.deckhouse.io/v1alpha1"))
    body = {
        "controller": {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "DecoratorController",
                       "metadata": {"name": "ai-models-workloads"}},
        "object": obj, "attachments": {"Secret.v1": {}}, "related": related, "finalizing": False,
    }
    return post(http, "/hooks/workload/sync", body)


def granted(answer: Obj) -> list[str]:
    """Repositories the workload's pull Secret grants (decoded from its credential)."""
    secrets = [a for a in answer.get("attachments") or [] if a["kind"] == "Secret"]
    out: list[str] = []
    for s in secrets:
        conf = json.loads(base64.b64decode(s["data"][".dockerconfigjson"]))
        out += conf["auths"][REGISTRY]["username"].split(";")[1:]
    return out


def own_ready_model(status_uri: str | None = None) -> Obj:
    m = hr.model("mine", B)
    dest = own_destination(m)
    m["status"] = {"phase": "Ready", "artifact": {
        "uri": status_uri or f"{dest}@{DIGEST}", "digest": DIGEST, "sizeBytes": 1,
        "mediaType": "application/vnd.oci.image.manifest.v1+json"}}
    return m


def test_a_status_uri_naming_another_repository_never_reaches_a_pull_credential(http):
    """Defence in depth: even a Ready status whose URI names A's repository grants nothing."""
    poisoned = own_ready_model(VICTIM_URI.replace("a" * 64, "b" * 64))
    out = decorator_sync(http, workload({"ai.deckhouse.io/model": "mine"}), poisoned)
    assert granted(out) == [] and VICTIM_REPO not in json.dumps(out)
    assert "ModelNotReady" in out["annotations"]["ai.deckhouse.io/model-delivery-blocked"]
    # The same Model with its own URI resolves, and the credential names its own repository only.
    ok = decorator_sync(http, workload({"ai.deckhouse.io/model": "mine"}), own_ready_model())
    assert granted(ok) == [own_destination(own_ready_model()).split("/", 1)[1]]


def test_forged_resolution_annotation_is_replaced_and_grants_nothing(http):
    forged = json.dumps([{"name": "mine", "kind": "Model", "uri": VICTIM_URI, "digest": VICTIM_URI.split("@")[1],
                          "family": "", "sizeBytes": 1}])
    obj = workload({"ai.deckhouse.io/model": "mine", "ai.deckhouse.io/model-resolution": forged})
    out = decorator_sync(http, obj, own_ready_model())
    assert VICTIM_REPO not in out["annotations"]["ai.deckhouse.io/model-resolution"]
    assert VICTIM_REPO not in granted(out)
    # Whatever the pods are told to pull, the workload's credential gets no access to A's repository.
    user, pw = next(
        (c["username"], c["password"]) for s in out["attachments"]
        for c in json.loads(base64.b64decode(s["data"][".dockerconfigjson"]))["auths"].values())
    assert token_request(http, user, pw, f"repository:{VICTIM_REPO}:pull")[1] == []


def test_a_namespaced_workload_never_resolves_another_namespaces_model(http):
    """Only Models of the workload's own namespace are asked for and accepted."""
    body_obj = workload({"ai.deckhouse.io/model": "secret-model"})
    rules = post(http, "/hooks/workload/customize", {"controller": {}, "object": body_obj, "parent": body_obj})
    assert all(r.get("namespace") in (None, B) for r in rules["relatedResources"])
    victim = copy.deepcopy(VICTIM)
    victim["status"] = {"phase": "Ready", "artifact": {"uri": VICTIM_URI, "digest": VICTIM_URI.split("@")[1]}}
    out = decorator_sync(http, body_obj, victim)  # even if it were sent, it is not B's
    assert granted(out) == [] and "ModelNotFound" in out["annotations"]["ai.deckhouse.io/model-delivery-blocked"]


# -- catalogs ---------------------------------------------------------------------------------


def test_catalog_credential_is_never_copied_into_a_tenant_namespace(http):
    """Finding 2: ``catalog: {name: does-not-exist, sourceName: corp}`` copied the credential."""
    src = {
        "apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "ModelCatalogSource",
        "metadata": {"name": "corp", "uid": hr.uid_for("MCS", "corp"), "generation": 1, "creationTimestamp": hr.T0},
        "spec": {"registry": "registry.corp.example", "repository": "catalog", "tag": "v1",
                 "authSecretRef": {"namespace": "catalog-admin", "name": "corp-pull"}},
        "status": {"phase": "Ready", "catalogRevision": "sha256:" + "1" * 64, "models": [
            {"name": "llama", "reference": "m/llama@sha256:" + "2" * 64, "digest": "sha256:" + "2" * 64}]},
    }
    cred = hr.secret("corp-pull", "catalog-admin", {".dockerconfigjson": credentials.dockerconfigjson(
        "registry.corp.example", "reader", "s3cret-catalog-password")}, "kubernetes.io/dockerconfigjson")
    probe = hr.model("probe", B, source={"catalog": {"name": "does-not-exist", "sourceName": "corp"}})
    real = hr.model("real", B, source={"catalog": {"name": "llama", "sourceName": "corp"}})
    mtypes = ("Job.batch/v1", "ModelCatalogSource.ai.deckhouse.io/v1alpha1")
    seen = []
    for parent in (probe, real):
        first = post(http, "/hooks/model/sync", hr.sync_request(parent, (), [src], related_types=mtypes))
        seen.append(first)
        seen.append(post(http, "/hooks/model/sync",
                         hr.sync_request(hr.next_parent(parent, first), (), [src], related_types=mtypes)))
    stored = [hr.next_parent(p, a) for p, a in ((probe, seen[1]), (real, seen[3]))]
    src_answer = post(http, "/hooks/modelcatalogsource/sync", hr.sync_request(
        src, (), [cred, *stored],
        child_types=("Job.batch/v1", "Secret.v1", "ServiceAccount.v1", "Role.rbac.authorization.k8s.io/v1",
                     "RoleBinding.rbac.authorization.k8s.io/v1"),
        related_types=("Secret.v1", "Model.ai.deckhouse.io/v1alpha1",
                       "ClusterModel.ai.deckhouse.io/v1alpha1")))
    seen.append(src_answer)
    for answer in seen:
        for child in answer.get("children") or []:
            if child["metadata"].get("namespace") != CFG.namespace:
                assert "s3cret-catalog-password" not in base64_decoded_values(child) + json.dumps(child)
                assert not child["metadata"]["name"].startswith("ai-catalog"), child
    assert {c["metadata"]["namespace"] for c in src_answer["children"]} == {CFG.namespace}
    # The real one is imported, in the module namespace, into B's own repository only.
    imports = [c for c in src_answer["children"] if c["kind"] == "Job"
               and c["metadata"]["labels"].get("ai.deckhouse.io/worker") == "catalog-import"]
    assert len(imports) == 1
    args = imports[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--destination") + 1] == own_destination(real)


def base64_decoded_values(obj: Obj) -> str:
    data = obj.get("data") or {}
    return " ".join(base64.b64decode(v).decode(errors="replace") for v in data.values() if isinstance(v, str))


# -- uploads -------------------------------------------------------------------------------


def _upload_route(http, parent: Obj) -> tuple[str, str, str]:
    """(URL path users get, Ingress path regex, token) for ``parent``."""
    kind = "clustermodel" if parent["kind"] == "ClusterModel" else "model"
    a = post(http, f"/hooks/{kind}/sync", hr.sync_request(parent))
    prefix = "ai-clustermodel-upload-" if kind == "clustermodel" else "ai-model-upload-"
    secret = next(c for c in a["children"] if c["kind"] == "Secret" and c["metadata"]["name"].startswith(prefix))
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    ing = next(c for c in a["children"] if c["kind"] == "Ingress")
    kubernetes_validate.validate(ing, "1.33", strict=True)
    path = data["url"].removeprefix(CFG.upload_external_base)
    return path, ing["spec"]["rules"][0]["http"]["paths"][0]["path"], data["token"]


def _nginx_matches(pattern: str, path: str) -> bool:
    """ingress-nginx with rewrite-target renders ``location ~* "^<path>"``: a case-insensitive regex."""
    return re.match("^" + pattern, path, re.IGNORECASE) is not None


def test_upload_paths_never_collide_across_kinds_namespaces_and_names(http):
    """Finding 5: a Model in a namespace called ``cluster`` got a ClusterModel's path, and an
    unescaped ``.`` in a name matched other names."""
    upload = {"upload": {}}
    parents = [
        hr.cluster_model("llama", source=upload),
        hr.model("llama", "cluster", source=upload),
        hr.model("clustermodel", "llama", source=upload),
        hr.model("a.b", B, source=upload),
        hr.model("axb", B, source=upload),
        hr.model("a.b", B, source=upload, uid="another-uid-after-recreate"),
    ]
    routes = [_upload_route(http, p) for p in parents]
    paths = [path for path, _, _ in routes]
    assert len(set(paths)) == len(paths)
    for i, (_, pattern, _) in enumerate(routes):
        for j, path in enumerate(paths):
            assert _nginx_matches(pattern, path) == (i == j), (pattern, path)
            assert not _nginx_matches(pattern, path + "/x") and not _nginx_matches(pattern, path + "x")
    # Tokens are per object and session: B's never opens another's session.
    assert len({token for _, _, token in routes}) == len(routes)


# -- end to end: the review's reproduction against the real hook service and DMCR ------------


def test_e2e_forged_result_gets_no_weights_and_no_other_upload(tmp_path, minilm_dir):
    from devstack import models
    from devstack.stack import LocalModule
    from lib.oci.client import RegistryClient
    from lib.oci.errors import RegistryError

    with LocalModule(tmp_path / "module", backend="kube") as m:
        for ns in (A, B):
            m.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

        def model(name: str, ns: str) -> Obj:
            return {"apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "Model",
                    "metadata": {"name": name, "namespace": ns}, "spec": {"source": {"upload": {}}}}

        m.apply(model("secret-model", A))
        m.apply(model("thief", B))
        assert m.run_until(lambda: m.phase("Model", "secret-model", A) == "WaitForUpload"
                           and m.phase("Model", "thief", B) == "WaitForUpload", timeout=60)

        def session(ns: str, name: str) -> tuple[str, str]:
            obj = m.cluster.get("Model", name, ns)
            secret = m.cluster.get("Secret", obj["status"]["upload"]["secretName"], ns)
            url = base64.b64decode(secret["data"]["url"]).decode()
            assert m.run_until(lambda: m.kubelet.service_url(url) != url, timeout=30)
            return m.kubelet.service_url(url), base64.b64decode(secret["data"]["token"]).decode()

        a_url, a_token = session(A, "secret-model")
        b_url, b_token = session(B, "thief")
        gguf = models.make_gguf(tmp_path / "weights.gguf")
        # B's token on A's upload server: refused before the body is read.
        for _ in range(50):
            try:
                r = requests.put(a_url, data=b"x" * 10, headers={"Authorization": f"Bearer {b_token}"}, timeout=10)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert r.status_code == 401
        # A uploads for real and goes Ready.
        r = requests.put(a_url, data=gguf.read_bytes(), headers={"Authorization": f"Bearer {a_token}"}, timeout=60)
        assert r.status_code in (200, 201), r.text
        assert m.run_until(lambda: m.phase("Model", "secret-model", A) == "Ready", timeout=60)
        victim = m.cluster.get("Model", "secret-model", A)
        victim_uri = victim["status"]["artifact"]["uri"]

        # B forges its worker's result: it patches the result annotation on its own upload Job.
        thief = m.cluster.get("Model", "thief", B)
        job = next(j for j in m.cluster.list("Job", B, {"ai.deckhouse.io/model-uid": thief["metadata"]["uid"]}))
        jname = job["metadata"]["name"]
        forged = json.dumps({"artifact": {
            "uri": victim_uri, "digest": victim_uri.split("@")[1], "sizeBytes": 1,
            "mediaType": "application/vnd.oci.image.manifest.v1+json"}})
        assert m.cluster.patch_metadata("Job", jname, B, annotations={"ai.deckhouse.io/result": forged})
        # The hook read it (the condition names the Job and why) and refused it.
        assert m.run_until(lambda: f"{B}/{jname}: " in json.dumps(m.cluster.get("Model", "thief", B)["status"])
                           or m.phase("Model", "thief", B) == "Ready", timeout=30)
        assert m.phase("Model", "thief", B) != "Ready"
        thief = m.cluster.get("Model", "thief", B)
        assert thief["status"]["phase"] == "WaitForUpload" and "artifact" not in thief["status"], thief["status"]
        assert victim_uri not in json.dumps(thief["status"])

        # B's Deployment naming its Model is held, and no pull Secret grants A's repository.
        m.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "app", "namespace": B, "annotations": {"ai.deckhouse.io/model": "thief"}},
                 "spec": {"selector": {"matchLabels": {"app": "x"}},
                          "template": {"metadata": {"labels": {"app": "x"}},
                                       "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}})
        assert m.run_until(lambda: "ai.deckhouse.io/model-delivery-blocked" in (
            (m.cluster.get("Deployment", "app", B) or {}).get("metadata", {}).get("annotations") or {}), timeout=30)
        for s in m.cluster.list("Secret", B):
            assert victim_uri.split("@")[0].split("/", 1)[1] not in base64_decoded_values(s)
        # With every credential B can read, DMCR refuses A's manifest.
        victim_repo = victim_uri.split("@")[0].split("/", 1)[1]
        tried = 0
        for s in m.cluster.list("Secret", B):
            raw = (s.get("data") or {}).get(".dockerconfigjson")
            if not raw:
                continue
            for auth in json.loads(base64.b64decode(raw))["auths"].values():
                tried += 1
                client = RegistryClient(m.registry.host, username=auth["username"], password=auth["password"],
                                        insecure=True)
                with pytest.raises(RegistryError):
                    client.get_manifest(victim_repo, victim_uri.split("@")[1])
        assert tried >= 1


# -- the upload host admission policy (deploy/upload-ingress/) ---------------------------


def _policy() -> Obj:
    import yaml

    from tests.test_deploy import ROOT

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "upload-ingress" / "policy.yaml").read_text()))
    for d in docs:
        kubernetes_validate.validate(d, "1.33", strict=True)
    return next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")


def _admit(policy: Obj, ingress: Obj, username: str) -> bool:
    """The policy's answer, its CEL evaluated by cel-python (the real API server is the reference)."""
    import celpy

    env = celpy.Environment()
    act = {"object": celpy.json_to_cel(ingress), "request": celpy.json_to_cel({"userInfo": {"username": username}})}

    def run(expr: str) -> bool:
        return bool(env.program(env.compile(expr)).evaluate(act))

    if not all(run(c["expression"]) for c in policy["spec"]["matchConditions"]):
        return True
    return all(run(v["expression"]) for v in policy["spec"]["validations"])


def test_a_tenant_ingress_cannot_claim_the_upload_host(http):
    """An Ingress of B's for the upload host could catch a ClusterModel's upload and its token."""
    policy = _policy()
    mc = "system:serviceaccount:metacontroller:metacontroller"
    cluster_route, _, _ = _upload_route(http, hr.cluster_model("llama", source={"upload": {}}))

    def ingress(host: str | None, path: str = cluster_route) -> Obj:
        rule: Obj = {"http": {"paths": [{"path": path, "pathType": "Prefix",
                                         "backend": {"service": {"name": "x", "port": {"number": 80}}}}]}}
        if host:
            rule["host"] = host
        return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "steal", "namespace": B}, "spec": {"rules": [rule]}}

    assert not _admit(policy, ingress("upload.example.com"), f"system:serviceaccount:{B}:default")
    assert not _admit(policy, ingress("upload.example.com", "/"), "alice")
    assert _admit(policy, ingress("upload.example.com"), mc)  # the module's own upload Ingresses
    assert _admit(policy, ingress("app.example.com"), "alice")  # other hosts are the tenant's business
    assert _admit(policy, ingress(None, "/app"), "alice")
    assert _admit(policy, {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                           "metadata": {"name": "d", "namespace": B}, "spec": {"defaultBackend": {}}}, "alice")


def test_the_threat_table_names_exactly_the_tests_that_exist():
    """docs/security.md's threat table and this suite stay one: every test it names exists, and
    every test of this file is named there."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "security.md").read_text()
    table = doc[doc.index("## Tenancy: the threat model"):]
    table = table[: table.index("\n## ", 5)] if "\n## " in table[5:] else table
    named: set[tuple[str, str]] = set()
    for row in (ln for ln in table.splitlines() if ln.startswith("| ") and ln[2].isdigit()):
        current = ""
        for ref in re.findall(r"`([\w/.]*?)::(\w+)`", row):
            current = ref[0] or current
            named.add((current, ref[1]))
    assert named
    for file, test in named:
        source = (root / "tests" / file).read_text()
        assert f"def {test}(" in source, f"docs/security.md names {file}::{test}, which does not exist"
    mine = set(re.findall(r"^def (test_\w+)\(", Path(__file__).read_text(), re.M))
    mine.discard("test_the_threat_table_names_exactly_the_tests_that_exist")
    assert mine <= {t for f, t in named if f == "test_tenancy.py"}, "tests missing from docs/security.md"


def test_a_tenant_edited_pull_secret_is_not_kept_while_blocked(http):
    """While a workload is blocked, the decorator keeps its attached pull Secret for the old pods.
    The tenant can edit that Secret in its namespace: only a credential this module signed is kept
    (and only its two keys); anything else is dropped, never re-applied by Metacontroller."""
    name = "ai-models-pull-deployment-app"
    mine = own_ready_model()
    ok = decorator_sync(http, workload({"ai.deckhouse.io/model": "mine"}), mine)
    [attached] = ok["attachments"]
    pending = copy.deepcopy(mine)
    pending["status"] = {"phase": "Publishing"}

    def blocked_with(data: dict[str, str]) -> list[Obj]:
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                  "metadata": {"name": name, "namespace": B}, "data": data}
        body = {"controller": {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "DecoratorController",
                               "metadata": {"name": "ai-models-workloads"}},
                "object": workload({"ai.deckhouse.io/model": "mine"}),
                "attachments": {"Secret.v1": {f"{B}/{name}": secret}},
                "related": hr.object_map([pending], ("Model.ai.deckhouse.io/v1alpha1",)), "finalizing": False}
        return post(http, "/hooks/workload/sync", body)["attachments"]

    assert [a["data"] for a in blocked_with({**attached["data"], "extra": "eA=="})] == [attached["data"]]
    forged = credentials.dockerconfigjson(REGISTRY, f"pull;{VICTIM_REPO}", "0" * 64)
    assert blocked_with({".dockerconfigjson": base64.b64encode(forged.encode()).decode()}) == []
    push = credentials.dockerconfigjson(REGISTRY, *credentials.publish_credential(CFG.signing_keys, VICTIM_REPO))
    assert blocked_with({".dockerconfigjson": base64.b64encode(push.encode()).decode()}) == []
    assert blocked_with({".dockerconfigjson": "not base64!"}) == []
