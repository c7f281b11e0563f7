"""End to end: Models go from YAML to Ready and into a pod's directory for real.

Everything runs on a real control plane (kube-apiserver, etcd, and the real
Job, garbage-collector and namespace controllers; ``devstack/control_plane.py``)
with the real hook service (gunicorn, also called by the API server as the
workload mutating webhook over TLS) and a real DMCR (docker-registry with
token auth against the hook service). ``devstack/metacontroller.py``
plays Metacontroller (writing as its service account), ``devstack/kubelet.py``
binds each Job's Pod to a fake node and runs its commands as local processes.
Only the Hugging Face Hub is a stand-in (``devstack/hf_hub.py``).
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from devstack import models
from devstack.hf_hub import HubStandIn
from devstack.stack import LocalModule
from lib import credentials
from lib.api.naming import model_repository
from lib.oci.client import RegistryClient
from lib.oci.errors import NotFound

pytestmark = pytest.mark.slow  # the whole module on a real control plane (~2 min)
NS = "ai-demo"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, minilm_dir):
    with HubStandIn(tokens={"hf_good"}) as h:
        h.add_repo("sentence-transformers/all-MiniLM-L6-v2", minilm_dir, pipeline_tag="sentence-similarity",
                   library_name="sentence-transformers")
        tiny = models.make_gguf(tmp_path_factory.mktemp("hubfiles") / "tiny-q4.gguf", chat_template="{{ messages }}")
        h.add_repo("acme/private-llm", {"tiny-q4.gguf": tiny, "README.md": b"# tiny\n"}, private=True, granted={"hf_good"},
                   pipeline_tag="text-generation")
        yield h


@pytest.fixture(scope="module")
def module(tmp_path_factory, hub):
    with LocalModule(tmp_path_factory.mktemp("module"), worker_env={"HF_ENDPOINT": hub.endpoint}, backend="kube") as m:
        m.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield m


def model(name: str, source: dict, kind: str = "Model") -> dict:
    md = {"name": name} if kind == "ClusterModel" else {"name": name, "namespace": NS}
    return {"apiVersion": "ai.deckhouse.io/v1alpha1", "kind": kind, "metadata": md, "spec": {"source": source}}


def wait_phase(m: LocalModule, name: str, phases: tuple[str, ...], kind: str = "Model", timeout: float = 120) -> dict:
    ns = "" if kind == "ClusterModel" else NS
    ok = m.run_until(lambda: m.phase(kind, name, ns) in phases, timeout=timeout)
    obj = m.cluster.get(kind, name, ns)
    assert ok, f"{kind} {name} never reached {phases}: {json.dumps((obj or {}).get('status'), indent=1)[:3000]}\n{m.mc.errors[-3:]}"
    return obj


def events_of(m: LocalModule, kind: str, name: str, ns: str) -> list[dict]:
    """The Events about one object, oldest first (what `kubectl describe` lists)."""
    found = [e for e in m.cluster.list("Event", ns or "default")
             if e.get("regarding", {}).get("kind") == kind and e["regarding"].get("name") == name]
    return sorted(found, key=lambda e: (e.get("eventTime") or "", e["metadata"]["creationTimestamp"]))


def dmcr_client(m: LocalModule, repo: str) -> RegistryClient:
    key = (m.workdir / "keys" / "signing.key").read_bytes().strip()
    user, pw = credentials.pull_credential(key, [repo])
    return RegistryClient(m.registry.host, username=user, password=pw, insecure=True)


def test_hugging_face_model_becomes_ready_then_cleanup_removes_it(module):
    m = module
    m.apply(model("minilm", {"url": "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2"}))
    obj = wait_phase(m, "minilm", ("Ready", "Failed"))
    st = obj["status"]
    assert st["phase"] == "Ready", st
    assert st["resolved"]["format"] == "Safetensors"
    assert "Embeddings" in st["resolved"]["supportedEndpointTypes"]
    assert st["source"]["resolvedType"] == "HuggingFace" and len(st["source"]["resolvedRevision"]) == 40
    assert st["artifact"]["digest"].startswith("sha256:")
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True"
    repo = model_repository(namespace=NS, name="minilm", uid=obj["metadata"]["uid"])
    client = dmcr_client(m, repo)
    assert client.get_manifest(repo, st["artifact"]["digest"]).digest == st["artifact"]["digest"]

    # The story of the publish, as `kubectl describe model` shows it (events.k8s.io/v1, in order).
    story = events_of(m, "Model", "minilm", NS)
    assert [e["reason"] for e in story] == ["PublishStarted", "Published"], story
    assert "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2" in story[0]["note"]
    assert f"@{st['artifact']['digest']}" in story[1]["note"] and "MiB/s" in story[1]["note"]
    assert all(e["type"] == "Normal" and e["reportingController"] == "ai.deckhouse.io/worker" for e in story)
    # The final numbers are on the Job too (its result annotation).
    pub = [j for j in m.cluster.list("Job", NS) if j["metadata"]["name"].startswith("ai-model-publish-minilm")]
    numbers = json.loads(pub[0]["metadata"]["annotations"]["ai.deckhouse.io/result"])["stats"]
    assert numbers["bytes"] == st["artifact"]["sizeBytes"] and numbers["seconds"] > 0 and numbers["mibPerSecond"] > 0

    # Ready survives the Job and its Pod being garbage-collected.
    for job in m.cluster.list("Job", NS):
        if job["metadata"]["name"].startswith("ai-model-publish-minilm"):
            m.cluster.delete("Job", job["metadata"]["name"], NS)
    m.run_until(lambda: False, timeout=1.5)
    assert m.phase("Model", "minilm", NS) == "Ready"

    # Deletion: Deleting, the cleanup Job runs, the manifest is gone, the object goes.
    m.cluster.delete("Model", "minilm", NS)
    assert m.run_until(lambda: m.model("minilm", NS) is None, timeout=120), m.model("minilm", NS)
    with pytest.raises(NotFound):
        client.get_manifest(repo, st["artifact"]["digest"])
    after = [e["reason"] for e in events_of(m, "Model", "minilm", NS)]
    assert after[-2:] == ["CleanupStarted", "ArtifactDeleted"], after


def test_private_repo_needs_the_secret_and_recovers_when_it_appears(module):
    m = module
    m.apply(model("private-llm", {"url": "https://huggingface.co/acme/private-llm",
                                  "authSecretRef": {"name": "hf-private-token"}}))
    obj = wait_phase(m, "private-llm", ("Failed",), timeout=30)
    reasons = {c["reason"] for c in obj["status"]["conditions"]}
    assert "AuthSecretMissing" in reasons
    assert not [j for j in m.cluster.list("Job", NS) if "private-llm" in j["metadata"]["name"]]
    m.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-private-token", "namespace": NS},
             "type": "Opaque", "data": {"HF_TOKEN": base64.b64encode(b"hf_good").decode()}})
    # The Secret's event wakes the Model (a related object); the first answer may still be the old one.
    assert m.run_until(lambda: m.phase("Model", "private-llm", NS) != "Failed" or "AuthSecretMissing" not in json.dumps(
        m.model("private-llm", NS)["status"]), timeout=60)
    obj = wait_phase(m, "private-llm", ("Ready", "Failed"))
    assert obj["status"]["phase"] == "Ready", obj["status"]
    assert obj["status"]["resolved"]["format"] == "GGUF"
    assert "hf_good" not in json.dumps(obj)


def test_upload_with_the_user_guide_curl_then_deployment_gets_the_files(module, tmp_path):
    m = module
    m.apply(model("uploaded-model", {"upload": {}}))
    obj = wait_phase(m, "uploaded-model", ("WaitForUpload",))
    secret_name = obj["status"]["upload"]["secretName"]
    secret = m.cluster.get("Secret", secret_name, NS)
    url = base64.b64decode(secret["data"]["url"]).decode()
    token = base64.b64decode(secret["data"]["token"]).decode()
    # The upload server runs as the Job's process; wait until its Service has a local port.
    assert m.run_until(lambda: m.kubelet.service_url(url) != url, timeout=30)
    local_url = m.kubelet.service_url(url)
    gguf = models.make_gguf(tmp_path / "model.gguf", chat_template="{{ messages }}")
    import time

    for _ in range(50):  # the server may still be binding
        p = subprocess.run(["curl", "-fS", "--progress-bar", "-H", f"Authorization: Bearer {token}",
                            "-T", str(gguf), local_url], capture_output=True, text=True)
        if p.returncode != 7:
            break
        time.sleep(0.2)
    assert p.returncode == 0, p.stderr
    obj = wait_phase(m, "uploaded-model", ("Ready", "Failed"))
    assert obj["status"]["phase"] == "Ready", obj["status"]
    assert obj["status"]["source"]["resolvedType"] == "Upload"
    assert token not in json.dumps(obj)
    assert [e["reason"] for e in events_of(m, "Model", "uploaded-model", NS)] == [
        "UploadWaiting", "UploadReceiving", "Published"]

    # Attach it to a Deployment: gated until resolved, then the init container materializes it.
    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "embedder", "namespace": NS, "annotations": {"ai.deckhouse.io/model": "uploaded-model"}},
        "spec": {"selector": {"matchLabels": {"app": "embedder"}},
                 "template": {"metadata": {"labels": {"app": "embedder"}},
                              "spec": {"containers": [{"name": "app", "image": "registry.example.com/embedder:latest"}]}}},
    }
    # An administrator lets the namespace's pods record Events (docs/observability.md): then the
    # materialize step tells `kubectl describe pod` what it fetched.
    m.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "materialize-events", "namespace": NS},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "ai-models:worker-events"},
             "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                           "name": f"system:serviceaccounts:{NS}"}]})
    m.apply(dep)
    assert m.run_until(lambda: not m.run_workload_pod("Deployment", "embedder", NS)["gated"], timeout=30)
    pod = m.run_workload_pod("Deployment", "embedder", NS)
    assert pod["ok"], pod.get("status")
    mounts, env = pod["app"]
    assert env["AI_MODELS_MODELS_DIR"] == "/data/modelcache/models"
    descriptors = json.loads(env["AI_MODELS_MODELS"])
    assert [d["name"] for d in descriptors] == ["uploaded-model"]
    assert descriptors[0]["path"] == "/data/modelcache/models/uploaded-model"
    assert descriptors[0]["digest"] == obj["status"]["artifact"]["digest"]
    local = next(Path(v) for k, v in mounts.items() if "/data/modelcache/models".startswith(k) or k.startswith("/data/modelcache/models"))
    files = [p for p in local.rglob("*.gguf")]
    assert files and files[0].read_bytes() == gguf.read_bytes()
    # (The gate probe above may have run a pod of the same name already: one Event per run.)
    story = events_of(m, "Pod", pod["pod"]["metadata"]["name"], NS)
    assert story and {e["reason"] for e in story} == {"ModelMaterialized"}, story
    assert obj["status"]["artifact"]["digest"] in story[0]["note"] and "MiB fetched from DMCR" in story[0]["note"]


def test_ollama_model_becomes_ready(module, registry, tmp_path):
    """The Ollama library's shape, served by a real registry named by OLLAMA_REGISTRY."""
    from devstack.ollama_registry import push_ollama_model

    m = module
    gguf = models.make_gguf(tmp_path / "qwen.gguf", arch="qwen3", chat_template="{{ .Tools }}")
    push_ollama_model(registry.url, "qwen-e2e", "0.6b", layers=[("model", gguf), ("template", b"{{ .Prompt }}"),
                                                                  ("license", b"Apache-2.0")])
    m.kubelet.extra_env["OLLAMA_REGISTRY"] = registry.url
    m.apply(model("qwen-gguf", {"url": "https://ollama.com/library/qwen-e2e:0.6b"}, kind="ClusterModel"))
    obj = wait_phase(m, "qwen-gguf", ("Ready", "Failed"), kind="ClusterModel")
    st = obj["status"]
    assert st["phase"] == "Ready", st
    assert st["resolved"]["format"] == "GGUF" and st["resolved"]["architecture"] == "qwen3"
    assert st["source"]["resolvedType"] == "Ollama"
    # ClusterModel children live in the module namespace.
    assert [j for j in m.cluster.list("Job", "d8-ai-models") if "qwen-gguf" in j["metadata"]["name"]]
    # Its Events are in `default`, where the API server keeps a cluster-scoped object's.
    assert [e["reason"] for e in events_of(m, "ClusterModel", "qwen-gguf", "")] == ["PublishStarted", "Published"]


def test_registry_restart_mid_publish_still_ends_ready(module, hub, tmp_path):
    """DMCR goes away while a publish runs; the Model still ends Ready."""
    import threading
    import time

    m = module
    big = models.make_large_gguf(tmp_path / "big.gguf", 96 << 20)
    hub.add_repo("acme/big", {"big.gguf": big})
    hub.stall("big.gguf", after_bytes=8 << 20, seconds=1.0)  # make sure the restart lands mid-file
    m.apply(model("big", {"url": "https://huggingface.co/acme/big"}))

    seen: dict[str, bool] = {}

    def restart_when_publishing() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if m.phase("Model", "big", NS) == "Publishing":
                time.sleep(0.5)
                jobs = [j for j in m.cluster.list("Job", NS) if j["metadata"]["name"].startswith("ai-model-publish-big")]
                seen["worker_running"] = bool(jobs) and not any((j.get("status") or {}).get("succeeded") for j in jobs)
                m.registry.kill()
                time.sleep(1.0)
                m.registry.start()
                return
            time.sleep(0.05)

    t = threading.Thread(target=restart_when_publishing)
    t.start()
    obj = wait_phase(m, "big", ("Ready",), timeout=180)
    t.join()
    assert seen.get("worker_running"), "the registry restart must land while the worker publishes"
    assert obj["status"]["artifact"]["sizeBytes"] >= big.stat().st_size


def test_catalog_model_imports_the_frozen_digest(module, registry, tmp_path):
    """An administrator's catalog (another registry), a ModelCatalogSource, a Model by name → Ready."""
    import sys

    from lib.oci.reference import Reference
    from lib.publish import publish
    from lib.sources import local

    m = module
    upstream = RegistryClient(registry.host, insecure=True)
    gguf = models.make_gguf(tmp_path / "qwen3-8b" / "qwen3-8b.gguf", arch="qwen3")
    published = publish(local.snapshot(str(gguf.parent)), Reference.parse(f"{registry.host}/catalog/qwen3-8b"), upstream)
    remote = published["artifact"]["digest"]
    p = subprocess.run(
        [sys.executable, "-m", "jobs", "catalog-export", "--destination", f"{registry.host}/catalog/index:v1",
         "--model", f"qwen3-8b={registry.host}/catalog/qwen3-8b@{remote}", "--insecure-registry",
         "--result-file", str(tmp_path / "export.json")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    assert p.returncode == 0, p.stderr
    m.apply({"apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "ModelCatalogSource", "metadata": {"name": "dmz"},
             "spec": {"registry": registry.host, "repository": "catalog/index", "tag": "v1", "insecure": True,
                      "refreshIntervalSeconds": 3600}})
    assert m.run_until(lambda: m.phase("ModelCatalogSource", "dmz") in ("Ready", "Failed"), timeout=60)
    src = m.cluster.get("ModelCatalogSource", "dmz")
    assert src["status"]["phase"] == "Ready", src["status"]
    m.apply(model("qwen3-8b", {"catalog": {"name": "qwen3-8b"}}))
    # The import runs under the source, in the module namespace; nothing of it in the tenant's.
    uid = m.cluster.get("Model", "qwen3-8b", NS)["metadata"]["uid"]
    assert m.run_until(
        lambda: m.cluster.list("Job", "d8-ai-models", {"ai.deckhouse.io/model-uid": uid}), timeout=60)
    assert not m.cluster.list("Job", NS, {"ai.deckhouse.io/model-uid": uid})
    obj = wait_phase(m, "qwen3-8b", ("Ready", "Failed"))
    st = obj["status"]
    assert st["phase"] == "Ready", st
    assert st["source"]["catalog"]["sourceName"] == "dmz"
    assert st["source"]["catalog"]["remoteDigest"] == remote
    assert st["source"]["catalog"]["catalogRevision"] == src["status"]["catalogRevision"]
    # The local copy is the same artifact, byte for byte.
    assert st["artifact"]["digest"] == remote
    # Ready: the source stopped running the import, and no catalog object was ever in the tenant's namespace.
    assert m.run_until(
        lambda: not m.cluster.list("Job", "d8-ai-models", {"ai.deckhouse.io/model-uid": uid}), timeout=30)
    assert not [s for s in m.cluster.list("Secret", NS) if s["metadata"]["name"].startswith("ai-catalog")]
    # The import ran in the module namespace; its Events are beside the Model all the same.
    assert [e["reason"] for e in events_of(m, "Model", "qwen3-8b", NS)] == ["PublishStarted", "Imported"]
    assert [e["reason"] for e in events_of(m, "ModelCatalogSource", "dmz", "")][:2] == [
        "CatalogProbeStarted", "CatalogProbed"]


def test_an_expired_upload_session_is_replaced_by_a_fresh_one(tmp_path, hub):
    """The upload server exits at expiresAt; the Model offers a new session with a new token."""

    with LocalModule(tmp_path / "m", hook_env={"AI_MODELS_UPLOAD_TTL_SECONDS": "4"}, backend="kube") as m:
        m.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        m.apply(model("late", {"upload": {}}))
        first = wait_phase(m, "late", ("WaitForUpload",), timeout=30)
        s0 = first["status"]["upload"]
        token0 = base64.b64decode(m.cluster.get("Secret", s0["secretName"], NS)["data"]["token"]).decode()
        assert m.run_until(
            lambda: (m.model("late", NS)["status"].get("upload") or {}).get("session", 0) >= 1, timeout=60
        ), m.model("late", NS)["status"]
        obj = m.model("late", NS)
        s1 = obj["status"]["upload"]
        assert obj["status"]["phase"] == "WaitForUpload"
        assert s1["secretName"] != s0["secretName"] and s1["expiresAt"] > s0["expiresAt"]
        token1 = base64.b64decode(m.cluster.get("Secret", s1["secretName"], NS)["data"]["token"]).decode()
        assert token1 != token0
        # The new session takes an upload with the new token.
        secret = m.cluster.get("Secret", s1["secretName"], NS)
        url = m.kubelet.service_url(base64.b64decode(secret["data"]["url"]).decode())
        gguf = models.make_gguf(tmp_path / "late.gguf")
        for _ in range(50):
            p = subprocess.run(["curl", "-fS", "-s", "-H", f"Authorization: Bearer {token1}", "-T", str(gguf), url],
                               capture_output=True, text=True)
            if p.returncode not in (6, 7):  # 6: no local port behind the Service yet; 7: not listening yet
                break
            m.run_until(lambda: False, timeout=0.2)  # the kubelet starts the new session's pod
            url = m.kubelet.service_url(base64.b64decode(secret["data"]["url"]).decode())
        assert p.returncode == 0, p.stderr
        assert wait_phase(m, "late", ("Ready", "Failed"))["status"]["phase"] == "Ready"


def test_adding_a_model_to_a_workload_gates_only_until_it_is_resolved(module):
    """ClusterModel-only, then a Model added: one DecoratorController (selected by the consumer label)
    resolves both; the new template waits for that resolution and is never gated again after it."""
    m = module
    assert m.phase("ClusterModel", "qwen-gguf") == "Ready" and m.phase("Model", "private-llm", NS) == "Ready"
    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "handover", "namespace": NS, "annotations": {"ai.deckhouse.io/clustermodel": "qwen-gguf"}},
        "spec": {"selector": {"matchLabels": {"app": "handover"}},
                 "template": {"metadata": {"labels": {"app": "handover"}},
                              "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}}},
    }
    m.apply(dep)
    assert m.run_until(lambda: not m.run_workload_pod("Deployment", "handover", NS)["gated"], timeout=30)
    current = m.cluster.get("Deployment", "handover", NS)
    current["metadata"]["annotations"]["ai.deckhouse.io/model"] = "private-llm"
    current.pop("status", None)
    m.apply(current)
    # The user's write names a model the resolution annotation does not cover yet: the webhook, a
    # pure function of the object, gates that new template until the decorator's next sync (the
    # rollout waits; old pods keep running). What must not happen is a gate after that.
    gates: list[bool] = []

    def template_gated() -> bool:
        w = m.cluster.get("Deployment", "handover", NS)
        return bool(w["spec"]["template"]["spec"].get("schedulingGates"))

    def resolved_both() -> bool:
        gates.append(template_gated())
        ann = m.cluster.get("Deployment", "handover", NS)["metadata"].get("annotations") or {}
        return not gates[-1] and "private-llm" in json.dumps(ann.get("ai.deckhouse.io/model-resolution", ""))

    assert m.run_until(resolved_both, timeout=60), gates
    m.run_until(lambda: gates.append(template_gated()) and False, timeout=5)  # later syncs settle
    first_ungated = gates.index(False)
    assert not any(gates[first_ungated:]), f"the pods were gated again after the resolution: {gates}"
    pod = m.run_workload_pod("Deployment", "handover", NS)
    assert not pod["gated"] and pod["ok"], pod.get("status")
    names = [d["name"] for d in json.loads(pod["app"][1].get("AI_MODELS_MODELS", "[]"))]
    assert sorted(names) == ["private-llm", "qwen-gguf"]


def test_deleting_a_namespace_with_published_models_and_a_workload_reclaims_everything(module, hub, tmp_path):
    """Two Ready Models and an annotated Deployment in a namespace that is deleted: the real namespace
    controller empties it, each Model's finalize completes without creating anything there
    (NamespaceLifecycle refuses creates in a terminating namespace), and the DMCR sweep plus GC
    reclaim the artifacts, blobs included (docs/dmcr.md, "Sweep")."""
    import os
    import sys

    m = module
    gone = "ai-gone"
    import secrets

    for name, arch in (("gone-a", "llama"), ("gone-b", "qwen3")):
        # Unique bytes: a blob another test's model shares must (and would) survive GC.
        tiny = models.make_gguf(tmp_path / f"{name}.gguf", arch=arch, name=f"{name}-{secrets.token_hex(8)}")
        hub.add_repo(f"acme/{name}", {f"{name}.gguf": tiny})
    m.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": gone}})
    for name in ("gone-a", "gone-b"):
        m.apply({"apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "Model", "metadata": {"name": name, "namespace": gone},
                 "spec": {"source": {"url": f"https://huggingface.co/acme/{name}"}}})
    assert m.run_until(lambda: all(m.phase("Model", n, gone) in ("Ready", "Failed") for n in ("gone-a", "gone-b")),
                       timeout=180)
    artifacts = {}
    for name in ("gone-a", "gone-b"):
        obj = m.model(name, gone)
        assert obj["status"]["phase"] == "Ready", obj["status"]
        repo = model_repository(namespace=gone, name=name, uid=obj["metadata"]["uid"])
        artifacts[repo] = obj["status"]["artifact"]["digest"]
    layers = {repo: [d["digest"] for d in json.loads(dmcr_client(m, repo).get_manifest(repo, digest).body)["layers"]]
              for repo, digest in artifacts.items()}
    m.apply({"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "app", "namespace": gone, "annotations": {"ai.deckhouse.io/model": "gone-a,gone-b"}},
             "spec": {"selector": {"matchLabels": {"app": "x"}},
                      "template": {"metadata": {"labels": {"app": "x"}},
                                   "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}})
    assert m.run_until(lambda: "ai.deckhouse.io/model-resolution" in (
        ((m.cluster.get("Deployment", "app", gone) or {}).get("metadata") or {}).get("annotations") or {}), timeout=60)

    storage = Path(m.registry.config()["storage"]["filesystem"]["rootdirectory"])

    def blob_files() -> list[Path]:
        return [storage / "docker/registry/v2/blobs" / d.split(":")[0] / d.split(":")[1][:2] / d.split(":")[1]
                for digests in layers.values() for d in digests]

    assert blob_files() and all(p.exists() for p in blob_files())  # where the registry keeps them

    m.cluster.delete("Namespace", gone)
    assert m.run_until(lambda: m.cluster.get("Namespace", gone) is None, timeout=120), [
        (m.model(n, gone) or {}).get("status") for n in ("gone-a", "gone-b")]

    # The sweep (as its CronJob runs it) deletes the orphaned manifests; GC frees their blobs.
    env = {**os.environ, "AI_MODELS_SIGNING_KEY_FILE": str(m.workdir / "keys" / "signing.key")}
    root = Path(__file__).resolve().parent.parent

    def job(*argv: str) -> dict:
        result = tmp_path / "result.json"
        p = subprocess.run([sys.executable, "-m", "jobs", *argv, "--result-file", str(result)],
                           capture_output=True, text=True, cwd=root, env=env, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        return json.loads(result.read_text())

    swept = job("sweep", "--registry", m.registry.host, "--insecure-registry", "--kubeconfig", str(m.plane.kubeconfig))
    assert swept["sweep"]["deleted"] >= 2, swept
    for repo, digest in artifacts.items():
        with pytest.raises(NotFound):
            dmcr_client(m, repo).get_manifest(repo, digest)
    job("gc", "--config", str(m.registry.workdir / "config.yml"), "--window", "")
    assert not [p for p in blob_files() if p.exists()]


def test_uninstalling_the_module_leaves_no_workload_undeletable(module):
    """Metacontroller's DecoratorController objects go away (kubectl delete -k deploy/): a workload that
    named models must still be deletable. It carries no finalizer of ours, so the real API server
    deletes it at once, with nothing left running to remove one."""
    m = module
    assert m.phase("Model", "private-llm", NS) == "Ready"
    m.apply({"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "outlives", "namespace": NS, "annotations": {"ai.deckhouse.io/model": "private-llm"}},
             "spec": {"selector": {"matchLabels": {"app": "outlives"}},
                      "template": {"metadata": {"labels": {"app": "outlives"}},
                                   "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}})
    assert m.run_until(lambda: "ai.deckhouse.io/model-resolution" in (
        ((m.cluster.get("Deployment", "outlives", NS) or {}).get("metadata") or {}).get("annotations") or {}),
        timeout=60)
    assert not m.cluster.get("Deployment", "outlives", NS)["metadata"].get("finalizers")
    kept = m.mc.controllers
    m.mc.controllers = [c for c in kept if c["kind"] != "DecoratorController"]  # uninstalled
    try:
        m.cluster.delete("Deployment", "outlives", NS)
        assert m.run_until(lambda: m.cluster.get("Deployment", "outlives", NS) is None, timeout=30)
    finally:
        m.mc.controllers = kept


def test_no_event_carries_a_secret(module):
    """Every Event the workers recorded in this module's run: no token, password or credential in any."""
    m = module
    recorded = [e for e in m.cluster.list("Event") if e.get("reportingController") == "ai.deckhouse.io/worker"]
    assert len(recorded) >= 6, [e["reason"] for e in recorded]
    secrets_seen = {"hf_good"}
    for ns in (NS, "d8-ai-models"):
        for sec in m.cluster.list("Secret", ns):
            for value in (sec.get("data") or {}).values():
                raw = base64.b64decode(value).decode(errors="replace")
                secrets_seen.add(raw)
                try:  # the registry credentials inside a dockerconfigjson
                    for auth in json.loads(raw).get("auths", {}).values():
                        secrets_seen.update(str(v) for v in auth.values())
                        if "auth" in auth:
                            secrets_seen.update(base64.b64decode(auth["auth"]).decode().split(":", 1))
                except (ValueError, AttributeError):
                    pass
    secrets_seen = {s for s in secrets_seen if len(s) >= 8}
    for e in recorded:
        text = json.dumps(e)
        leaked = [s[:6] + "…" for s in secrets_seen if s in text]
        assert not leaked, (e["reason"], leaked)
