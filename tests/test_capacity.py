"""DMCR's capacity (issue 19 item 4): a model that cannot fit is refused before any byte moves.

The setting (``AI_MODELS_REGISTRY_CAPACITY_BYTES``) reaches the worker as
``--registry-capacity-bytes``; the usage is the sweep's ConfigMap
``ai-models-dmcr-usage``. Here: the check itself (pure), the real publish
command line against a real registry (the real MiniLM snapshot, and a GGUF
with a fake usage getter), the upload server answering 507 from the headers,
the sweep writing the usage, the hooks passing the flags exactly when
configured, and the Hugging Face and Ollama sources knowing a model's size
before any of its bytes is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from kubernetes.client.exceptions import ApiException

from devstack.hf_hub import HubStandIn
from devstack.models import make_gguf
from devstack.ollama_registry import BlobRedirector, push_ollama_model
from devstack.registry import RegistryServer, free_port
from hooks import model as hooks_model
from jobs import capacity as job_capacity
from jobs import cli as jobs_cli
from jobs import publish as publish_cmd
from jobs.sweep import sweep, write_usage_config_map
from lib.api import worker_cli as wc
from lib.api.types import Reason
from lib.capacity import (
    USAGE_CONFIGMAP,
    Capacity,
    InsufficientCapacity,
    Usage,
    parse_quantity,
    refusal,
    total_used,
)
from lib.config import Config, ConfigError
from lib.oci.client import RegistryClient
from lib.oci.errors import NotFound
from lib.oci.reference import Reference
from lib.publish import publish
from lib.retry import RetryPolicy
from lib.sources.adapter import SourceOptions
from lib.sources.http import HttpPolicy
from lib.sources.huggingface import HuggingFaceSource
from lib.sources.local import open_source as open_local
from lib.sources.ollama import OllamaSource
from lib.sources.urls import parse_source_url
from tests.support import hookreq as hr
from tests.test_upload_server import serve_in_thread

MiB = 1 << 20
USAGE_REF = f"d8-ai-models/{USAGE_CONFIGMAP}"


# -- the check (pure) ---------------------------------------------------------------------------


def test_capacity_setting_takes_bytes_and_kubernetes_quantities():
    assert parse_quantity("1099511627776") == 1 << 40
    assert parse_quantity("500Gi") == 500 << 30 and parse_quantity("2T") == 2 * 10**12
    assert parse_quantity("1.5Ki") == 1536 and parse_quantity(" 7 ") == 7
    for bad in ("", "-1", "10GB", "Gi", "1e9", "ten"):
        with pytest.raises(ValueError):
            parse_quantity(bad)
    assert Config.from_env({}).registry_capacity_bytes == 0  # unset: no check
    assert Config.from_env({"AI_MODELS_REGISTRY_CAPACITY_BYTES": "500Gi"}).registry_capacity_bytes == 500 << 30
    with pytest.raises(ConfigError, match="AI_MODELS_REGISTRY_CAPACITY_BYTES"):
        Config.from_env({"AI_MODELS_REGISTRY_CAPACITY_BYTES": "lots"})


def test_refused_only_when_used_plus_needed_exceeds_capacity():
    usage = Usage(60 * MiB, "2026-01-01T00:00:00Z")
    assert refusal(40 * MiB, 100 * MiB, usage) is None  # exactly full is fine
    message = refusal(40 * MiB + 1, 100 * MiB, usage)
    assert message is not None
    for number in (f"({40 * MiB + 1} bytes)", "40.0 MiB", f"({40 * MiB} bytes)", f"({100 * MiB} bytes)",
                   "100.0 MiB", f"used 60.0 MiB ({60 * MiB} bytes), recorded 2026-01-01T00:00:00Z"):
        assert number in message, (number, message)
    assert "free 40.0 MiB" in message and "AI_MODELS_REGISTRY_CAPACITY_BYTES" in message
    assert refusal(10**15, 0, usage) is None  # 0: no check
    # Usage over the capacity (the capacity was lowered): free is 0, nothing new fits.
    assert "free 0 B (0 bytes)" in (refusal(1, 10, Usage(20)) or "")


def test_usage_from_a_fake_api_and_unknown_usage_counts_as_zero():
    data = {"usedBytes": str(70 * MiB), "updatedAt": "2026-02-03T04:05:06Z"}
    calls: list[tuple[str, str]] = []

    def get(namespace: str, name: str) -> dict[str, str] | None:
        calls.append((namespace, name))
        return data

    args = SimpleNamespace(registry_capacity_bytes=100 * MiB, registry_usage=USAGE_REF)
    cap = job_capacity.from_args(args, get)  # type: ignore[arg-type]
    assert cap is not None
    cap.admit(30 * MiB)  # 70 + 30 = 100: fits
    with pytest.raises(InsufficientCapacity) as e:
        cap.admit(30 * MiB + 1)
    assert e.value.reason == Reason.INSUFFICIENT_STORAGE and "recorded 2026-02-03T04:05:06Z" in e.value.message
    assert calls == [("d8-ai-models", USAGE_CONFIGMAP)] * 2  # read each time: fresh numbers per upload

    # Missing ConfigMap, unreadable one, garbage: used = 0, and the message says it is unknown.
    for getter, why in [(lambda ns, n: None, "not found"), (lambda ns, n: {"usedBytes": "x"}, "no valid"),
                        (_forbidden, "cannot read ConfigMap")]:
        cap = job_capacity.from_args(args, getter)  # type: ignore[arg-type]
        assert cap is not None
        cap.admit(100 * MiB)  # never refused on missing data
        with pytest.raises(InsufficientCapacity, match=f"used unknown \\(.*{why}.*counted as 0\\)"):
            cap.admit(100 * MiB + 1)
    assert job_capacity.from_args(SimpleNamespace(registry_capacity_bytes=None, registry_usage="")) is None
    assert job_capacity.from_args(SimpleNamespace(registry_capacity_bytes=0, registry_usage=USAGE_REF)) is None


def _forbidden(namespace: str, name: str) -> dict[str, str]:
    raise ApiException(status=403, reason="Forbidden")


# -- publish: the real command line, a real registry --------------------------------------------


def _publish_args(source: Path, registry: RegistryServer, repo: str, result: Path, *extra: str) -> Any:
    argv = ["publish", "--source", str(source), "--destination", f"{registry.host}/{repo}",
            "--insecure-registry", "--result-file", str(result), *extra]
    return jobs_cli.parser().parse_args(argv)


def _nothing_in(client: RegistryClient, repo: str, digests: list[str]) -> None:
    with pytest.raises(NotFound):
        client.get_manifest(repo, "latest")
    for digest in digests:
        assert client.blob_exists(repo, digest) is None, digest


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_publish_of_minilm_over_the_capacity_is_refused_before_any_byte(
    minilm_dir: Path, registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AI_MODELS_CACHE_DIR", str(tmp_path / "digests"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # no API: usage unknown, counted as 0
    client = RegistryClient(registry.host, insecure=True)
    small, big = f"capacity/small-{uuid.uuid4().hex[:8]}", f"capacity/big-{uuid.uuid4().hex[:8]}"

    refused = tmp_path / "refused.json"
    t0 = time.monotonic()
    rc = publish_cmd.run(_publish_args(minilm_dir, registry, small, refused,
                                       "--registry-capacity-bytes", str(10 * MiB), "--registry-usage", USAGE_REF))
    seconds = time.monotonic() - t0
    assert rc == 1  # transient: the hook retries with backoff, and space may be freed meanwhile
    error = json.loads(refused.read_text())["error"]
    assert error["reason"] == "InsufficientStorage"
    _nothing_in(client, small, [_sha256(minilm_dir / "model.safetensors"), _sha256(minilm_dir / "config.json")])
    assert seconds < 5, seconds  # no 87 MiB moved

    ok = tmp_path / "ok.json"
    rc = publish_cmd.run(_publish_args(minilm_dir, registry, big, ok,
                                       "--registry-capacity-bytes", str(1 << 30),
                                       "--registry-usage", USAGE_REF))
    assert rc == 0, ok.read_text()
    result = json.loads(ok.read_text())
    manifest = json.loads(client.get_manifest(big, result["artifact"]["digest"]).body)
    needed = sum(layer["size"] for layer in manifest["layers"])
    assert result["artifact"]["sizeBytes"] == needed + manifest["config"]["size"]
    # The message gives the numbers: what the model needs, the capacity, the usage, what is free.
    message = error["message"]
    for number in (f"needs 87.4 MiB ({needed} bytes)", f"free 10.0 MiB ({10 * MiB} bytes)",
                   f"capacity 10.0 MiB ({10 * MiB} bytes)", "used unknown (", "counted as 0"):
        assert number in message, (number, message)


class CountingClient(RegistryClient):
    """The real client, counting every write: a refusal must come before the first."""

    writes: list[str]

    def push_blob(self, repo: str, *args: Any, **kwargs: Any) -> Any:
        self.writes.append("blob")
        return super().push_blob(repo, *args, **kwargs)

    def push_bytes(self, repo: str, data: bytes, media_type: str) -> Any:
        self.writes.append("bytes")
        return super().push_bytes(repo, data, media_type)

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        self.writes.append("manifest")
        return super().put_manifest(repo, ref, body, media_type)


def test_gguf_publish_against_the_recorded_usage(registry: RegistryServer, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_MODELS_CACHE_DIR", str(tmp_path / "digests"))
    gguf = make_gguf(tmp_path / "model" / "model.gguf", tensor_elems=1 << 14)
    size = gguf.stat().st_size
    used = {"usedBytes": "1000000"}
    cap = job_capacity.from_args(SimpleNamespace(registry_capacity_bytes=1_000_000 + size - 1,
                                                 registry_usage=USAGE_REF), lambda ns, n: used)
    assert cap is not None
    client = CountingClient(registry.host, insecure=True)
    client.writes = []
    dest = Reference.parse(f"{registry.host}/capacity/gguf-{uuid.uuid4().hex[:8]}")
    snap = open_local(str(gguf.parent), SourceOptions())
    with pytest.raises(InsufficientCapacity, match=f"needs .* \\({size} bytes\\)"):
        publish(snap, dest, client, admit=cap.admit)
    assert client.writes == []  # bytes pushed: 0
    _nothing_in(client, dest.repository, [_sha256(gguf)])
    used["usedBytes"] = "999999"  # one byte freed: used + needed == capacity
    result = publish(open_local(str(gguf.parent), SourceOptions()), dest, client, admit=cap.admit)
    assert result["artifact"]["digest"] and client.writes[0] == "blob" and client.writes[-1] == "manifest"


# -- uploads: 507 from the headers --------------------------------------------------------------


TOKEN = "capacity-upload-token-" + "x" * 16


@pytest.fixture
def upload_server(registry: RegistryServer, tmp_path: Path) -> Iterator[SimpleNamespace]:
    port, repo = free_port(), f"capacity/upload-{uuid.uuid4().hex[:8]}"
    (tmp_path / "token").write_text(TOKEN)
    argv = ["upload-server", "--destination", f"{registry.host}/{repo}", "--listen", f"127.0.0.1:{port}",
            "--token-file", str(tmp_path / "token"), "--insecure-registry",
            "--result-file", str(tmp_path / "result.json"), "--scratch-dir", str(tmp_path / "scratch"),
            "--registry-capacity-bytes", str(MiB), "--registry-usage", USAGE_REF]
    t, stop, rc = serve_in_thread(argv, port)
    yield SimpleNamespace(port=port, repo=repo, url=f"http://127.0.0.1:{port}/upload", thread=t, rc=rc)
    stop.set()
    t.join(30)


def _head_only_put(port: int, headers: str) -> tuple[int, dict, float]:
    """Headers and not one body byte: the answer must come from them alone."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    t0 = time.monotonic()
    s.sendall(f"PUT /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{headers}\r\n".encode())
    data = s.recv(65536)
    elapsed = time.monotonic() - t0  # to the first byte of the answer
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), elapsed


def test_upload_over_the_capacity_is_answered_507_before_the_body(
    upload_server: SimpleNamespace, registry: RegistryServer, tmp_path: Path
) -> None:
    huge = 1 << 40
    status, body, elapsed = _head_only_put(upload_server.port, f"Content-Length: {huge}\r\n")
    assert status == 507 and elapsed < 2, (status, elapsed)
    assert body["error"]["reason"] == "InsufficientStorage"
    message = body["error"]["message"]
    assert f"needs 1.0 TiB ({huge} bytes)" in message and f"capacity 1.0 MiB ({MiB} bytes)" in message
    assert "used unknown" in message
    # A resumable upload's declared total counts the same way.
    status, body, _ = _head_only_put(upload_server.port, f"Content-Range: bytes 0-3/{2 * MiB}\r\nContent-Length: 4\r\n")
    assert status == 507 and f"({2 * MiB} bytes)" in body["error"]["message"]
    # The session goes on: a model that fits is published.
    gguf = make_gguf(tmp_path / "fits.gguf")
    r = requests.put(upload_server.url, data=gguf.read_bytes(), headers={"Authorization": f"Bearer {TOKEN}"},
                     timeout=60)
    assert r.status_code == 201, r.text
    upload_server.thread.join(30)
    assert upload_server.rc["rc"] == 0


# -- the sweep records the usage ----------------------------------------------------------------


class FakeCore:
    """The three CoreV1Api calls the sweep makes, on one in-memory ConfigMap."""

    def __init__(self) -> None:
        self.cm: SimpleNamespace | None = None
        self.writes = 0

    def read_namespaced_config_map(self, name: str, namespace: str) -> SimpleNamespace:
        if self.cm is None:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=dict(self.cm.data))

    def create_namespaced_config_map(self, namespace: str, body: dict) -> None:
        assert body["metadata"] == {"name": USAGE_CONFIGMAP, "namespace": namespace}
        self.cm, self.writes = SimpleNamespace(data=dict(body["data"])), self.writes + 1

    def replace_namespaced_config_map(self, name: str, namespace: str, body: Any) -> None:
        assert self.cm is not None and name == USAGE_CONFIGMAP
        self.cm, self.writes = SimpleNamespace(data=dict(body.data)), self.writes + 1


class NoRepositories:
    def list_repositories(self) -> list[str]:
        return []


def _objects(*sizes: int | None) -> dict[str, list[dict]]:
    models = [{"metadata": {"name": f"m{i}", "namespace": "a", "uid": f"u{i}"},
               "status": {"artifact": {"sizeBytes": s}} if s is not None else {}} for i, s in enumerate(sizes)]
    return {"models": models[:-1], "clustermodels": models[-1:]}


def test_sweep_writes_the_usage_config_map_only_when_it_changed():
    core, clock = FakeCore(), iter(f"2026-01-01T00:00:0{i}Z" for i in range(10))

    def write(used: int) -> bool:
        return write_usage_config_map(core, "d8-ai-models", used, now=lambda: next(clock))

    objects = _objects(100, 200, None, 300)
    outcome = sweep(NoRepositories(), objects.__getitem__, write_usage=write)  # type: ignore[arg-type]
    assert outcome["usage"] == {"usedBytes": 600, "written": True}
    assert core.cm is not None and core.cm.data == {"usedBytes": "600", "updatedAt": "2026-01-01T00:00:00Z"}
    outcome = sweep(NoRepositories(), objects.__getitem__, write_usage=write)  # type: ignore[arg-type]
    assert outcome["usage"] == {"usedBytes": 600, "written": False} and core.writes == 1
    objects = _objects(100, 300)
    sweep(NoRepositories(), objects.__getitem__, write_usage=write)  # type: ignore[arg-type]
    assert core.cm.data == {"usedBytes": "400", "updatedAt": "2026-01-01T00:00:01Z"} and core.writes == 2
    # A dry run writes nothing; a failing write is reported, not fatal.
    sweep(NoRepositories(), _objects(1).__getitem__, write_usage=write, dry_run=True)  # type: ignore[arg-type]
    assert core.writes == 2

    def broken(used: int) -> bool:
        raise ApiException(status=403, reason="Forbidden")

    outcome = sweep(NoRepositories(), objects.__getitem__, write_usage=broken)  # type: ignore[arg-type]
    assert outcome["usage"]["written"] is False and "403" in outcome["usage"]["error"]
    assert total_used([{"status": {"artifact": {"sizeBytes": True}}}, {"status": {"artifact": "x"}}, {}]) == 0


# -- the hooks pass the flags exactly when configured -------------------------------------------


CFG = Config(namespace="d8-ai-models", registry="dmcr.test:5000", worker_image="worker:test", signing_key=b"k" * 32)


def _worker_argv(answer: dict) -> list[str]:
    [job] = [c for c in answer["children"] if c["kind"] == "Job"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    return container["args"]


@pytest.mark.parametrize("capacity", [0, 500 << 30])
def test_hooks_pass_the_capacity_exactly_when_configured(capacity: int):
    config = dataclasses.replace(CFG, registry_capacity_bytes=capacity)
    url_model = hr.model(source={"url": "https://huggingface.co/BAAI/bge-m3"})
    upload_model = hr.model("uploaded", source={"upload": {}})
    publish_argv = _worker_argv(hooks_model.model_sync(hr.sync_request(url_model), config))
    upload_argv = _worker_argv(hooks_model.model_sync(hr.sync_request(upload_model), config))
    for argv, cls in ((publish_argv, wc.Publish), (upload_argv, wc.UploadServer)):
        cmd = cls.parse(argv)
        assert cmd.argv() == argv
        if capacity:
            assert cmd.registry_capacity_bytes == capacity  # type: ignore[attr-defined]
            assert cmd.registry_usage == USAGE_REF  # type: ignore[attr-defined]
        else:
            assert "--registry-capacity-bytes" not in argv and "--registry-usage" not in argv
    # Deterministic per Config: a second sync emits the same Job.
    again = _worker_argv(hooks_model.model_sync(hr.sync_request(url_model), config))
    assert again == publish_argv


# -- sources that know the size up front --------------------------------------------------------


FAST = HttpPolicy(retry=RetryPolicy(attempts=3, base_delay=0.01), connect_timeout=2, read_timeout=5)
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_hugging_face_snapshot_knows_the_size_before_any_download(minilm_dir: Path) -> None:
    with HubStandIn() as hub:
        hub.add_repo(MINILM, minilm_dir)
        snap = HuggingFaceSource(f"https://huggingface.co/{MINILM}", token=None, endpoint=hub.endpoint,
                                 policy=FAST).snapshot()
        paths = [r.path for r in hub.log]
    assert paths and all("/resolve/" not in p for p in paths), paths  # the model info only
    sizes = {f.path: f.size for f in snap.files}
    assert None not in sizes.values()
    assert sizes["model.safetensors"] == (minilm_dir / "model.safetensors").stat().st_size
    assert sum(sizes.values()) == sum((minilm_dir / p).stat().st_size for p in sizes)


def test_ollama_snapshot_knows_the_size_before_any_layer_is_read(registry: RegistryServer, tmp_path: Path) -> None:
    gguf = make_gguf(tmp_path / "tiny.gguf", tensor_elems=4096)
    name = f"cap{uuid.uuid4().hex[:8]}"
    pushed = push_ollama_model(registry.url, name, layers=[("model", gguf), ("license", b"Apache License 2.0")])
    with BlobRedirector(registry.url) as redirector:
        snap = OllamaSource(parse_source_url(f"https://ollama.com/library/{name}"), registry=redirector.url,
                            retry=RetryPolicy(attempts=3, base_delay=0.01), timeout=(2, 5)).snapshot()
        blobs = {s.path.split("?")[0].rsplit("/", 1)[-1] for s in redirector.seen if "/blobs/" in s.path}
    assert blobs == {pushed.manifest["config"]["digest"]}  # the config only: no layer byte yet
    assert sorted(f.size for f in snap.files) == sorted(d["size"] for d in pushed.manifest["layers"])
    assert sum(f.size or 0 for f in snap.files) == gguf.stat().st_size + len(b"Apache License 2.0")


def test_a_capacity_of_zero_checks_nothing():
    Capacity(0, lambda: Usage(10**18)).admit(10**18)


# -- RBAC on a real API server: every service account reads the usage record, nothing more ----------


def test_every_service_account_may_get_the_usage_record_only(kube, kube_namespace):
    import yaml

    manifest = (Path(__file__).resolve().parents[1] / "deploy" / "rbac" / "dmcr-usage-reader.yaml").read_text()
    kube.kubectl("apply", "-f", "-", input=manifest.replace("namespace: d8-ai-models", f"namespace: {kube_namespace}"))
    assert [d["kind"] for d in yaml.safe_load_all(manifest)] == ["Role", "RoleBinding"]
    worker = ["--as=system:serviceaccount:some-tenant:ai-model-worker-x", "--as-group=system:serviceaccounts",
              "--as-group=system:serviceaccounts:some-tenant", "--as-group=system:authenticated"]

    def can(*what: str) -> bool:
        p = kube.kubectl("auth", "can-i", *what, "-n", kube_namespace, *worker, check=False)
        return p.stdout.strip() == "yes"

    assert can("get", f"configmap/{USAGE_CONFIGMAP}")
    for verb, obj in [("get", "configmap/dmcr-ca"), ("list", "configmaps"), ("update", f"configmap/{USAGE_CONFIGMAP}"),
                      ("watch", "configmaps"), ("get", "secret/ai-models-signing-key")]:
        assert not can(verb, obj), (verb, obj)
