"""``ai-models upload``: a 256 MiB upload that survives three cut connections, and the cluster path.

The real upload server (``python -m jobs upload-server`` in-process, as
tests/test_upload_server.py runs it) publishes into the real registry; a
loopback proxy in front of it drops the connection after a number of bytes,
three times; the CLI runs as a separate process (``python -m ai_models_cli``)
exactly as a user would, and the published GGUF layer must be the file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ai_models_cli.progress import Progress
from ai_models_cli.upload import Outcome, Target, Uploader, verify
from devstack.models import make_gguf, make_large_gguf
from lib.oci.client import RegistryClient
from tests import test_upload_server
from tests.test_upload_server import TOKEN, layers

ROOT = Path(__file__).resolve().parents[1]
start = test_upload_server.start  # the real upload server against the real registry (a fixture)
MiB = 1 << 20


@dataclass
class CuttingProxy:
    """Loopback TCP proxy that drops a connection once the client has sent ``cuts[0]`` bytes in total.

    Bytes are counted over every connection (client to server only); each cut closes
    both sides at once (RST-free shutdown: the server sees EOF), then the next cut is armed.
    """

    backend: int
    cuts: list[int]
    sent: int = 0
    cut_at: list[int] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _open: set[tuple[socket.socket, socket.socket]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._ls = socket.create_server(("127.0.0.1", 0))
        self.port = self._ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._ls.close()
        with self._lock:
            pairs = list(self._open)
        for pair in pairs:
            self._kill(*pair)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._ls.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.backend))
            pair = (client, upstream)
            with self._lock:
                self._open.add(pair)
            threading.Thread(target=self._relay, args=pair, daemon=True).start()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both directions, then close both sockets (a half-closed pair is otherwise never closed)."""
        down = threading.Thread(target=self._down, args=(client, upstream), daemon=True)
        down.start()
        self._up(client, upstream)
        down.join()
        self._kill(client, upstream)
        with self._lock:
            self._open.discard((client, upstream))

    def _kill(self, *socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _up(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(1 << 16):
                with self._lock:
                    budget = self.cuts[0] - self.sent if self.cuts else len(data)
                    part = data[: max(budget, 0)]
                    self.sent += len(part)
                    cut = bool(self.cuts) and len(part) < len(data) or (bool(self.cuts) and budget == len(part))
                    if cut:
                        self.cut_at.append(self.sent)
                        self.cuts.pop(0)
                upstream.sendall(part)
                if cut:
                    self._kill(client, upstream)
                    return
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)
        except OSError:
            self._kill(client, upstream)

    def _down(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := upstream.recv(1 << 16):
                client.sendall(data)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)
        except OSError:
            self._kill(client, upstream)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(MiB):
            h.update(piece)
    return "sha256:" + h.hexdigest()


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ai_models_cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_a_256_mib_upload_survives_three_cut_connections(start, registry, tmp_path):
    big = make_large_gguf(tmp_path / "big.gguf", 256 * MiB)
    size = big.stat().st_size
    srv = start()
    proxy = CuttingProxy(srv.port, cuts=[40 * MiB, 110 * MiB, 200 * MiB])
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    url = f"http://127.0.0.1:{proxy.port}/upload"
    t0 = time.monotonic()
    p = cli("upload", "--url", url, "--token-file", str(token_file), str(big))
    took = time.monotonic() - t0
    proxy.close()
    assert p.returncode == 0, p.stderr
    assert len(proxy.cut_at) == 3 and proxy.cuts == [], proxy.cut_at
    digest = sha256_file(big)
    assert f"file {digest}" in p.stdout
    # Resumed three times, each from where the server stood (never from 0).
    resumed = re.search(r"resumed at byte ([0-9, ]+)", p.stdout).group(1).split(", ")
    assert len(resumed) == 3 and all(0 < int(n) < size for n in resumed), p.stdout
    # Re-sent bytes: at most what was in flight at each cut (socket buffers), not the whole file again.
    assert proxy.sent - size < 3 * 16 * MiB, (proxy.sent, size)
    assert srv.wait() == 0  # the server answers the PUT, then writes its result file and exits
    result = srv.result()
    assert result["artifact"]["digest"] in p.stdout
    # The published GGUF layer is exactly the file.
    got = layers(RegistryClient(registry.host, insecure=True), srv.repo, result)
    assert got["big.gguf" if "big.gguf" in got else "model.gguf"]["digest"] == digest
    print(f"256 MiB through 3 cuts: {took:.1f} s, {proxy.sent - size} bytes re-sent")


def test_refusals_are_not_retried(start, tmp_path):
    gguf = make_gguf(tmp_path / "m.gguf")
    srv = start()
    token_file = tmp_path / "wrong"
    token_file.write_text("not-the-token")
    p = cli("upload", "--url", srv.url, "--token-file", str(token_file), str(gguf), "--quiet")
    assert p.returncode == 1 and "401" in p.stderr and "retrying" not in p.stderr
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    (tmp_path / "token").write_text(TOKEN)
    p = cli("upload", "--url", srv.url, "--token-file", str(tmp_path / "token"), str(bad), "--quiet")
    assert p.returncode == 1 and "415" in p.stderr, p.stderr


def test_an_unreachable_server_is_retried_with_backoff_then_given_up(tmp_path):
    gguf = make_gguf(tmp_path / "m.gguf")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept: list[float] = []
    up = Uploader(Target(f"http://127.0.0.1:{port}/upload", TOKEN), gguf, retries=4, sleep=slept.append)
    with pytest.raises(Exception, match="giving up after 5 attempts"):
        up.run()
    assert len(slept) == 4 and slept == sorted(slept) and slept[-1] > 2 * slept[0]


def test_verify_compares_what_the_result_carries():
    ok = {"artifact": {"digest": "sha256:" + "a" * 64}, "source": {"resolvedType": "Upload"}}
    assert verify(Outcome(ok, "sha256:" + "b" * 64, 1, 1)) == []
    with_body = {**ok, "source": {"remoteDigest": "sha256:" + "c" * 64}}
    assert "the server received" in verify(Outcome(with_body, "sha256:" + "b" * 64, 1, 1))[0]
    assert verify(Outcome({"artifact": {}}, "x", 1, 1))


def test_progress_line_has_rate_and_eta():
    import io

    out = io.StringIO()
    pr = Progress(100 * MiB, out)
    pr.moved(0)
    pr.samples.append((pr.samples[-1][0] + 1.0, 10 * MiB))
    pr.sent, pr.position = 10 * MiB, 10 * MiB
    line = pr.line()
    assert line.startswith(" 10.0% 10.0 MiB / 100.0 MiB") and "10.0 MiB/s" in line and "ETA 0:09" in line


# ---------------------------------------------------------------- through the cluster


@pytest.fixture(scope="module")
def crds(kube):
    """crds/ applied and Established (as tests/test_kube_crds.py does)."""
    kube.kubectl("apply", "--server-side", "--field-manager=ai-models-tests", "--force-conflicts", "-k", str(ROOT / "crds"))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *(f"crd/{p}.ai.deckhouse.io" for p in ("models", "clustermodels", "modelcatalogsources")))
    return kube


def test_upload_reads_the_secret_and_waits_for_ready(start, registry, crds, kube_namespace, tmp_path):
    """A Model object with an upload session in a real API server; the CLI finds the Secret and waits."""
    from kubernetes import client

    kube = crds
    gguf = make_gguf(tmp_path / "m.gguf")
    srv = start()
    ns = kube_namespace
    custom = client.CustomObjectsApi(kube.client)
    core = client.CoreV1Api(kube.client)
    model = custom.create_namespaced_custom_object("ai.deckhouse.io", "v1alpha1", ns, "models", {
        "apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "Model",
        "metadata": {"name": "uploaded"}, "spec": {"source": {"upload": {}}}})
    secret = "ai-model-upload-uploaded-0"
    core.create_namespaced_secret(ns, {"metadata": {"name": secret}, "data": {
        "url": base64.b64encode(srv.url.encode()).decode(), "token": base64.b64encode(TOKEN.encode()).decode()}})
    status = {"phase": "WaitForUpload", "upload": {"secretName": secret, "session": 0}}
    custom.patch_namespaced_custom_object_status("ai.deckhouse.io", "v1alpha1", ns, "models", "uploaded",
                                                 {"status": status})

    def controller() -> None:
        """Stands in for the hooks: once the server has published, the Model is Ready with its result."""
        rc = srv.wait(120)
        result = srv.result()
        assert rc == 0
        ready = {"phase": "Ready", "artifact": result["artifact"], "conditions": [{
            "type": "Ready", "status": "True", "reason": "ArtifactPublished", "message": "published",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        custom.patch_namespaced_custom_object_status("ai.deckhouse.io", "v1alpha1", ns, "models", "uploaded",
                                                     {"status": ready})

    t = threading.Thread(target=controller, daemon=True)
    t.start()
    p = cli("upload", "uploaded", str(gguf), "-n", ns, "--kubeconfig", str(kube.kubeconfig), "--timeout", "60")
    t.join(60)
    assert p.returncode == 0, p.stderr
    digest = srv.result()["artifact"]["digest"]
    assert f"Model {ns}/uploaded: Ready {digest}" in p.stdout
    assert model["metadata"]["name"] == "uploaded"
    # `wait` on the Ready model prints the reason.
    w = cli("wait", "uploaded", "-n", ns, "--kubeconfig", str(kube.kubeconfig), "--timeout", "10")
    assert w.returncode == 0 and f"Model {ns}/uploaded: Ready ArtifactPublished: published" in w.stdout


def test_wait_reports_failed_with_its_reason(crds, kube_namespace):
    from kubernetes import client

    kube = crds
    ns = kube_namespace
    custom = client.CustomObjectsApi(kube.client)
    custom.create_namespaced_custom_object("ai.deckhouse.io", "v1alpha1", ns, "models", {
        "apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "Model",
        "metadata": {"name": "bad"}, "spec": {"source": {"url": "https://example.com/x.gguf"}}})
    custom.patch_namespaced_custom_object_status("ai.deckhouse.io", "v1alpha1", ns, "models", "bad", {"status": {
        "phase": "Failed", "conditions": [{"type": "Ready", "status": "False", "reason": "UnsupportedSource",
                                           "message": "unknown host", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    w = cli("wait", "bad", "-n", ns, "--kubeconfig", str(kube.kubeconfig), "--timeout", "10")
    assert w.returncode == 1 and f"Model {ns}/bad: Failed UnsupportedSource: unknown host" in w.stdout
    gone = cli("wait", "nope", "-n", ns, "--kubeconfig", str(kube.kubeconfig), "--timeout", "5")
    assert gone.returncode == 1 and "not found" in gone.stderr


def test_the_scripts_are_declared():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ai-models"] == scripts["kubectl-ai_models"] == "ai_models_cli.cli:main"
    assert json.dumps(cli("--help").stdout).count("upload") >= 1
