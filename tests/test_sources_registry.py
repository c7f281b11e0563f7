"""The source registry (``lib.sources.registry``): one entry per source, read by hooks and worker alike.

The last tests are the extension example: a ``file+test://`` source that
exists only in this file (one ``SourceEntry`` plus its adapter function) gets
a publish Job from the Model hook and is published by ``python -m jobs
publish`` into a real registry, with no other file touched.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devstack.models import make_gguf
from devstack.registry import RegistryServer
from hooks import model as hooks_model
from jobs import cli as jobs_cli
from lib.api.types import Reason
from lib.api.worker_cli import Publish
from lib.sources import local
from lib.sources import registry as sources
from lib.sources.adapter import ArtifactCopy, SourceOptions
from lib.sources.base import SourceError, SourceSnapshot
from lib.sources.urls import parse_source_url
from tests.support import hookreq as hr
from tests.test_model_hooks import CFG as HOOK_CONFIG

ROOT = Path(__file__).resolve().parents[1]
CFG = HOOK_CONFIG  # the Model hook tests' configuration
DIGEST = "sha256:" + "e" * 64


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        pytest.param("https://huggingface.co/BAAI/bge-m3", "HuggingFace", id="hf"),
        pytest.param("https://hf.co/BAAI/bge-m3/tree/v1", "HuggingFace", id="hf-short-host"),
        pytest.param("https://ollama.com/library/qwen3:0.6b", "Ollama", id="ollama"),
    ],
)
def test_model_urls_resolve_to_their_entry(url, resolved):
    entry = sources.for_url(url)
    assert entry.resolved_type == resolved and entry.user_url
    assert entry.secret_keys == ("token", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    assert sources.for_source(url) is entry


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("", id="empty"),
        pytest.param("https://example.com/models/llama.gguf", id="unknown-host"),
        pytest.param("http://huggingface.co/BAAI/bge-m3", id="http"),
        pytest.param("https://huggingface.co/datasets/x", id="dataset"),
        pytest.param(f"oci://reg:5000/models/x@{DIGEST}", id="catalog-reference"),
        pytest.param("/models/x", id="local-path"),
        pytest.param("https://[::1", id="not-a-url"),
    ],
)
def test_refused_model_urls_keep_the_parsers_message(url):
    """Only user entries take a spec.source.url; the message is parse_source_url's, as before."""
    with pytest.raises(SourceError) as got:
        sources.for_url(url)
    with pytest.raises(SourceError) as expected:
        parse_source_url(url)
    assert got.value.reason == Reason.UNSUPPORTED_SOURCE and got.value.message == expected.value.message


@pytest.mark.parametrize(
    ("source", "entry"),
    [
        pytest.param(f"oci://reg:5000/models/x@{DIGEST}", sources.CATALOG, id="catalog"),
        pytest.param(f"oci://huggingface.co/models/x@{DIGEST}", sources.CATALOG, id="catalog-on-any-host"),
        pytest.param("/scratch/upload/model.gguf", sources.LOCAL, id="absolute-path"),
        pytest.param("models/x", sources.LOCAL, id="relative-path"),
        pytest.param("https://ollama.com/library/qwen3", sources.OLLAMA, id="ollama"),
    ],
)
def test_worker_sources_resolve_to_their_entry(source, entry):
    assert sources.for_source(source) is entry


def test_unknown_worker_url_is_unsupported():
    with pytest.raises(SourceError) as e:
        sources.for_source("s3://bucket/model")
    assert e.value.reason == Reason.UNSUPPORTED_SOURCE


def test_catalog_entry_copies_the_artifact_without_io():
    options = SourceOptions(auth_file="/a", insecure=True)
    opened = sources.open_source(f"oci://reg:5000/models/x@{DIGEST}", options)
    assert opened == ArtifactCopy(f"reg:5000/models/x@{DIGEST}", options)


def test_every_lazy_adapter_names_a_function():
    for entry in sources.SOURCES:
        qualname = entry.adapter.__qualname__
        if qualname.startswith("lazy("):
            module, _, function = qualname[len("lazy(") : -1].rpartition(".")
            assert callable(getattr(importlib.import_module(module), function)), qualname


def test_hook_service_does_not_load_source_clients():
    code = "import sys, hooks.app; print(sorted(m for m in sys.modules if m.startswith('lib.sources.')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.replace("'", '"')))
    assert "lib.sources.registry" in loaded
    assert not loaded & {"lib.sources.http", "lib.sources.huggingface", "lib.sources.ollama"}


def test_local_entry_opens_a_path(tmp_path):
    make_gguf(tmp_path / "model.gguf")
    snap = sources.open_source(str(tmp_path), SourceOptions())
    assert isinstance(snap, SourceSnapshot) and [f.path for f in snap.files] == ["model.gguf"]


# -- the extension example: a source defined in this file only ---------------------------------

FAKE_SCHEME = "file+test"


def open_test_files(source: str, options: SourceOptions) -> SourceSnapshot:
    """The fake source's adapter: ``file+test:///DIR`` is a local directory reported as TestFiles."""
    snap = local.snapshot(urlsplit(source).path)
    snap.resolved_type = "TestFiles"
    return snap


def _validate_test_url(url: str) -> None:
    if not urlsplit(url).path.startswith("/"):
        raise SourceError(Reason.UNSUPPORTED_SOURCE, f"{url!r}: expected {FAKE_SCHEME}:///DIR")


FAKE = sources.SourceEntry(
    kind="test-files",
    resolved_type="TestFiles",
    matches=lambda s: s.startswith(f"{FAKE_SCHEME}://"),
    adapter=open_test_files,
    validate=_validate_test_url,
    secret_keys=("password",),
)


@pytest.fixture
def with_fake_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "SOURCES", (*sources.SOURCES, FAKE))


def test_without_its_entry_the_fake_source_is_unsupported():
    a = hooks_model.model_sync(hr.sync_request(hr.model(source={"url": "file+test:///models/x"})), CFG)
    assert a["status"]["phase"] == "Failed" and not [c for c in a["children"] if c["kind"] == "Job"]


def test_a_model_naming_the_new_source_gets_a_publish_job(with_fake_source):
    parent = hr.model(source={"url": "file+test:///models/x", "authSecretRef": {"name": "creds"}})
    secret = hr.secret("creds", "ai-demo", {"password": "p"})
    a = hooks_model.model_sync(hr.sync_request(parent, related=[secret]), CFG)
    assert a["status"]["phase"] == "Pending" and a["status"]["source"] == {"resolvedType": "TestFiles"}
    [job] = [c for c in a["children"] if c["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    command = Publish.parse(pod["containers"][0]["args"])
    assert command.source == "file+test:///models/x" and command.auth_file
    [auth] = [v for v in pod["volumes"] if v["name"] == "source-auth"]
    assert auth["secret"]["items"] == [{"key": "password", "path": "token"}]  # the entry's key


def test_the_worker_publishes_the_new_source_through_the_registry(
    with_fake_source, registry: RegistryServer, tmp_path: Path
):
    model = tmp_path / "model"
    model.mkdir()
    make_gguf(model / "model.gguf")
    result = tmp_path / "result.json"
    argv = Publish(
        source=f"file+test://{model}",
        destination=f"{registry.host}/sources-registry/{uuid.uuid4().hex[:12]}",
        model_name="x",
        insecure_registry=True,
        result_file=str(result),
    ).argv()
    assert jobs_cli.main(argv) == 0, result.read_text()
    out = json.loads(result.read_text())
    assert out["source"]["resolvedType"] == "TestFiles" and out["artifact"]["digest"].startswith("sha256:")
