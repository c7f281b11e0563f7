"""The publish pipeline and `python -m jobs publish` against a real registry."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from devstack import models
from lib.oci.client import RegistryClient
from lib.oci.reference import Reference
from lib.publish import publish
from lib.sources import local
from lib.sources.base import SourceFile, SourceSnapshot

ROOT = Path(__file__).resolve().parent.parent


def run_publish(source: Path | str, dest: str, tmp_path: Path, *extra: str) -> tuple[int, dict, str]:
    result = tmp_path / f"result-{abs(hash((str(source), dest, extra)))}.json"
    p = subprocess.run(
        [sys.executable, "-m", "jobs", "publish", "--source", str(source), "--destination", dest,
         "--result-file", str(result), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    return p.returncode, json.loads(result.read_text()), p.stderr


def manifest(registry, repo: str, ref: str) -> dict:
    r = requests.get(
        f"{registry.url}/v2/{repo}/manifests/{ref}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10,
    )
    r.raise_for_status()
    return r.json()


def tags(registry, repo: str) -> list[str]:
    r = requests.get(f"{registry.url}/v2/{repo}/tags/list", timeout=10)
    if r.status_code == 404:
        return []
    return r.json().get("tags") or []


def test_gguf_publish_end_to_end(registry, tmp_path):
    gguf = models.make_gguf(tmp_path / "m" / "tiny.gguf", chat_template="{% if tools %}{{ tools }}{% endif %}")
    code, result, err = run_publish(gguf, f"{registry.host}/t/gguf", tmp_path, "--insecure-registry")
    assert code == 0, err
    assert result["resolved"]["format"] == "GGUF"
    assert result["resolved"]["architecture"] == "llama"
    assert result["resolved"]["quantization"] == "Q4_K_M"
    assert "ToolCalling" in result["resolved"]["supportedFeatures"]
    assert result["source"]["resolvedType"] == "Local"
    digest = result["artifact"]["digest"]
    assert result["artifact"]["uri"] == f"{registry.host}/t/gguf@{digest}"
    m = manifest(registry, "t/gguf", digest)
    assert m["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert m["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    (layer,) = m["layers"]
    assert layer["mediaType"] == "application/vnd.cncf.model.weight.v1.raw"
    assert layer["annotations"]["org.cncf.model.filepath"] == "tiny.gguf"
    assert layer["size"] == gguf.stat().st_size
    assert "progress:" in err


def test_same_input_same_digest_and_no_bytes_resent(registry, tmp_path, minilm_dir):
    repo = "t/minilm"
    client = RegistryClient(registry.host, insecure=True)
    dest = Reference.parse(f"{registry.host}/{repo}")
    first = publish(local.snapshot(str(minilm_dir)), dest, client)
    sent: list[str] = []
    client.session.hooks["response"].append(
        lambda r, *a, **kw: sent.append(r.request.method) if r.request.method in ("PATCH", "POST") else None
    )
    second = publish(local.snapshot(str(minilm_dir)), dest, client)
    assert second["artifact"]["digest"] == first["artifact"]["digest"]
    assert sent == [], "a re-publish must not open uploads or send blob bytes"
    assert first["resolved"]["format"] == "Safetensors"
    assert "Embeddings" in first["resolved"]["supportedEndpointTypes"]
    paths = {layer["annotations"]["org.cncf.model.filepath"] for layer in manifest(registry, repo, first["artifact"]["digest"])["layers"]}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= paths


def blob(registry, repo: str, digest: str) -> bytes:
    r = requests.get(f"{registry.url}/v2/{repo}/blobs/{digest}", timeout=10)
    r.raise_for_status()
    return r.content


def test_same_model_from_any_path_into_any_repository_has_one_digest(registry, tmp_path, minilm_dir):
    """The digest rule (docs/publish.md): files' bytes and paths plus what the source says, nothing else."""
    import os
    import uuid

    one, two = tmp_path / "a" / "minilm", tmp_path / "elsewhere" / "copy-of-it"
    shutil.copytree(minilm_dir, one, copy_function=shutil.copy)  # copies get new mtimes...
    shutil.copytree(minilm_dir, two, copy_function=shutil.copy)
    for p in two.rglob("*"):
        if p.is_file():
            p.chmod(0o600)  # ...another mode...
            os.utime(p, (1_000_000_000, 1_000_000_000))  # ...and another date
    run = uuid.uuid4().hex[:8]
    repo_one, repo_two = f"t/repro-{run}/first", f"t/repro-{run}/second"
    code, first, err = run_publish(one, f"{registry.host}/{repo_one}", tmp_path, "--insecure-registry",
                                   "--model-name", "minilm")
    assert code == 0, err
    code, second, err = run_publish(f"{two}/", f"{registry.host}/{repo_two}", tmp_path, "--insecure-registry",
                                    "--model-name", "minilm")
    assert code == 0, err
    digest = first["artifact"]["digest"]
    assert second["artifact"]["digest"] == digest
    m = manifest(registry, repo_two, digest)
    config = blob(registry, repo_two, m["config"]["digest"]).decode()
    for local_fact in (str(tmp_path), "first", "second", run, "1970", "2001-09-09"):
        assert local_fact not in config and local_fact not in json.dumps(m), local_fact
    assert json.loads(config)["descriptor"] == {"name": "minilm", "family": "bert", "licenses": ["Apache-2.0"]}


def test_diffusers_tree(registry, tmp_path):
    tree = models.make_diffusers_tree(tmp_path / "sd")
    code, result, err = run_publish(tree, f"{registry.host}/t/sd", tmp_path, "--insecure-registry")
    assert code == 0, err
    assert result["resolved"]["format"] == "Diffusers"
    assert "ImageGeneration" in result["resolved"]["supportedEndpointTypes"]


@pytest.mark.parametrize(
    "make, why",
    [
        (lambda d: models.corrupt_bytes(models.make_gguf(d / "src.gguf"), d / "m" / "bad.gguf", 0, b"GGUX"), "magic"),
        (lambda d: models.truncate_copy(models.make_gguf(d / "src.gguf"), d / "m" / "cut.gguf", 40), "truncat"),
    ],
    ids=["bad-magic", "truncated"],
)
def test_broken_gguf_is_refused_and_nothing_tagged(registry, tmp_path, make, why):
    (tmp_path / "m").mkdir()
    path = make(tmp_path)
    repo = f"t/broken-{why}"
    code, result, err = run_publish(path.parent, f"{registry.host}/{repo}", tmp_path, "--insecure-registry")
    assert code == 2, err
    assert result["error"]["reason"] == "PublicationFailed"
    assert why in result["error"]["message"].lower()
    assert tags(registry, repo) == []


def test_lying_safetensors_header_refused(registry, tmp_path):
    d = tmp_path / "st"
    models.make_safetensors_model(d)
    variants = models.safetensors_variants(tmp_path / "variants")
    name, bad = next((k, v) for k, v in variants.items() if "bounds" in k or "offset" in k)
    target = next(d.glob("*.safetensors"))
    shutil.copy(bad, target)
    code, result, err = run_publish(d, f"{registry.host}/t/liar", tmp_path, "--insecure-registry")
    assert code == 2, err
    assert result["error"]["reason"] == "PublicationFailed"
    assert target.name in result["error"]["message"]
    assert tags(registry, "t/liar") == []


def test_layout_errors_name_what_is_missing(registry, tmp_path):
    d = tmp_path / "noconfig"
    models.make_safetensors_model(d)
    (d / "config.json").unlink()
    code, result, err = run_publish(d, f"{registry.host}/t/noconfig", tmp_path, "--insecure-registry")
    assert code == 2
    assert "config.json" in result["error"]["message"]


def test_declared_digest_mismatch_fails_and_leaves_nothing_tagged(registry, tmp_path):
    gguf = models.make_gguf(tmp_path / "x.gguf")
    data = gguf.read_bytes()
    liar = SourceFile(path="x.gguf", open=local._opener(gguf), size=len(data), sha256="0" * 64)
    client = RegistryClient(registry.host, insecure=True)
    from lib.publish import PublishError

    with pytest.raises(PublishError) as e:
        publish(SourceSnapshot("Local", [liar]), Reference.parse(f"{registry.host}/t/mismatch"), client)
    assert "x.gguf" in e.value.message
    assert tags(registry, "t/mismatch") == []


def test_htpasswd_tls_registry_via_docker_config(tls_registry, tmp_path):
    gguf = models.make_gguf(tmp_path / "m.gguf")
    import base64

    auth = tmp_path / "config.json"
    cred = base64.b64encode(b"alice:wonderland").decode()
    auth.write_text(json.dumps({"auths": {tls_registry.host: {"auth": cred}}}))
    code, result, err = run_publish(
        gguf, f"{tls_registry.host}/t/tls", tmp_path,
        "--registry-auth-file", str(auth), "--registry-ca-file", str(tls_registry.tls_cert_ca),
    )
    assert code == 0, err
    # Without the CA the same publish fails with a clear TLS message, not a hang.
    code, result, err = run_publish(gguf, f"{tls_registry.host}/t/tls2", tmp_path, "--registry-auth-file", str(auth))
    assert code != 0
    assert "certificate" in result["error"]["message"].lower() or "tls" in result["error"]["message"].lower()
    # A wrong password is refused.
    auth.write_text(json.dumps({"auths": {tls_registry.host: {"auth": base64.b64encode(b'alice:nope').decode()}}}))
    code, result, err = run_publish(
        gguf, f"{tls_registry.host}/t/tls3", tmp_path,
        "--registry-auth-file", str(auth), "--registry-ca-file", str(tls_registry.tls_cert_ca),
    )
    assert code != 0 and result["error"]["reason"] in ("RegistryUnavailable", "PublicationFailed")


def test_a_missing_source_path_is_unsupported(registry, tmp_path):
    code, result, _ = run_publish(tmp_path / "nope", f"{registry.host}/t/none", tmp_path, "--insecure-registry")
    assert code == 2 and result["error"]["reason"] == "UnsupportedSource"


def test_a_bundle_inside_one_top_directory_is_published_from_below_it(registry, tmp_path):
    models.make_safetensors_model(tmp_path / "outer" / "my-model")
    code, result, err = run_publish(tmp_path / "outer", f"{registry.host}/t/bundle", tmp_path, "--insecure-registry")
    assert code == 0, err
    paths = {layer["annotations"]["org.cncf.model.filepath"] for layer in manifest(registry, "t/bundle", result["artifact"]["digest"])["layers"]}
    assert "config.json" in paths and not any(p.startswith("my-model/") for p in paths)


def test_without_a_digest_cache_files_are_hashed_first_and_still_skipped(registry, tmp_path):
    gguf = models.make_gguf(tmp_path / "nc" / "m.gguf")
    client = RegistryClient(registry.host, insecure=True)
    dest = Reference.parse(f"{registry.host}/t/nocache")
    snap = local.snapshot(str(gguf.parent), cache=False)
    assert all(f.sha256 for f in snap.files), "without a cache every file is hashed before it is sent"
    first = publish(snap, dest, client)
    posts: list[str] = []
    client.session.hooks["response"].append(
        lambda r, *a, **kw: posts.append(r.request.url) if r.request.method == "POST" else None
    )
    again = publish(local.snapshot(str(gguf.parent), cache=False), dest, client)
    assert again["artifact"]["digest"] == first["artifact"]["digest"] and posts == []


def test_the_digest_cache_remembers_what_was_streamed(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("AI_MODELS_CACHE_DIR", str(tmp_path / "cache"))
    gguf = models.make_gguf(tmp_path / "c" / "m.gguf")
    snap = local.snapshot(str(gguf.parent))
    assert [f.sha256 for f in snap.files] == [None], "an unknown file is streamed without a pre-pass"
    publish(snap, Reference.parse(f"{registry.host}/t/cache"), RegistryClient(registry.host, insecure=True))
    import hashlib

    assert local.snapshot(str(gguf.parent)).files[0].sha256 == hashlib.sha256(gguf.read_bytes()).hexdigest()
    gguf.write_bytes(gguf.read_bytes())  # a rewrite changes the mtime: the cached digest no longer applies
    import os

    os.utime(gguf, ns=(1, 1))
    assert local.snapshot(str(gguf.parent)).files[0].sha256 is None
