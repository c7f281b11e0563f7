"""Source adapters through the real publish pipeline into a real registry.

These show which layer raises on bad bytes: the pipeline for a sha256 or size
that differs from what the adapter declared (``PublishError``), the adapter
for what only it can know (a small Hub file's git blob id, the GGUF magic).
Either way nothing gets tagged.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devstack.hf_hub import HubStandIn
from devstack.models import PLAIN_TEMPLATE, make_gguf, make_safetensors_model
from devstack.ollama_registry import push_ollama_model
from devstack.registry import RegistryServer
from lib.api.types import Reason
from lib.oci.client import RegistryClient
from lib.oci.reference import Reference
from lib.publish import PublishError, publish
from lib.retry import RetryPolicy
from lib.sources.base import SourceError
from lib.sources.http import HttpPolicy
from lib.sources.huggingface import HuggingFaceSource
from lib.sources.ollama import OllamaSource

FAST = HttpPolicy(retry=RetryPolicy(attempts=3, base_delay=0.01), connect_timeout=2, read_timeout=5)
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def hub(minilm_dir: Path) -> Iterator[HubStandIn]:
    with HubStandIn() as h:
        h.add_repo(MINILM, minilm_dir, pipeline_tag="sentence-similarity", library_name="sentence-transformers",
                   tags=["sentence-transformers", "feature-extraction"], cardData={"license": "apache-2.0"})
        yield h


def destination(registry: RegistryServer) -> Reference:
    return Reference.parse(f"{registry.host}/sources-e2e/{uuid.uuid4().hex[:12]}")


def tags(registry: RegistryServer, dest: Reference) -> list[str]:
    r = requests.get(f"{registry.url}/v2/{dest.repository}/tags/list", timeout=5)
    return (r.json().get("tags") or []) if r.status_code == 200 else []


def layer_paths(registry: RegistryServer, dest: Reference, digest: str) -> dict[str, str]:
    r = requests.get(f"{registry.url}/v2/{dest.repository}/manifests/{digest}", timeout=5,
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    r.raise_for_status()
    return {layer["annotations"]["org.cncf.model.filepath"]: layer["digest"] for layer in r.json()["layers"]}


def test_hugging_face_model_published(hub: HubStandIn, registry: RegistryServer) -> None:
    dest = destination(registry)
    snap = HuggingFaceSource(f"https://huggingface.co/{MINILM}", token=None, endpoint=hub.endpoint,
                             policy=FAST).snapshot()
    hub.cut("model.safetensors", 40 << 20)  # a dropped connection mid-weights is invisible to the pipeline
    result = publish(snap, dest, RegistryClient(registry.host, insecure=True))
    repo = hub.repos[MINILM]
    assert result["source"] == {"resolvedType": "HuggingFace", "resolvedRevision": repo.commit}
    assert tags(registry, dest) == ["latest"]
    layers = layer_paths(registry, dest, result["artifact"]["digest"])
    assert layers["model.safetensors"] == "sha256:" + repo.files["model.safetensors"].sha256
    assert "config.json" in layers and ".gitattributes" not in layers
    assert result["resolved"]["format"] == "Safetensors"


def test_hugging_face_tampered_weights_fail_in_pipeline(hub: HubStandIn, registry: RegistryServer,
                                                        tmp_path: Path) -> None:
    model = make_safetensors_model(tmp_path / "m")
    hub.add_repo("acme/tampered", model)
    dest = destination(registry)
    snap = HuggingFaceSource("https://huggingface.co/acme/tampered", token=None, endpoint=hub.endpoint,
                             policy=FAST).snapshot()
    weights = next(f.path for f in snap.files if f.path.endswith(".safetensors"))
    hub.faults.tamper.add(weights)
    try:
        with pytest.raises(PublishError) as info:
            publish(snap, dest, RegistryClient(registry.host, insecure=True))
    finally:
        hub.faults.tamper.discard(weights)
    assert info.value.reason == Reason.PUBLICATION_FAILED
    assert weights in info.value.message
    assert tags(registry, dest) == []


def test_hugging_face_tampered_config_fails_in_adapter(hub: HubStandIn, registry: RegistryServer,
                                                       tmp_path: Path) -> None:
    model = make_safetensors_model(tmp_path / "m")
    hub.add_repo("acme/tampered-config", model)
    dest = destination(registry)
    snap = HuggingFaceSource("https://huggingface.co/acme/tampered-config", token=None, endpoint=hub.endpoint,
                             policy=FAST).snapshot()
    hub.faults.tamper.add("config.json")
    try:
        with pytest.raises(SourceError) as info:
            publish(snap, dest, RegistryClient(registry.host, insecure=True))
    finally:
        hub.faults.tamper.discard("config.json")
    assert info.value.reason == Reason.PUBLICATION_FAILED
    assert "config.json" in info.value.message
    assert tags(registry, dest) == []


def test_ollama_model_published(registry: RegistryServer, tmp_path: Path) -> None:
    gguf_file = make_gguf(tmp_path / "m.gguf", arch="qwen3", chat_template=PLAIN_TEMPLATE, size_label="1B")
    name = f"e2e{uuid.uuid4().hex[:8]}"
    pushed = push_ollama_model(
        registry.url, name, "1b",
        layers=[("model", gguf_file), ("template", b"{{ .Prompt }}"), ("params", json.dumps({"top_k": 20}).encode()),
                ("license", b"Apache-2.0")],
    )
    dest = destination(registry)
    snap = OllamaSource(f"https://ollama.com/library/{name}:1b", registry=registry.url, retry=FAST.retry, timeout=(FAST.connect_timeout, FAST.read_timeout)).snapshot()
    result = publish(snap, dest, RegistryClient(registry.host, insecure=True))
    assert result["source"] == {"resolvedType": "Ollama", "resolvedRevision": "1b", "remoteDigest": pushed.digest}
    assert result["resolved"]["format"] == "GGUF"
    layers = layer_paths(registry, dest, result["artifact"]["digest"])
    model_layer = next(d for d in pushed.manifest["layers"] if d["mediaType"].endswith(".model"))
    assert layers["model.gguf"] == model_layer["digest"]
    assert tags(registry, dest) == ["latest"]


def run_worker(args: list[str], env: dict[str, str], result: Path) -> dict:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "jobs", "publish", *args, "--result-file", str(result)],
                          env={**os.environ, "PYTHONPATH": str(root), **env}, cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert result.exists(), proc.stderr
    return json.loads(result.read_text())


def test_worker_cli_private_repo_with_token_file(hub: HubStandIn, registry: RegistryServer,
                                                 tmp_path: Path) -> None:
    """``python -m jobs publish``: HF_ENDPOINT and --auth-file reach the adapter."""
    model = make_safetensors_model(tmp_path / "m")
    hub.tokens = frozenset({"hf_secret"})
    repo = hub.add_repo("acme/private-cli", model, private=True, granted={"hf_secret"})
    dest = destination(registry)
    base = ["--source", "https://huggingface.co/acme/private-cli", "--destination",
            f"{dest.registry}/{dest.repository}", "--insecure-registry"]
    env = {"HF_ENDPOINT": hub.endpoint}
    denied = run_worker(base, env, tmp_path / "denied.json")
    assert denied["error"]["reason"] == "PublicationFailed"
    assert "not found, or it is private" in denied["error"]["message"]
    token = tmp_path / "token"
    token.write_text("hf_secret\n")
    ok = run_worker([*base, "--auth-file", str(token)], env, tmp_path / "ok.json")
    assert "error" not in ok, ok
    assert ok["source"]["resolvedRevision"] == repo.commit
    assert tags(registry, dest) == ["latest"]
