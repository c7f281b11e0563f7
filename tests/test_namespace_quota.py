"""The namespace quota (``AI_MODELS_NAMESPACE_QUOTA_BYTES``): one tenant cannot fill DMCR for everyone.

Checked where the capacity is (``lib/capacity.py``), before any byte moves:
the pure check, the flags and the one RBAC rule the hooks derive from the
Model's own namespace, the worker listing its namespace's Models through the
real API server with that Role, a real publish into a real registry (0 writes
when refused) and an upload answered 507 from its headers.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from devstack.models import make_gguf
from devstack.registry import RegistryServer, free_port
from hooks import model as hooks_model
from hooks import model_children as ch
from hooks import worker_jobs as wj
from hooks.model_parent import parse_parent
from hooks.worker_jobs import EVENTS_RULE, MODELS_LIST_RULE
from jobs import capacity as job_capacity
from jobs import own_job
from lib.api import worker_cli as wc
from lib.api.types import Reason
from lib.capacity import Capacity, InsufficientCapacity, Usage, quota_refusal, read_namespace_usage
from lib.config import Config, ConfigError
from lib.oci.errors import NotFound
from lib.oci.reference import Reference
from lib.publish import publish
from lib.sources.adapter import SourceOptions
from lib.sources.local import open_source as open_local
from tests.support import hookreq as hr
from tests.test_capacity import CFG, TOKEN, USAGE_REF, CountingClient, _head_only_put, _nothing_in, _sha256
from tests.test_own_job import _pod_env
from tests.test_upload_server import serve_in_thread

MiB = 1 << 20
REG = "dmcr.test:5000"


def _model(name: str, size: int | None, namespace: str = "team-a") -> dict:
    status = {} if size is None else {"artifact": {"uri": f"{REG}/ai-models/catalog/namespaced/{namespace}/{name}/u"
                                                   f"@sha256:{'a' * 64}", "sizeBytes": size}}
    return {"metadata": {"name": name, "namespace": namespace}, "status": status}


def _own(name: str, namespace: str = "team-a") -> str:
    return f"{REG}/ai-models/catalog/namespaced/{namespace}/{name}/u"


def test_the_setting_takes_bytes_and_quantities():
    assert Config.from_env({}).namespace_quota_bytes == 0
    assert Config.from_env({"AI_MODELS_NAMESPACE_QUOTA_BYTES": "100Gi"}).namespace_quota_bytes == 100 << 30
    with pytest.raises(ConfigError, match="AI_MODELS_NAMESPACE_QUOTA_BYTES"):
        Config.from_env({"AI_MODELS_NAMESPACE_QUOTA_BYTES": "a lot"})


def test_refused_only_when_the_namespace_share_is_exceeded():
    usage = Usage(40 * MiB)
    assert quota_refusal(10 * MiB, 50 * MiB, "team-a", usage) is None  # exactly full is fine
    message = quota_refusal(10 * MiB + 1, 50 * MiB, "team-a", usage)
    assert message is not None
    for text in ("namespace team-a", f"needs 10.0 MiB ({10 * MiB + 1} bytes)", f"free 10.0 MiB ({10 * MiB} bytes)",
                 f"quota 50.0 MiB ({50 * MiB} bytes)", f"used 40.0 MiB ({40 * MiB} bytes) by its other Models",
                 "AI_MODELS_NAMESPACE_QUOTA_BYTES"):
        assert text in message, (text, message)
    assert quota_refusal(10**15, 50 * MiB, "", usage) is None  # a ClusterModel: no quota
    assert quota_refusal(10**15, 0, "team-a", usage) is None  # 0: no quota
    unknown = Usage(None, problem="cannot list the namespace's Models: Forbidden")
    assert quota_refusal(50 * MiB, 50 * MiB, "team-a", unknown) is None  # never refused on missing data
    assert "used unknown (cannot list the namespace's Models: Forbidden; counted as 0)" in (
        quota_refusal(50 * MiB + 1, 50 * MiB, "team-a", unknown) or "")


def test_usage_is_the_other_models_published_bytes():
    models = [_model("a", 5 * MiB), _model("b", 7 * MiB), _model("pending", None), _model("me", 30 * MiB)]
    assert read_namespace_usage(lambda: models, _own("me")).used == 12 * MiB  # its own artifact is replaced
    assert read_namespace_usage(lambda: models, _own("new")).used == 42 * MiB

    def forbidden() -> list[dict]:
        raise RuntimeError("403 Forbidden")

    failed = read_namespace_usage(forbidden, _own("me"))
    assert failed.used is None and "403 Forbidden" in failed.problem


def test_capacity_and_quota_are_both_checked_capacity_first():
    usage = Usage(40 * MiB)
    both = Capacity(510 * MiB, lambda: Usage(500 * MiB), namespace="team-a", namespace_quota=50 * MiB,
                    read_namespace_usage=lambda: usage)
    both.admit(10 * MiB)
    with pytest.raises(InsufficientCapacity, match="DMCR cannot hold"):
        both.admit(10 * MiB + 1)  # the capacity says no first (500 + 10 MiB + 1 > 510 MiB)
    quota_only = Capacity(0, namespace="team-a", namespace_quota=50 * MiB, read_namespace_usage=lambda: usage)
    with pytest.raises(InsufficientCapacity, match="namespace team-a cannot hold") as e:
        quota_only.admit(20 * MiB)
    assert e.value.reason == Reason.INSUFFICIENT_STORAGE
    assert not Capacity(0, namespace="", namespace_quota=50 * MiB).active


def test_the_worker_reads_its_namespace_fresh_for_every_check():
    listed: list[str] = []
    models = [_model("a", 40 * MiB)]

    def lister(namespace: str) -> list[dict]:
        listed.append(namespace)
        return models

    args = SimpleNamespace(registry_capacity_bytes=None, registry_usage="", namespace_quota_bytes=50 * MiB,
                           quota_namespace="team-a", destination=_own("me"))
    cap = job_capacity.from_args(args, models=lister)  # type: ignore[arg-type]
    assert cap is not None
    cap.admit(10 * MiB)
    models.append(_model("b", 1))  # another Model became Ready meanwhile
    with pytest.raises(InsufficientCapacity):
        cap.admit(10 * MiB)
    assert listed == ["team-a", "team-a"]
    no_quota = SimpleNamespace(**{**vars(args), "namespace_quota_bytes": None})
    assert job_capacity.from_args(no_quota, models=lister) is None  # type: ignore[arg-type]


# -- the hooks: flags from the Model's own namespace ---------------------------------------------


def _argv(answer: dict) -> list[str]:
    [job] = [c for c in answer["children"] if c["kind"] == "Job"]
    return job["spec"]["template"]["spec"]["containers"][0]["args"]


def _worker_role(answer: dict) -> dict:
    [role] = [c for c in answer["children"] if c["kind"] == "Role" and "-upload-reader-" not in c["metadata"]["name"]]
    return role


@pytest.mark.parametrize(("capacity", "quota"), [(0, 0), (0, 50 * MiB), (1 << 40, 50 * MiB)])
def test_hooks_pass_the_quota_with_the_models_namespace(capacity: int, quota: int):
    config = dataclasses.replace(CFG, registry_capacity_bytes=capacity, namespace_quota_bytes=quota)
    for obj, cls in ((hr.model(namespace="team-a", source={"url": "https://huggingface.co/BAAI/bge-m3"}), wc.Publish),
                     (hr.model("up", namespace="team-a", source={"upload": {}}), wc.UploadServer)):
        answer = hooks_model.model_sync(hr.sync_request(obj), config)
        cmd = cls.parse(_argv(answer))
        assert cmd.namespace_quota_bytes == (quota or None)  # type: ignore[attr-defined]
        assert cmd.quota_namespace == ("team-a" if quota else "")  # type: ignore[attr-defined]
        assert cmd.registry_usage == (USAGE_REF if capacity else "")  # type: ignore[attr-defined]
        assert cmd.registry_capacity_bytes == (capacity or None)  # type: ignore[attr-defined]
        # The one extra grant, only with a quota: list Models, in the Model's own namespace.
        role = _worker_role(answer)
        assert role["metadata"]["namespace"] == "team-a"
        assert (MODELS_LIST_RULE in role["rules"]) is bool(quota)
        assert MODELS_LIST_RULE == {"apiGroups": ["ai.deckhouse.io"], "resources": ["models"], "verbs": ["list"]}
    # A ClusterModel is not any namespace's: no quota flags and no list rule, whatever the setting.
    cluster = hr.cluster_model(source={"url": "https://huggingface.co/BAAI/bge-m3"})
    answer = hooks_model.clustermodel_sync(hr.sync_request(cluster), config)
    argv = _argv(answer)
    assert "--namespace-quota-bytes" not in argv and "--quota-namespace" not in argv
    assert MODELS_LIST_RULE not in _worker_role(answer)["rules"]


def test_a_catalog_imports_role_beside_the_model_lists_models_only_with_a_quota():
    m = parse_parent({"parent": hr.model(namespace="team-a")}, CFG, cluster=False)
    for quota, rules in ((0, [EVENTS_RULE]), (MiB, [EVENTS_RULE, MODELS_LIST_RULE])):
        config = dataclasses.replace(CFG, namespace_quota_bytes=quota)
        role, binding = wj.events_rbac(m.owner, "ai-import-worker", config.namespace,
                                       list_models=ch.quota_reads_models(config))
        assert role["metadata"]["namespace"] == "team-a" and role["rules"] == rules
        assert binding["subjects"][0]["namespace"] == CFG.namespace  # the import's worker, in the module namespace


def test_the_quota_namespace_is_the_models_own_whatever_its_labels_say():
    """Tenant-written labels and annotations name another namespace: the flag still names the Model's."""
    config = dataclasses.replace(CFG, namespace_quota_bytes=50 * MiB)
    obj = hr.model(namespace="team-a", source={"url": "https://huggingface.co/BAAI/bge-m3"})
    obj["metadata"]["labels"] = {"ai.deckhouse.io/namespace": "team-b"}
    obj["metadata"]["annotations"] = {"ai.deckhouse.io/quota-namespace": "team-b"}
    cmd = wc.Publish.parse(_argv(hooks_model.model_sync(hr.sync_request(obj), config)))
    assert cmd.quota_namespace == "team-a"


# -- the worker: the real API server, a real publish, a real upload session ------------------------


def test_the_worker_lists_its_own_namespaces_models_with_the_emitted_role(tmp_path, kube, kube_namespace):
    """The Role the hook emits, a token the API server issued for the worker's account, the real RBAC."""
    from devstack.kubestore import KubeStore

    root = Path(__file__).resolve().parents[1]
    kube.kubectl("apply", "--server-side", "--field-manager=ai-models-tests", "--force-conflicts",
                 "-k", str(root / "crds"))
    store = KubeStore(kube.api_client())
    config = dataclasses.replace(Config(), namespace_quota_bytes=MiB)
    m = parse_parent({"parent": hr.model("me", namespace=kube_namespace)}, config, cluster=False)
    job = ch.publish_job(m, config, source="https://huggingface.co/x/y", attempt=1, auth=ch.SourceAuth())
    for obj in [*ch.worker_rbac(m, job["metadata"]["name"], config=config), job]:
        store.create(obj)
    for name in ("a", "b"):
        store.create({"apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "Model",
                      "metadata": {"name": name, "namespace": kube_namespace},
                      "spec": {"source": {"url": f"https://huggingface.co/acme/{name}"}}})
    env = _pod_env(store, tmp_path, job)
    listed = own_job.list_models(kube_namespace, env)
    assert sorted(o["metadata"]["name"] for o in listed) == ["a", "b"]
    with pytest.raises(Exception) as refused:  # another namespace: the Role does not reach it
        own_job.list_models("default", env)
    assert "403" in str(refused.value) or "Forbidden" in str(refused.value)
    # Without a quota the same worker may not list at all (the hook emits no rule).
    plain = parse_parent({"parent": hr.model("plain", namespace=kube_namespace)}, Config(), cluster=False)
    plain_job = ch.publish_job(plain, Config(), source="https://huggingface.co/x/y", attempt=1,
                               auth=ch.SourceAuth())
    for obj in [*ch.worker_rbac(plain, plain_job["metadata"]["name"]), plain_job]:
        store.create(obj)
    (tmp_path / "plain").mkdir()
    plain_env = _pod_env(store, tmp_path / "plain", plain_job)
    with pytest.raises(Exception, match="403|Forbidden"):
        own_job.list_models(kube_namespace, plain_env)


def test_publish_over_the_namespace_quota_writes_nothing(registry: RegistryServer, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_MODELS_CACHE_DIR", str(tmp_path / "digests"))
    gguf = make_gguf(tmp_path / "model" / "model.gguf", tensor_elems=1 << 14)
    size = gguf.stat().st_size
    dest = Reference.parse(f"{registry.host}/quota/gguf-{uuid.uuid4().hex[:8]}")
    others = [_model("other", 1_000_000)]
    args = SimpleNamespace(registry_capacity_bytes=None, registry_usage="", destination=str(dest),
                           namespace_quota_bytes=1_000_000 + size - 1, quota_namespace="team-a")
    cap = job_capacity.from_args(args, models=lambda ns: others)  # type: ignore[arg-type]
    assert cap is not None
    client = CountingClient(registry.host, insecure=True)
    client.writes = []
    with pytest.raises(InsufficientCapacity, match=f"namespace team-a .* needs .* \\({size} bytes\\)"):
        publish(open_local(str(gguf.parent), SourceOptions()), dest, client, admit=cap.admit)
    assert client.writes == []  # bytes pushed: 0
    _nothing_in(client, dest.repository, [_sha256(gguf)])
    others[0] = _model("other", 999_999)  # one byte freed: used + needed == quota
    result = publish(open_local(str(gguf.parent), SourceOptions()), dest, client, admit=cap.admit)
    assert result["artifact"]["digest"] and client.writes[-1] == "manifest"


def test_a_publish_that_a_concurrent_one_pushed_over_the_quota_is_not_tagged(
        registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both checked when the namespace was empty; the other finished first: this one's commit-time
    check reads the namespace again and refuses before the manifest, so nothing is tagged."""
    monkeypatch.setenv("AI_MODELS_CACHE_DIR", str(tmp_path / "digests"))
    gguf = make_gguf(tmp_path / "model" / "model.gguf", tensor_elems=1 << 14)
    size = gguf.stat().st_size
    dest = Reference.parse(f"{registry.host}/quota/race-{uuid.uuid4().hex[:8]}")
    listings = iter([[], [_model("other", size)]])  # at the start; at the commit (the other is Ready)
    args = SimpleNamespace(registry_capacity_bytes=None, registry_usage="", destination=str(dest),
                           namespace_quota_bytes=2 * size - 1, quota_namespace="team-a")
    cap = job_capacity.from_args(args, models=lambda ns: next(listings))  # type: ignore[arg-type]
    assert cap is not None
    client = CountingClient(registry.host, insecure=True)
    client.writes = []
    with pytest.raises(InsufficientCapacity, match="namespace team-a cannot hold"):
        publish(open_local(str(gguf.parent), SourceOptions()), dest, client, admit=cap.admit,
                commit_check=cap.admit_quota)
    assert "blob" in client.writes and "manifest" not in client.writes  # pushed, never tagged
    with pytest.raises(NotFound):
        client.get_manifest(dest.repository, "latest")


def test_the_publish_command_checks_the_quota_again_at_the_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The publish command passes the quota (not the capacity: those bytes are on disk already)
    as the commit check; without a quota there is none."""
    from jobs import publish as publish_job

    seen: dict[str, object] = {}

    def fake_publish(*a: object, **kw: object) -> dict:
        seen.update(kw)
        raise InsufficientCapacity("stop here")

    monkeypatch.setattr(publish_job, "publish", fake_publish)
    monkeypatch.setattr(publish_job.sources, "open_source", lambda s, o: SimpleNamespace(close=lambda: None))
    for quota, expected in ((MiB, "admit_quota"), (0, None)):
        seen.clear()
        argv = wc.Publish(source="/nowhere", destination=f"{REG}/ai-models/x", model_name="x",
                          insecure_registry=True, result_file="/dev/null").argv()
        if quota:
            argv += ["--namespace-quota-bytes", str(quota), "--quota-namespace", "team-a"]
        from jobs.cli import main
        assert main(argv) != 0
        check = seen["commit_check"]
        assert (getattr(check, "__name__", None) if check else None) == expected, check


@pytest.fixture
def quota_upload(registry: RegistryServer, tmp_path: Path) -> Iterator[SimpleNamespace]:
    """An upload session with a 1 MiB namespace quota and no capacity (usage unknown here: 0)."""
    import kubernetes.client  # noqa: F401  the usage reader's import, once per worker: not the answer's time
    port, repo = free_port(), f"quota/upload-{uuid.uuid4().hex[:8]}"
    (tmp_path / "token").write_text(TOKEN)
    argv = ["upload-server", "--destination", f"{registry.host}/{repo}", "--listen", f"127.0.0.1:{port}",
            "--token-file", str(tmp_path / "token"), "--insecure-registry",
            "--result-file", str(tmp_path / "result.json"), "--scratch-dir", str(tmp_path / "scratch"),
            "--registry-usage", USAGE_REF, "--namespace-quota-bytes", str(MiB), "--quota-namespace", "team-a"]
    t, stop, rc = serve_in_thread(argv, port)
    yield SimpleNamespace(port=port, url=f"http://127.0.0.1:{port}/upload", thread=t, rc=rc, repo=repo)
    stop.set()
    t.join(30)


def test_an_upload_over_the_namespace_quota_is_507_from_its_headers(quota_upload: SimpleNamespace,
                                                                    tmp_path: Path) -> None:
    status, body, elapsed = _head_only_put(quota_upload.port, f"Content-Length: {2 * MiB}\r\n")
    assert status == 507 and elapsed < 2, (status, elapsed)
    assert body["error"]["reason"] == "InsufficientStorage"
    message = body["error"]["message"]
    assert "namespace team-a cannot hold" in message and f"quota 1.0 MiB ({MiB} bytes)" in message
    gguf = make_gguf(tmp_path / "fits.gguf")  # a few KiB: within the share
    r = requests.put(quota_upload.url, data=gguf.read_bytes(), headers={"Authorization": f"Bearer {TOKEN}"},
                     timeout=60)
    assert r.status_code == 201, r.text
    quota_upload.thread.join(30)
    assert quota_upload.rc["rc"] == 0
    assert json.loads((tmp_path / "result.json").read_text())["artifact"]["digest"]


def test_a_chunked_upload_over_the_namespace_quota_is_507_and_not_tagged(quota_upload: SimpleNamespace,
                                                                        registry: RegistryServer,
                                                                        tmp_path: Path) -> None:
    """No declared total, so nothing to check up front: the commit-time check refuses it."""
    gguf = make_gguf(tmp_path / "big.gguf", tensor_elems=1 << 19)  # 2 MiB of float32: over 1 MiB
    data = gguf.read_bytes()
    assert len(data) > MiB
    chunks = (data[i:i + 256 * 1024] for i in range(0, len(data), 256 * 1024))  # Transfer-Encoding: chunked
    r = requests.put(quota_upload.url, data=chunks, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert r.status_code == 507, r.text
    assert r.json()["error"]["reason"] == "InsufficientStorage"
    assert "namespace team-a cannot hold" in r.json()["error"]["message"]
    client = CountingClient(registry.host, insecure=True)
    with client, pytest.raises(NotFound):
        client.get_manifest(quota_upload.repo, "latest")
