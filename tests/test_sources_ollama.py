"""The Ollama adapter against a real registry holding Ollama-shaped models."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.models import PLAIN_TEMPLATE, make_gguf
from devstack.ollama_registry import OCI_MANIFEST, BlobRedirector, push_ollama_model
from devstack.registry import RegistryServer
from lib.api.types import Reason
from lib.oci.manifests import parse_image_manifest as parse_manifest
from lib.retry import RetryPolicy
from lib.sources.base import SourceError, SourceFile, SourceSnapshot
from lib.sources.ollama import (
    MODEL,
    Descriptor,
    OllamaSource,
    config_hints,
    layer_files,
)
from lib.sources.urls import parse_source_url

FAST = RetryPolicy(attempts=2, base_delay=0.01)
TEMPLATE = b"{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}<|assistant|>"
PARAMS = json.dumps({"stop": ["<|user|>"], "temperature": 0.7}).encode()


def read_all(f: SourceFile, offset: int = 0) -> bytes:
    with f.open(offset) as chunks:
        return b"".join(chunks)


def unique(prefix: str = "m") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", chat_template=PLAIN_TEMPLATE,
                     n_tensors=4, tensor_elems=4096)


def standard_layers(gguf_file: Path) -> list[tuple[str, bytes | Path]]:
    return [
        ("model", gguf_file),
        ("template", TEMPLATE),
        ("system", b"You are a helpful assistant."),
        ("params", PARAMS),
        ("license", b"Apache License 2.0"),
        ("license", b"Acceptable use policy"),
    ]


def src(registry_url: str, url: str) -> OllamaSource:
    return OllamaSource(parse_source_url(url), registry=registry_url, retry=FAST, timeout=(2, 5))


def check_files(snap: SourceSnapshot, blobs: dict[str, bytes | Path]) -> None:
    for f in snap.files:
        data = read_all(f)
        assert f.size == len(data)
        assert f.sha256 == hashlib.sha256(data).hexdigest()
        expected = blobs[f"sha256:{f.sha256}"]
        assert data == (expected if isinstance(expected, bytes) else expected.read_bytes())


def test_library_model(registry: RegistryServer, gguf_file: Path) -> None:
    name = unique()
    pushed = push_ollama_model(registry.url, name, "1b", layers=standard_layers(gguf_file))
    snap = src(registry.url, f"https://ollama.com/library/{name}:1b").snapshot()
    assert snap.resolved_type == "Ollama"
    assert snap.revision == "1b"
    assert snap.remote_digest == pushed.digest
    assert [f.path for f in snap.files] == ["template", "system.txt", "params.json", "LICENSE", "LICENSE-2",
                                            "model.gguf"]
    assert snap.files[-1].kind == MODEL
    assert snap.files[-1].sha256 == hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    check_files(snap, pushed.blobs)
    assert snap.hints == {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "1B",
        "file_type": "Q4_K_M",
        "ollama_model": f"library/{name}:1b",
    }


def test_oci_manifest_default_tag_projector_and_unknown_layers(registry: RegistryServer, gguf_file: Path,
                                                                tmp_path: Path) -> None:
    name = unique()
    projector = make_gguf(tmp_path / "mmproj.gguf", arch="clip", context_length=None)
    pushed = push_ollama_model(
        registry.url, name, "latest",
        layers=[("model", gguf_file), ("projector", projector), ("application/vnd.ollama.image.future", b"?"),
                ("messages", b"[]")],
        manifest_media_type=OCI_MANIFEST,
    )
    snap = src(registry.url, f"https://ollama.com/library/{name}").snapshot()
    assert snap.revision == "latest" and snap.remote_digest == pushed.digest
    assert [f.path for f in snap.files] == ["messages.json", "model.gguf", "mmproj.gguf"]
    assert snap.hints["skipped_layers"] == ["application/vnd.ollama.image.future"]
    check_files(snap, pushed.blobs)


def test_open_at_offset(registry: RegistryServer, gguf_file: Path) -> None:
    name = unique()
    push_ollama_model(registry.url, name, layers=[("model", gguf_file)])
    snap = src(registry.url, f"https://ollama.com/library/{name}").snapshot()
    assert read_all(snap.files[0], 100) == gguf_file.read_bytes()[100:]


# --------------------------------------------------------------------------
# Redirects to object storage
# --------------------------------------------------------------------------


@pytest.fixture
def redirector(registry: RegistryServer) -> Iterator[BlobRedirector]:
    with BlobRedirector(registry.url) as r:
        yield r


def test_blob_redirect_followed_to_other_host(redirector: BlobRedirector, registry: RegistryServer,
                                              gguf_file: Path) -> None:
    name = unique()
    pushed = push_ollama_model(registry.url, name, layers=standard_layers(gguf_file))
    snap = src(redirector.url, f"https://ollama.com/library/{name}").snapshot()
    check_files(snap, pushed.blobs)
    store = [s for s in redirector.seen if s.host.startswith("127.0.0.2:")]
    # The config and all six layers came from the object store, without credentials.
    assert len(store) == 7
    assert all("Authorization" not in s.headers for s in store)
    front_blobs = [s for s in redirector.seen if s.host.startswith("127.0.0.1:") and "/blobs/" in s.path]
    assert len(front_blobs) == 7


def test_tampered_layer_stream_differs_from_descriptor(redirector: BlobRedirector, registry: RegistryServer,
                                                       gguf_file: Path) -> None:
    """The declared sha256 is the descriptor's: the pipeline's hash of the stream will not match it."""
    name = unique()
    pushed = push_ollama_model(registry.url, name, layers=standard_layers(gguf_file))
    template = next(d for d in pushed.manifest["layers"] if d["mediaType"].endswith("template"))
    redirector.tamper.add(template["digest"])
    snap = src(redirector.url, f"https://ollama.com/library/{name}").snapshot()
    f = next(f for f in snap.files if f.path == "template")
    data = read_all(f)
    assert f"sha256:{f.sha256}" == template["digest"]
    assert hashlib.sha256(data).hexdigest() != f.sha256


def test_tampered_model_fails_gguf_magic(redirector: BlobRedirector, registry: RegistryServer,
                                         gguf_file: Path) -> None:
    name = unique()
    pushed = push_ollama_model(registry.url, name, layers=[("model", gguf_file)])
    redirector.tamper.add(pushed.manifest["layers"][0]["digest"])
    snap = src(redirector.url, f"https://ollama.com/library/{name}").snapshot()
    with pytest.raises(SourceError) as info:
        read_all(snap.files[0])
    assert info.value.reason == Reason.PUBLICATION_FAILED
    assert "not a GGUF file" in info.value.message


def test_tampered_config_fails(redirector: BlobRedirector, registry: RegistryServer, gguf_file: Path) -> None:
    name = unique()
    pushed = push_ollama_model(registry.url, name, layers=[("model", gguf_file)])
    redirector.tamper.add(pushed.manifest["config"]["digest"])
    with pytest.raises(SourceError) as info:
        src(redirector.url, f"https://ollama.com/library/{name}").snapshot()
    assert info.value.reason == Reason.PUBLICATION_FAILED
    assert "config blob does not match its digest" in info.value.message


def test_announced_manifest_digest_must_match(redirector: BlobRedirector, registry: RegistryServer,
                                              gguf_file: Path) -> None:
    name = unique()
    push_ollama_model(registry.url, name, layers=[("model", gguf_file)])
    redirector.announce_digest = "sha256:" + "0" * 64
    with pytest.raises(SourceError) as info:
        src(redirector.url, f"https://ollama.com/library/{name}").snapshot()
    assert info.value.reason == Reason.PUBLICATION_FAILED
    assert "differs from the announced sha256:000" in info.value.message


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def snapshot_error(registry_url: str, url: str) -> SourceError:
    with pytest.raises(SourceError) as info:
        src(registry_url, url).snapshot()
    return info.value


@pytest.mark.parametrize(
    ("layers", "why"),
    [([("template", TEMPLATE)], "found 0"), ([("model", "GGUF"), ("model", "GGUF")], "found 2")],
    ids=["no-model", "two-models"],
)
def test_model_layer_count(registry: RegistryServer, gguf_file: Path, layers: list, why: str) -> None:
    name = unique()
    push_ollama_model(registry.url, name,
                      layers=[(k, gguf_file if v == "GGUF" else v) for k, v in layers])
    err = snapshot_error(registry.url, f"https://ollama.com/library/{name}")
    assert err.reason == Reason.PUBLICATION_FAILED
    assert "exactly one application/vnd.ollama.image.model layer" in err.message and why in err.message


def test_model_layer_not_gguf(registry: RegistryServer) -> None:
    name = unique()
    push_ollama_model(registry.url, name, layers=[("model", b"PK\x03\x04 not a gguf at all")])
    snap = src(registry.url, f"https://ollama.com/library/{name}").snapshot()
    with pytest.raises(SourceError) as info:
        read_all(snap.files[0])
    assert info.value.reason == Reason.PUBLICATION_FAILED
    assert "is not a GGUF file" in info.value.message


def test_model_layer_too_short(registry: RegistryServer) -> None:
    name = unique()
    push_ollama_model(registry.url, name, layers=[("model", b"GG")])
    snap = src(registry.url, f"https://ollama.com/library/{name}").snapshot()
    with pytest.raises(SourceError) as info:
        read_all(snap.files[0])
    assert "too short" in info.value.message


def test_missing_tag_and_model(registry: RegistryServer, gguf_file: Path) -> None:
    name = unique()
    push_ollama_model(registry.url, name, layers=[("model", gguf_file)])
    err = snapshot_error(registry.url, f"https://ollama.com/library/{name}:nope")
    assert err.reason == Reason.PUBLICATION_FAILED
    assert f"library/{name}:nope not found" in err.message
    err = snapshot_error(registry.url, "https://ollama.com/library/" + unique("absent"))
    assert err.reason == Reason.PUBLICATION_FAILED and "not found" in err.message


def test_config_not_json(registry: RegistryServer, gguf_file: Path) -> None:
    name = unique()
    push_ollama_model(registry.url, name, layers=[("model", gguf_file)], config=b"\x00not json")
    err = snapshot_error(registry.url, f"https://ollama.com/library/{name}")
    assert err.reason == Reason.PUBLICATION_FAILED and "config blob is not JSON" in err.message


def test_unreachable_registry_is_unavailable() -> None:
    from devstack.registry import free_port

    err = snapshot_error(f"http://127.0.0.1:{free_port()}", "https://ollama.com/library/qwen3")
    assert err.reason == Reason.SOURCE_UNAVAILABLE


def test_refuses_other_kinds() -> None:
    with pytest.raises(SourceError) as info:
        OllamaSource(parse_source_url("https://huggingface.co/a/b"))
    assert info.value.reason == Reason.UNSUPPORTED_SOURCE


# --------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------

D = "sha256:" + "a" * 64


def manifest(**over: object) -> bytes:
    doc: dict = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                 "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D, "size": 2},
                 "layers": [{"mediaType": MODEL, "digest": D, "size": 10}]}
    doc.update(over)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (manifest(schemaVersion=1), "schemaVersion"),
        (manifest(mediaType="application/vnd.oci.image.index.v1+json"), "an index"),
        (manifest(config=None), "config descriptor is not an object"),
        (manifest(layers=[]), "no layers"),
        (manifest(layers=[{"mediaType": MODEL, "digest": "sha256:xyz", "size": 1}]), "invalid digest"),
        (manifest(layers=[{"mediaType": MODEL, "digest": "md5:" + "a" * 32, "size": 1}]), "invalid digest"),
        (manifest(layers=[{"mediaType": MODEL, "digest": D, "size": -1}]), "invalid size"),
        (manifest(layers=[{"mediaType": MODEL, "digest": D, "size": True}]), "invalid size"),
        (manifest(layers=[{"digest": D, "size": 1}]), "no mediaType"),
    ],
    ids=["truncated", "array", "v1", "index", "no-config", "no-layers", "bad-digest", "md5", "negative-size",
         "bool-size", "no-media-type"],
)
def test_parse_manifest_rejects(body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_manifest(body)


def test_parse_manifest_uses_content_type_when_body_has_none() -> None:
    doc = json.loads(manifest())
    del doc["mediaType"]
    body = json.dumps(doc).encode()
    config, layers = parse_manifest(body, "application/vnd.oci.image.manifest.v1+json")
    assert config.size == 2 and layers == [Descriptor(MODEL, D, 10)]
    with pytest.raises(ValueError, match="an index"):
        parse_manifest(body, "application/vnd.docker.distribution.manifest.list.v2+json")


def test_layer_files_names() -> None:
    p = "application/vnd.ollama.image."
    layers = [Descriptor(p + k, D, 1) for k in ("license", "model", "projector", "projector", "adapter",
                                                "template", "license", "license", "system", "params")]
    files, skipped = layer_files(layers)
    assert [name for name, _ in files] == ["LICENSE", "adapter.gguf", "template", "LICENSE-2", "LICENSE-3",
                                           "system.txt", "params.json", "model.gguf", "mmproj.gguf",
                                           "mmproj-2.gguf"]
    assert skipped == []


def test_config_hints_keep_known_typed_fields() -> None:
    assert config_hints({"model_family": "qwen3", "file_type": "Q4_K_M", "model_type": 8,
                         "model_families": ["qwen3", 1], "os": "linux"}) == {"model_family": "qwen3",
                                                                            "file_type": "Q4_K_M"}
    assert config_hints([1]) == {}
