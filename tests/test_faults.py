"""Faults: what happens when the registry, a source, the worker or the hook service goes away.

Real components throughout: ``docker-registry`` processes (killed with
SIGKILL, or on a tmpfs that fills up), ``python -m jobs publish`` worker
processes, gunicorn for the hooks. Only Hugging Face is the local stand-in
(``devstack/hf_hub.py``), whose fault switches (``stall``,
``rate_limit``, ``server_error``) make a fault land at a known byte.

"Not re-sent" is counted by the registry itself: its access log records every
``POST .../blobs/uploads/`` (one per blob upload started), and a blob the
repository already holds is answered by a ``HEAD`` and skipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack import models
from devstack.hf_hub import HubStandIn
from devstack.registry import RegistryServer, free_port
from lib.api.types import TRANSIENT_REASONS, Reason
from lib.oci.client import RegistryClient
from lib.oci.reference import Reference
from lib.publish import publish
from lib.retry import RetryPolicy
from lib.sources.base import SourceError
from lib.sources.http import HttpPolicy
from lib.sources.huggingface import HuggingFaceSource
from tests.support import hookreq as hr

pytestmark = pytest.mark.slow  # registries and workers killed mid-publish (~45 s)
ROOT = Path(__file__).resolve().parents[1]
TRANSIENT = {r.value for r in TRANSIENT_REASONS}


class LoggedRegistry(RegistryServer):
    """A registry with its access log on: every request is a line in ``registry.log``."""

    def config(self) -> dict:
        cfg = super().config()
        cfg["log"]["accesslog"] = {"disabled": False}
        return cfg

    def log_text(self) -> str:
        return (self.workdir / "registry.log").read_text(errors="replace")

    def requests_since(self, offset: int, method: str, repo: str) -> list[str]:
        pattern = re.compile(rf'"{method} /v2/{re.escape(repo)}/blobs/[^ ]* HTTP')
        return [line for line in self.log_text()[offset:].splitlines() if pattern.search(line)]


@pytest.fixture
def logged_registry(tmp_path: Path) -> Iterator[LoggedRegistry]:
    r = LoggedRegistry(tmp_path / "registry")
    r.start()
    yield r
    r.stop()


def worker(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs", "publish", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(predicate, timeout: float, interval: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def storage_blob(r: RegistryServer, digest: str) -> Path:
    hexd = digest.removeprefix("sha256:")
    return r.workdir / "storage" / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def upload_bytes(r: RegistryServer, repo: str) -> int:
    uploads = r.workdir / "storage" / "docker/registry/v2/repositories" / repo / "_uploads"
    return sum(p.stat().st_size for p in uploads.glob("*/data")) if uploads.is_dir() else 0


# ---------------------------------------------------------------- the registry dies mid-publish


@pytest.fixture
def sharded_hub(tmp_path: Path) -> Iterator[tuple[HubStandIn, list[Path]]]:
    shards = models.make_gguf_shards(tmp_path / "shards", shards=2, tensor_elems=4 << 20)  # 8 MiB each
    with HubStandIn(lfs_threshold=0) as hub:  # every file is LFS: every file has a sha256
        files: dict[str, bytes | Path] = {p.name: p for p in shards}
        files["README.md"] = b"# sharded\n"
        hub.add_repo("acme/sharded", files)
        yield hub, shards


def test_registry_killed_mid_publish_fails_fast_and_rerun_skips_finished_blobs(
    logged_registry: LoggedRegistry, sharded_hub: tuple[HubStandIn, list[Path]], tmp_path: Path
) -> None:
    hub, shards = sharded_hub
    r = logged_registry
    repo = "faults/killed/sharded"
    second = hub.repos["acme/sharded"].files[shards[1].name]
    first_digest = "sha256:" + hub.repos["acme/sharded"].files[shards[0].name].sha256
    # The stand-in pauses 3 s after 1 MiB of the second shard: the kill lands mid-blob.
    hub.stall(shards[1].name, after_bytes=1 << 20, seconds=3.0)
    args = ["--source", "https://huggingface.co/acme/sharded", "--destination", f"{r.host}/{repo}",
            "--insecure-registry", "--result-file", str(tmp_path / "r1.json")]
    p = worker(args, {"HF_ENDPOINT": hub.endpoint})
    try:
        assert wait_for(lambda: any(second.sha256 in q.path for q in hub.log), 60), "second shard never fetched"
        time.sleep(0.3)
        assert storage_blob(r, first_digest).is_file(), "the first shard must be committed before the kill"
        r.kill()
        killed = time.monotonic()
        out, err = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    took = time.monotonic() - killed
    result = json.loads((tmp_path / "r1.json").read_text())
    assert "error" in result, out
    print(result)
    # Transient: the Job's pod backoff retries it once the registry is back.
    assert result["error"]["reason"] in TRANSIENT and p.returncode == 1, result
    # Bounded: the stall (3 s) plus the client's retry budget (backoff 0.5+1+2+4 s), not a hang.
    assert took < 30, f"the worker took {took:.1f}s to give up"
    message = result["error"]["message"]
    assert r.host in message and ("unreachable" in message or "failed after" in message), message
    assert "Traceback" not in err

    # The registry comes back on the same storage; the rerun completes.
    r.start()
    mark = len(r.log_text())
    hub_mark = len(hub.log)
    args[-1] = str(tmp_path / "r2.json")
    p2 = worker(args, {"HF_ENDPOINT": hub.endpoint})
    out2, err2 = p2.communicate(timeout=120)
    assert p2.returncode == 0, err2[-2000:]
    result2 = json.loads((tmp_path / "r2.json").read_text())
    assert result2["artifact"]["digest"].startswith("sha256:")
    # Uploads started: the unfinished shard and the ModelPack config. README and shard 1: HEAD only.
    posts = r.requests_since(mark, "POST", repo)
    assert len(posts) == 2, posts
    heads = [line for line in r.requests_since(mark, "HEAD", repo) if first_digest in line]
    assert heads and all('" 200 ' in line for line in heads), heads
    refetched = [q.path for q in hub.log[hub_mark:] if "/cdn/" in q.path and first_digest[7:] in q.path]
    assert refetched == [], "the finished shard was downloaded again"


def test_registry_down_before_publish_is_registry_unavailable(tmp_path: Path) -> None:
    gguf = models.make_gguf(tmp_path / "m" / "model.gguf")
    rf = tmp_path / "r.json"
    started = time.monotonic()
    p = worker(["--source", str(gguf.parent), "--destination", f"127.0.0.1:{free_port()}/faults/down",
                "--insecure-registry", "--result-file", str(rf)])
    p.communicate(timeout=60)
    result = json.loads(rf.read_text())
    assert result["error"]["reason"] == Reason.REGISTRY_UNAVAILABLE
    assert p.returncode == 1  # transient: the Job's backoff retries it
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------- the registry runs out of space


@pytest.fixture
def tiny_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry whose storage is an 8 MiB tmpfs (root only; skipped elsewhere)."""
    storage = Path(tempfile.mkdtemp(prefix="tiny-registry-", dir=tmp_path))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(storage)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    r = RegistryServer(tmp_path / "tiny", storage=storage)
    try:
        r.start()
        yield r
    finally:
        r.stop()
        subprocess.run(["umount", str(storage)], capture_output=True)


def test_registry_out_of_space_is_insufficient_storage(tiny_registry: RegistryServer, tmp_path: Path) -> None:
    big = models.make_large_gguf(tmp_path / "m" / "model.gguf", 16 << 20)
    rf = tmp_path / "r.json"
    started = time.monotonic()
    p = worker(["--source", str(big.parent), "--destination", f"{tiny_registry.host}/faults/full",
                "--insecure-registry", "--result-file", str(rf)])
    out, err = p.communicate(timeout=60)
    result = json.loads(rf.read_text())
    assert result["error"]["reason"] == Reason.INSUFFICIENT_STORAGE, result
    assert "space" in result["error"]["message"]
    assert p.returncode == 1  # transient: retried once space is freed
    assert time.monotonic() - started < 20  # out of space is not retried in a loop
    # Nothing tagged: the repository has no manifest.
    assert client_tags(tiny_registry, "faults/full") == []


# ---------------------------------------------------------------- a stalling, throttling, failing source


@pytest.fixture
def gguf_hub(tmp_path: Path) -> Iterator[HubStandIn]:
    gguf = models.make_large_gguf(tmp_path / "hub" / "model.gguf", 4 << 20)
    with HubStandIn() as hub:
        hub.add_repo("acme/tiny", {"model.gguf": gguf, "README.md": b"# tiny\n"})
        yield hub


def _publish_from(hub: HubStandIn, registry: RegistryServer, repo: str, policy: HttpPolicy,
                  sleeps: list[float] | None = None) -> dict[str, Any]:
    src = HuggingFaceSource("https://huggingface.co/acme/tiny", token=None, endpoint=hub.endpoint, policy=policy,
                            sleep=(sleeps.append if sleeps is not None else time.sleep))
    client = RegistryClient(registry.host, insecure=True)
    return dict(publish(src.snapshot(), Reference.parse(f"{registry.host}/{repo}"), client))


FAST = HttpPolicy(retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05), connect_timeout=2, read_timeout=0.5)


def test_a_stalled_source_times_out_instead_of_hanging(gguf_hub: HubStandIn, registry: RegistryServer) -> None:
    # Stalls on every attempt, each longer than the read timeout.
    gguf_hub.stall("model.gguf", after_bytes=1 << 20, seconds=3.0, times=10)
    started = time.monotonic()
    with pytest.raises(SourceError) as e:
        _publish_from(gguf_hub, registry, "faults/stall/never", FAST)
    took = time.monotonic() - started
    assert e.value.reason == Reason.SOURCE_UNAVAILABLE, e.value.message
    assert "model.gguf" in e.value.message
    assert took < 10, f"{took:.1f}s"
    # Nothing tagged.
    assert not RegistryClient(registry.host, insecure=True).blob_exists(
        "faults/stall/never", "sha256:" + gguf_hub.repos["acme/tiny"].files["model.gguf"].sha256)


def test_a_stall_once_resumes_and_gives_the_same_artifact(gguf_hub: HubStandIn, registry: RegistryServer) -> None:
    clean = _publish_from(gguf_hub, registry, "faults/stall-a/tiny", FAST)
    gguf_hub.stall("model.gguf", after_bytes=1 << 20, seconds=2.0, times=1)
    started = time.monotonic()
    resumed = _publish_from(gguf_hub, registry, "faults/stall-b/tiny", FAST)
    assert time.monotonic() - started < 10
    assert resumed["artifact"]["digest"] == clean["artifact"]["digest"]
    ranged = [q for q in gguf_hub.log if "/cdn/" in q.path and q.headers.get("Range", "").startswith("bytes=")]
    assert ranged, "the stalled download must resume with a Range request"


def test_hugging_face_429_and_5xx_bursts_still_publish(gguf_hub: HubStandIn, registry: RegistryServer) -> None:
    clean = _publish_from(gguf_hub, registry, "faults/burst-a/tiny", FAST)
    gguf_hub.rate_limit("api", 3, {"Retry-After": "2"})
    gguf_hub.server_error("api", 2, 502)
    gguf_hub.rate_limit("README.md", 2, {"RateLimit": '"api";r=0;t=1'})
    gguf_hub.server_error("README.md", 2, 500)
    gguf_hub.server_error("model.gguf", 2, 503)
    gguf_hub.rate_limit("model.gguf", 2, {"Retry-After": "1"})
    sleeps: list[float] = []
    policy = HttpPolicy(retry=RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05), read_timeout=5)
    burst = _publish_from(gguf_hub, registry, "faults/burst-b/tiny", policy, sleeps)
    assert burst["artifact"]["digest"] == clean["artifact"]["digest"]
    assert any(s >= 2 for s in sleeps), sleeps  # Retry-After honoured (the sleep is recorded, not slept)
    assert all(s <= 300 for s in sleeps)
    fired = gguf_hub.faults
    assert all(v[0] == 0 for v in (*fired.rate_limit.values(), *fired.server_error.values()))


def test_a_source_failing_beyond_the_retry_budget_is_source_unavailable(
    gguf_hub: HubStandIn, registry: RegistryServer
) -> None:
    gguf_hub.server_error("model.gguf", 50, 503)
    started = time.monotonic()
    with pytest.raises(SourceError) as e:
        _publish_from(gguf_hub, registry, "faults/5xx/tiny", FAST)
    assert e.value.reason == Reason.SOURCE_UNAVAILABLE
    assert time.monotonic() - started < 10


# ---------------------------------------------------------------- the worker is killed mid-upload


def test_worker_killed_mid_upload_next_attempt_completes_without_resending(
    logged_registry: LoggedRegistry, tmp_path: Path
) -> None:
    r = logged_registry
    repo = "faults/sigkill/sharded"
    shards = models.make_gguf_shards(tmp_path / "src", shards=2, tensor_elems=32 << 20)  # 64 MiB each
    from lib.sources.local import sha256_file

    first = "sha256:" + sha256_file(shards[0])
    args = ["--source", str(tmp_path / "src"), "--destination", f"{r.host}/{repo}", "--insecure-registry",
            "--result-file", str(tmp_path / "r1.json")]
    p = worker(args)
    try:
        landed = wait_for(lambda: storage_blob(r, first).is_file() and upload_bytes(r, repo) > (4 << 20), 90)
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert landed, "the kill must land while the second shard uploads"
    assert p.returncode == -signal.SIGKILL
    assert client_tags(r, repo) == []  # nothing tagged by the killed attempt
    first_mtime = storage_blob(r, first).stat().st_mtime_ns

    mark = len(r.log_text())
    args[-1] = str(tmp_path / "r2.json")
    p2 = worker(args)
    _, err = p2.communicate(timeout=120)
    assert p2.returncode == 0, err[-2000:]
    result = json.loads((tmp_path / "r2.json").read_text())
    assert result["artifact"]["sizeBytes"] >= sum(s.stat().st_size for s in shards)
    # Uploads started by the next attempt: shard 2 (from its start) and the config; shard 1 is skipped.
    assert len(r.requests_since(mark, "POST", repo)) == 2
    assert storage_blob(r, first).stat().st_mtime_ns == first_mtime
    assert client_tags(r, repo) == ["latest"]


def client_tags(r: RegistryServer, repo: str) -> list[str]:
    resp = requests.get(f"{r.url}/v2/{repo}/tags/list", timeout=5)
    return (resp.json().get("tags") or []) if resp.status_code == 200 else []


# ---------------------------------------------------------------- the hook service restarts


def _hook_requests() -> dict[str, dict[str, Any]]:
    """One realistic request per hook family: Ready Model with children, ClusterModel, workload, catalog."""
    ready = hr.model("bge", status={"phase": "Ready", "attempt": 1, "artifact": {
        "uri": "dmcr.test:5000/x@sha256:" + "a" * 64, "digest": "sha256:" + "a" * 64, "sizeBytes": 5}})
    publishing = hr.cluster_model("qwen")
    workload = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "app", "namespace": "ai-demo", "uid": "u-app", "generation": 1,
                             "annotations": {"ai.deckhouse.io/model": "bge"}},
                "spec": {"selector": {"matchLabels": {"a": "b"}},
                         "template": {"metadata": {"labels": {"a": "b"}},
                                      "spec": {"containers": [{"name": "c", "image": "img"}]}}}}
    source = {"apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "ModelCatalogSource",
              "metadata": {"name": "dmz", "uid": hr.uid_for("MCS", "dmz"), "generation": 1,
                           "creationTimestamp": hr.T0},
              "spec": {"registry": "registry.dmz.example:5000", "repository": "ai-models/catalog",
                       "refreshIntervalSeconds": 600}}
    return {
        "/hooks/model/sync": hr.sync_request(ready),
        "/hooks/clustermodel/sync": hr.sync_request(publishing),
        "/hooks/workload/sync": {
            "controller": {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "DecoratorController",
                           "metadata": {"name": "ai-models-workloads"}},
            "object": workload, "attachments": {},
            "related": {"Model.ai.deckhouse.io/v1alpha1": {"ai-demo/bge": ready},
                        "ClusterModel.ai.deckhouse.io/v1alpha1": {}}},
        "/hooks/modelcatalogsource/sync": hr.sync_request(
            source, child_types=("Job.batch/v1", "CronJob.batch/v1", "Secret.v1"),
            related_types=("Pod.v1", "Secret.v1")),
    }


class Gunicorn:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "signing.key").write_text(os.urandom(32).hex())
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("AI_MODELS_")},
                    "AI_MODELS_LISTEN": f"127.0.0.1:{self.port}", "AI_MODELS_HOOK_WORKERS": "2",
                    "AI_MODELS_REGISTRY": "dmcr.test:5000", "AI_MODELS_WORKER_IMAGE": "worker:test",
                    "AI_MODELS_SIGNING_KEY_FILE": str(workdir / "signing.key")}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.workdir / "gunicorn.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "hooks" / "gunicorn_conf.py"), "hooks.app:app"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def up() -> bool:
            try:
                return requests.get(self.url + "/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        assert wait_for(up, 30, 0.05), (self.workdir / "gunicorn.log").read_text()[-2000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(15)


def test_hook_service_restart_gives_byte_identical_answers(tmp_path: Path) -> None:
    g = Gunicorn(tmp_path / "hooks")
    reqs = _hook_requests()
    g.start()
    try:
        with requests.Session() as s:
            before = {path: [s.post(g.url + path, json=body, timeout=10) for _ in range(4)]
                      for path, body in reqs.items()}
        g.stop(signal.SIGKILL)  # a crash, not a graceful stop
        g.start()
        with requests.Session() as s:
            after = {path: s.post(g.url + path, json=body, timeout=10) for path, body in reqs.items()}
    finally:
        g.stop()
    for path, answers in before.items():
        assert all(a.status_code == 200 for a in answers), (path, answers[0].text[:500])
        # Both workers (keep-alive aside, 4 calls spread over them) and the restarted service agree.
        assert {a.content for a in answers} == {after[path].content}, path
        assert after[path].status_code == 200
    # The answers are not trivially empty.
    assert json.loads(after["/hooks/clustermodel/sync"].content)["children"]
    assert json.loads(after["/hooks/workload/sync"].content)["annotations"]
