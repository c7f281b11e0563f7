"""``python -m jobs materialize`` against a real registry with a real ModelPack artifact."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

import lib.pull as mat
from devstack.models import make_gguf
from devstack.registry import RegistryServer
from jobs.cli import main
from lib import credentials, modelpack
from lib.oci.client import RegistryClient
from lib.oci.errors import Unreachable


def push_artifact(client: RegistryClient, repo: str, files: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    """Push a ModelPack artifact of ``files``; returns (manifest digest, path → blob digest)."""
    layers = []
    digests = {}
    for path, data in files.items():
        role = "weight" if path.endswith(".gguf") else "config"
        d = client.push_blob(repo, [data[i:i + 65536] for i in range(0, len(data), 65536)])
        layers.append(modelpack.layer_descriptor(path, role, d.digest, d.size))
        digests[path] = d.digest
    config = modelpack.build_config({"format": "GGUF", "family": "llama"}, layers, name=repo.rsplit("/", 1)[-1])
    cd = client.push_bytes(repo, config, modelpack.CONFIG)
    body = modelpack.build_manifest(modelpack.descriptor(modelpack.CONFIG, cd.digest, cd.size), layers)
    return client.put_manifest(repo, "v1", body, modelpack.OCI_MANIFEST), digests


def blob_file(registry: RegistryServer, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    storage = registry.storage or registry.workdir / "storage"
    return storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


@pytest.fixture
def artifact(registry: RegistryServer, tmp_path: Path, request):
    """A fresh artifact (unique bytes, so tampering with it touches no other test)."""
    gguf = make_gguf(tmp_path / "src" / "model.gguf", tensor_elems=4096, extra_kv={"test.id": request.node.name})
    files = {
        "model.gguf": gguf.read_bytes(),
        "config.json": json.dumps({"test": request.node.name}).encode(),
        "sub/dir/README.md": os.urandom(1000),
    }
    repo = f"materialize/{hashlib.sha256(request.node.name.encode()).hexdigest()[:12]}"
    client = RegistryClient(registry.host, insecure=True)
    digest, digests = push_artifact(client, repo, files)
    return {"repo": repo, "digest": digest, "files": files, "digests": digests,
            "uri": f"{registry.host}/{repo}@{digest}", "client": client}


def cli(artifact: dict, into: Path, *extra: str) -> int:
    return main(["materialize", "--artifact", artifact["uri"], "--into", str(into), "--insecure-registry", *extra])


def assert_materialized(into: Path, artifact: dict) -> None:
    for path, data in artifact["files"].items():
        assert (into / path).read_bytes() == data, path
    assert (into / ".ai-models-digest").read_text().strip() == artifact["digest"]
    assert not list(into.rglob("*.partial"))


def test_materialize_real_artifact(artifact, tmp_path, capsys):
    into = tmp_path / "models" / "bge-m3"
    assert cli(artifact, into) == 0
    assert_materialized(into, artifact)
    assert "3 files" in capsys.readouterr().err


def test_second_run_is_skipped_without_the_registry(artifact, tmp_path, capsys):
    into = tmp_path / "m"
    assert cli(artifact, into) == 0
    dead = artifact["uri"].replace(artifact["uri"].split("/")[0], "127.0.0.1:9")  # nothing listens there
    assert main(["materialize", "--artifact", dead, "--into", str(into), "--insecure-registry"]) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_corrupted_blob_fails_and_leaves_no_file(artifact, registry, tmp_path, capsys):
    path = blob_file(registry, artifact["digests"]["model.gguf"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one bit flipped in the registry's storage
    path.write_bytes(bytes(data))
    into = tmp_path / "m"
    assert cli(artifact, into) != 0
    err = capsys.readouterr().err
    assert "corrupt" in err and artifact["digests"]["model.gguf"] in err
    assert not (into / "model.gguf").exists()
    assert not (into / "model.gguf.partial").exists()
    assert not (into / ".ai-models-digest").exists()


def test_resume_of_a_partial_file(artifact, tmp_path):
    into = tmp_path / "m"
    into.mkdir()
    data = artifact["files"]["model.gguf"]
    half = len(data) // 2
    (into / "model.gguf.partial").write_bytes(data[:half])
    messages: list[str] = []
    s = mat.materialize(artifact["client"], artifact["repo"], artifact["digest"], into, log=messages.append)
    assert_materialized(into, artifact)
    assert s.reused_bytes == half  # only the rest was fetched
    assert s.downloaded_bytes == sum(len(v) for v in artifact["files"].values()) - half
    assert any("resuming model.gguf" in m for m in messages)


def test_corrupt_partial_is_discarded_and_the_next_run_succeeds(artifact, tmp_path):
    into = tmp_path / "m"
    into.mkdir()
    (into / "model.gguf.partial").write_bytes(b"\0" * 100)
    assert cli(artifact, into) != 0
    assert not (into / "model.gguf").exists() and not (into / "model.gguf.partial").exists()
    assert cli(artifact, into) == 0
    assert_materialized(into, artifact)


def test_connection_drop_resumes_within_one_run(artifact, tmp_path, monkeypatch):
    """The first GET breaks off after one chunk; the retry asks for the rest with a Range."""
    monkeypatch.setattr(mat, "RETRY", mat.RetryPolicy(attempts=3, base_delay=0.0))
    client = artifact["client"]
    real_open = client.open_blob
    offsets: list[int] = []

    class Flaky:
        def __init__(self, repo, digest, offset=0, verify=True):
            self.cm = real_open(repo, digest, offset=offset, verify=verify)
            self.first = not offsets and digest == artifact["digests"]["model.gguf"]
            offsets.append(offset) if digest == artifact["digests"]["model.gguf"] else None

        def __enter__(self):
            chunks = self.cm.__enter__()
            if not self.first:
                return chunks

            def broken():
                yield next(chunks)[:1000]
                raise Unreachable("connection reset by peer")
            return broken()

        def __exit__(self, *exc):
            return self.cm.__exit__(None, None, None)

    monkeypatch.setattr(client, "open_blob", lambda repo, digest, *, offset=0, verify=True: Flaky(repo, digest, offset, verify))
    mat.materialize(client, artifact["repo"], artifact["digest"], tmp_path / "m", log=lambda m: None)
    assert_materialized(tmp_path / "m", artifact)
    assert offsets == [0, 1000]


def test_existing_verified_file_is_reused_and_a_wrong_one_replaced(artifact, tmp_path):
    into = tmp_path / "m"
    into.mkdir()
    (into / "model.gguf").write_bytes(artifact["files"]["model.gguf"])
    (into / "config.json").write_bytes(b"stale")
    s = mat.materialize(artifact["client"], artifact["repo"], artifact["digest"], into, log=lambda m: None)
    assert_materialized(into, artifact)
    assert s.reused_bytes == len(artifact["files"]["model.gguf"])


@pytest.mark.parametrize("packaging", ["tar", "tar+gzip", "tar+zstd"])
def test_tar_layers_are_unpacked(registry, tmp_path, packaging):
    """Other ModelPack tools push companion files as tar layers; a catalog import keeps them."""
    files = {"tokenizer/vocab.txt": b"a\nb\n", "tokenizer/merges.txt": os.urandom(3000)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    blob = {"tar": raw, "tar+gzip": gzip.compress(raw),
            "tar+zstd": zstandard.ZstdCompressor().compress(raw)}[packaging]
    client = RegistryClient(registry.host, insecure=True)
    repo = f"materialize/tar-{packaging.replace('+', '-')}"
    weights = make_gguf(tmp_path / "w.gguf").read_bytes()
    dw = client.push_blob(repo, [weights])
    dt = client.push_blob(repo, [blob])
    layers = [modelpack.layer_descriptor("model.gguf", "weight", dw.digest, dw.size),
              modelpack.descriptor(f"application/vnd.cnai.model.weight.config.v1.{packaging}", dt.digest, dt.size,
                                   {modelpack.LEGACY_ANNOTATION_FILEPATH: "tokenizer"})]
    cd = client.push_bytes(repo, b"{}", "application/vnd.cnai.model.config.v1+json")
    body = modelpack.canonical_json({"schemaVersion": 2, "mediaType": modelpack.OCI_MANIFEST,
                                     "config": modelpack.descriptor("application/vnd.cnai.model.config.v1+json",
                                                                    cd.digest, cd.size),
                                     "layers": layers})
    digest = client.put_manifest(repo, "v1", body, modelpack.OCI_MANIFEST)
    into = tmp_path / "m"
    s = mat.materialize(client, repo, digest, into, log=lambda m: None)
    assert s.files == 3
    for name, data in files.items():
        assert (into / name).read_bytes() == data
    assert (into / "model.gguf").read_bytes() == weights
    assert not (into / mat.SCRATCH).exists()


def test_hostile_tar_layer_is_refused(registry, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("link")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "/etc/passwd"
        tf.addfile(ti)
    client = RegistryClient(registry.host, insecure=True)
    repo = "materialize/hostile-tar"
    dt = client.push_blob(repo, [buf.getvalue()])
    layer = modelpack.descriptor("application/vnd.cncf.model.doc.v1.tar", dt.digest, dt.size,
                                 {modelpack.ANNOTATION_FILEPATH: "docs"})
    cd = client.push_bytes(repo, b"{}", modelpack.CONFIG)
    body = modelpack.canonical_json({"schemaVersion": 2, "mediaType": modelpack.OCI_MANIFEST,
                                     "artifactType": modelpack.ARTIFACT_TYPE,
                                     "config": modelpack.descriptor(modelpack.CONFIG, cd.digest, cd.size),
                                     "layers": [layer]})
    digest = client.put_manifest(repo, "v1", body, modelpack.OCI_MANIFEST)
    with pytest.raises(mat.MaterializeError, match="link"):
        mat.materialize(client, repo, digest, tmp_path / "m", log=lambda m: None)
    assert not (tmp_path / "m" / "link").exists() and not (tmp_path / "m" / ".ai-models-digest").exists()


def test_symlink_escape_is_refused(artifact, tmp_path):
    into = tmp_path / "m"
    outside = tmp_path / "outside"
    outside.mkdir()
    into.mkdir()
    (into / "sub").symlink_to(outside)
    with pytest.raises(mat.MaterializeError, match="escapes"):
        mat.materialize(artifact["client"], artifact["repo"], artifact["digest"], into, log=lambda m: None)
    assert not list(outside.rglob("*"))


def test_unsafe_manifest_path_is_refused(registry, tmp_path):
    client = RegistryClient(registry.host, insecure=True)
    repo = "materialize/unsafe"
    d = client.push_blob(repo, [b"evil"])
    layer = modelpack.descriptor(modelpack.WEIGHT_RAW, d.digest, d.size, {modelpack.ANNOTATION_FILEPATH: "../evil"})
    cd = client.push_bytes(repo, b"{}", modelpack.CONFIG)
    body = modelpack.canonical_json({"schemaVersion": 2, "mediaType": modelpack.OCI_MANIFEST,
                                     "artifactType": modelpack.ARTIFACT_TYPE,
                                     "config": modelpack.descriptor(modelpack.CONFIG, cd.digest, cd.size),
                                     "layers": [layer]})
    digest = client.put_manifest(repo, "v1", body, modelpack.OCI_MANIFEST)
    with pytest.raises(mat.MaterializeError, match="unsafe"):
        mat.materialize(client, repo, digest, tmp_path / "m", log=lambda m: None)
    assert not (tmp_path / "evil").exists()


def test_not_a_model_artifact(registry, tmp_path, capsys):
    client = RegistryClient(registry.host, insecure=True)
    repo = "materialize/image"
    cd = client.push_bytes(repo, b'{"architecture":"amd64","os":"linux"}',
                           "application/vnd.oci.image.config.v1+json")
    body = json.dumps({"schemaVersion": 2, "mediaType": modelpack.OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": cd.digest, "size": cd.size}, "layers": []}).encode()
    digest = client.put_manifest(repo, "v1", body, modelpack.OCI_MANIFEST)
    assert main(["materialize", "--artifact", f"{registry.host}/{repo}@{digest}",
                 "--into", str(tmp_path / "m"), "--insecure-registry"]) == 1
    assert "not a ModelPack" in capsys.readouterr().err


@pytest.mark.parametrize("artifact_arg", ["127.0.0.1:5000/repo:latest", "not a reference"])
def test_unpinned_or_invalid_artifact_is_refused(artifact_arg, tmp_path, capsys):
    assert main(["materialize", "--artifact", artifact_arg, "--into", str(tmp_path)]) == 1
    assert "--artifact" in capsys.readouterr().err


def test_missing_artifact_says_so(registry, tmp_path, capsys):
    uri = f"{registry.host}/materialize/missing@sha256:" + "0" * 64
    assert main(["materialize", "--artifact", uri, "--into", str(tmp_path / "m"), "--insecure-registry"]) == 1
    assert "materialize:" in capsys.readouterr().err


def test_tls_registry_with_auth_file_as_the_init_container_runs_it(tls_registry, tmp_path, monkeypatch):
    """The command line the webhook injects, as a process, against TLS + credentials."""
    # requests lets these override a session's CA file; a pod has neither.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca = str(tls_registry.tls_cert_ca)
    client = RegistryClient(tls_registry.host, username="alice", password="wonderland", ca_file=ca)
    files = {"model.gguf": make_gguf(tmp_path / "model.gguf").read_bytes()}
    digest, _ = push_artifact(client, "ai-models/catalog/cluster/m/uid", files)
    auth = tmp_path / "pull" / ".dockerconfigjson"
    auth.parent.mkdir()
    auth.write_text(credentials.dockerconfigjson(tls_registry.host, "alice", "wonderland"))
    into = tmp_path / "data" / "m"
    proc = subprocess.run(
        [sys.executable, "-m", "jobs", "materialize",
         "--artifact", f"{tls_registry.host}/ai-models/catalog/cluster/m/uid@{digest}",
         "--into", str(into), "--auth-file", str(auth), "--ca-file", ca],
        capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (into / "model.gguf").read_bytes() == files["model.gguf"]
    # wrong credentials: a clear failure, nothing written
    auth.write_text(credentials.dockerconfigjson(tls_registry.host, "alice", "wrong"))
    other = tmp_path / "data" / "other"
    proc = subprocess.run(
        [sys.executable, "-m", "jobs", "materialize",
         "--artifact", f"{tls_registry.host}/ai-models/catalog/cluster/m/uid@{digest}",
         "--into", str(other), "--auth-file", str(auth), "--ca-file", ca],
        capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=60,
    )
    assert proc.returncode == 1 and "materialize:" in proc.stderr
    assert not (other / "model.gguf").exists()
