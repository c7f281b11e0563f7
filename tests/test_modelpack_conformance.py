"""Every artifact the pipeline publishes, read as other ModelPack and OCI tools read it.

One artifact per format and source (GGUF written by the ``gguf`` library,
Safetensors by ``safetensors``, the real all-MiniLM-L6-v2, Diffusers; local
files, the Hugging Face stand-in, an Ollama registry, upload archives, a
catalog import), each checked against the ModelPack config constraints in
``tests/data/modelpack_config_schema.json`` (model-spec v0.0.7) plus the
format rules the spec's schema leaves out (``paramSize``, ``precision``,
RFC 3339 dates, the layer annotations). Then oras-py pulls an artifact into
files named by their paths, and skopeo (when installed) copies one byte for
byte.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from devstack.hf_hub import HubStandIn
from devstack.models import TOOLS_TEMPLATE, make_diffusers_tree, make_gguf, make_safetensors_model
from devstack.ollama_registry import push_ollama_model
from devstack.registry import RegistryServer
from lib import modelpack as mp
from lib.archive import ArchiveKind
from lib.catalog_import import import_artifact
from lib.oci.client import RegistryClient
from lib.oci.reference import Reference
from lib.publish import publish
from lib.retry import RetryPolicy
from lib.sources import local, upload
from lib.sources.base import SourceSnapshot
from lib.sources.http import HttpPolicy
from lib.sources.huggingface import HuggingFaceSource
from lib.sources.ollama import OllamaSource

SCHEMA = json.loads((Path(__file__).parent / "data" / "modelpack_config_schema.json").read_text())
PRECISIONS = set(SCHEMA["$defs"]["precisionValue"]["enum"])
PARAM_SIZE = re.compile(r"[0-9]+(\.[0-9])?[QqTtBbMmKk]")  # docs/config.md, paramSize
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
FAST = HttpPolicy(retry=RetryPolicy(attempts=3, base_delay=0.01), connect_timeout=2, read_timeout=5)
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Artifact:
    repo: str
    digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]


def fetch(registry: RegistryServer, repo: str, digest: str) -> Artifact:
    r = requests.get(f"{registry.url}/v2/{repo}/manifests/{digest}", timeout=10,
                     headers={"Accept": mp.OCI_MANIFEST})
    r.raise_for_status()
    manifest = r.json()
    c = requests.get(f"{registry.url}/v2/{repo}/blobs/{manifest['config']['digest']}", timeout=10)
    c.raise_for_status()
    return Artifact(repo, digest, manifest, c.json())


def tar_gz(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(root, arcname=root.name)  # one top directory, as `tar czf m.tgz my-model/` makes
    return buf.getvalue()


def zipped(root: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(root).as_posix())
    return buf.getvalue()


@pytest.fixture(scope="module")
def artifacts(registry: RegistryServer, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[dict[str, Artifact]]:
    """One published artifact per format and source, keyed by a label."""
    tmp = tmp_path_factory.mktemp("conformance")
    client = RegistryClient(registry.host, insecure=True)
    run = uuid.uuid4().hex[:8]
    out: dict[str, Artifact] = {}

    def put(label: str, snap: SourceSnapshot, name: str = "") -> None:
        dest = Reference.parse(f"{registry.host}/conformance-{run}/{label}")
        result = publish(snap, dest, client, name=name)
        out[label] = fetch(registry, dest.repository, result["artifact"]["digest"])

    gguf = make_gguf(tmp / "gguf" / "tiny.gguf", name="Tiny Llama", chat_template=TOOLS_TEMPLATE,
                     extra_kv={"general.license": "mit", "general.languages": ["en", "fr", "eng"],
                               "llama.attention.head_count": 4})
    put("gguf-local", local.snapshot(str(gguf.parent)))
    put("gguf-f16-local", local.snapshot(str(make_gguf(tmp / "f16" / "f16.gguf", file_type=1).parent)))
    put("safetensors-local", local.snapshot(str(make_safetensors_model(tmp / "st", shards=2))), name="st-model")
    put("minilm-local", local.snapshot(str(minilm_dir)))
    put("diffusers-local", local.snapshot(str(make_diffusers_tree(tmp / "sd"))))

    with HubStandIn() as hub:
        hub.add_repo(MINILM, minilm_dir, pipeline_tag="sentence-similarity", library_name="sentence-transformers",
                     cardData={"license": "apache-2.0", "language": "en"})
        put("huggingface", HuggingFaceSource(f"https://huggingface.co/{MINILM}", token=None,
                                             endpoint=hub.endpoint, policy=FAST).snapshot())
        out["huggingface-commit"] = Artifact("", hub.repos[MINILM].commit, {}, {})

    name = f"conf{run}"
    push_ollama_model(registry.url, name, "1b", layers=[
        ("model", make_gguf(tmp / "ollama.gguf", arch="qwen3", size_label="1B")),
        ("template", b"{{ .Prompt }}"), ("license", b"Apache License 2.0"),
    ])
    put("ollama", OllamaSource(f"https://ollama.com/library/{name}:1b", registry=registry.url,
                               retry=FAST.retry, timeout=(FAST.connect_timeout, FAST.read_timeout)).snapshot())

    def uploaded(body: bytes, kind: ArchiveKind, filename: str) -> SourceSnapshot:
        return upload.snapshot(io.BytesIO(body), upload.Upload(kind=kind, filename=filename, size=len(body)),
                               scratch_dir=str(tmp / "scratch"), max_spool_bytes=1 << 30)

    put("upload-tar-gz", uploaded(tar_gz(make_safetensors_model(tmp / "up" / "my-model")), ArchiveKind.TAR_GZ,
                                  "m.tar.gz"), name="uploaded-model")
    put("upload-zip", uploaded(zipped(make_diffusers_tree(tmp / "upzip")), ArchiveKind.ZIP, "sd.zip"),
        name="uploaded-sd")
    put("upload-gguf", uploaded(make_gguf(tmp / "direct.gguf", name="").read_bytes(), ArchiveKind.GGUF,
                                "direct.gguf"), name="uploaded-gguf")

    # A catalog import copies an artifact as it is: here the GGUF one, into another repository.
    src = out["gguf-local"]
    dest = Reference.parse(f"{registry.host}/conformance-{run}/catalog")
    result = import_artifact(f"{registry.host}/{src.repo}@{src.digest}", dest, client,
                             auth_file=None, ca_file=None, insecure=True)
    out["catalog"] = fetch(registry, dest.repository, result["artifact"]["digest"])
    yield out
    client.close()


LABELS = ["gguf-local", "gguf-f16-local", "safetensors-local", "minilm-local", "diffusers-local", "huggingface",
          "ollama", "upload-tar-gz", "upload-zip", "upload-gguf", "catalog"]


def rfc3339(value: str) -> bool:
    if not RFC3339.fullmatch(value):
        return False
    datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return True


@pytest.mark.parametrize("label", LABELS)
def test_config_meets_the_spec(artifacts: dict[str, Artifact], label: str) -> None:
    a = artifacts[label]
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(a.config)
    cfg, desc = a.config["config"], a.config["descriptor"]
    # What the schema does not encode.
    assert "paramSize" not in cfg or PARAM_SIZE.fullmatch(cfg["paramSize"]), cfg["paramSize"]
    if "precision" in cfg:
        assert set(cfg["precision"].split(",")) <= PRECISIONS, cfg["precision"]
    for when in (desc.get("createdAt"), cfg.get("capabilities", {}).get("knowledgeCutoff")):
        assert when is None or rfc3339(when), when
    assert a.config["modelfs"]["diffIds"] == [layer["digest"] for layer in a.manifest["layers"]]
    assert cfg.get("quantization") not in ("F16", "F32", "BF16"), "a float type is a precision"


@pytest.mark.parametrize("label", LABELS)
def test_manifest_and_layer_annotations(artifacts: dict[str, Artifact], label: str) -> None:
    a = artifacts[label]
    m = a.manifest
    assert (m["schemaVersion"], m["mediaType"], m["artifactType"]) == (2, mp.OCI_MANIFEST, mp.ARTIFACT_TYPE)
    assert m["config"]["mediaType"] == mp.CONFIG
    meta_schema = {**SCHEMA["$defs"]["fileMetadata"], "$schema": SCHEMA["$schema"]}
    for layer in m["layers"]:
        ann = layer["annotations"]
        path = ann[mp.ANNOTATION_FILEPATH]
        assert mp.layer_kind(layer["mediaType"]) is not None and layer["mediaType"].endswith(".raw")
        assert ann[mp.ANNOTATION_TITLE] == path, "oras names the pulled file after the title"
        meta = json.loads(ann[mp.ANNOTATION_FILE_METADATA])
        jsonschema.validate(meta, meta_schema)
        assert meta["name"] == posixpath.basename(path) and meta["size"] == layer["size"]
        assert meta["typeflag"] == 0 and meta["mode"] == 0o644 and rfc3339(meta["mtime"])
        assert meta["mtime"] == a.config["descriptor"].get("createdAt", mp.ZERO_TIME)


def test_descriptor_comes_from_the_source(artifacts: dict[str, Artifact]) -> None:
    """Names, URLs and dates the source has; nothing from the worker or the destination."""
    hf = artifacts["huggingface"].config
    commit = artifacts["huggingface-commit"].digest
    from devstack.hf_hub import commit_date

    assert hf["descriptor"] == {
        "name": MINILM, "family": "bert", "sourceURL": f"https://huggingface.co/{MINILM}", "revision": commit,
        "createdAt": commit_date(commit).replace(".000Z", "Z"), "licenses": ["Apache-2.0"],
    }
    assert hf["config"]["architecture"] == "transformer" and hf["config"]["precision"] == "float32"
    assert hf["config"]["capabilities"]["languages"] == ["en"]
    assert hf["config"]["paramSize"] == "22.7M"

    g = artifacts["gguf-local"].config
    assert g["descriptor"] == {"name": "Tiny Llama", "family": "llama", "licenses": ["MIT"]}
    assert g["config"]["quantization"] == "Q4_K_M" and "precision" not in g["config"]
    assert g["config"]["capabilities"]["languages"] == ["en", "fr"]  # "eng" is not a two-letter code
    assert g["config"]["architecture"] == "transformer"  # the header declares attention heads
    f16 = artifacts["gguf-f16-local"].config["config"]
    assert "quantization" not in f16 and f16["precision"] == "float32"  # what the tensors hold
    assert "architecture" not in f16  # no attention keys in this header: the kind is not guessed

    o = artifacts["ollama"].config["descriptor"]
    assert o["name"].endswith(":1b") and o["sourceURL"] == f"https://ollama.com/library/{o['name'][:-3]}"
    assert "createdAt" not in o

    assert artifacts["safetensors-local"].config["descriptor"]["name"] == "st-model"  # --model-name
    assert "name" not in artifacts["minilm-local"].config["descriptor"]
    assert artifacts["upload-tar-gz"].config["descriptor"]["name"] == "uploaded-model"
    for label in ("gguf-local", "minilm-local", "diffusers-local", "upload-tar-gz", "upload-zip"):
        desc = artifacts[label].config["descriptor"]
        assert "sourceURL" not in desc and "createdAt" not in desc, label
    assert artifacts["minilm-local"].config["descriptor"]["licenses"] == ["Apache-2.0"]  # the card's front matter
    assert artifacts["diffusers-local"].config["config"]["architecture"] in ("unet", "transformer")
    assert artifacts["catalog"].digest == artifacts["gguf-local"].digest


def test_oras_pulls_every_file_under_its_own_path(artifacts: dict[str, Artifact], registry: RegistryServer,
                                                 minilm_dir: Path, tmp_path: Path) -> None:
    import oras.provider

    a = artifacts["minilm-local"]
    reg = oras.provider.Registry(hostname=registry.host, insecure=True)
    pulled = reg.pull(target=f"{registry.host}/{a.repo}@{a.digest}", outdir=str(tmp_path / "out"))
    got = sorted(Path(p).relative_to(tmp_path / "out").as_posix() for p in pulled)
    want = sorted(layer["annotations"][mp.ANNOTATION_FILEPATH] for layer in a.manifest["layers"])
    assert got == want and "1_Pooling/config.json" in got
    for path in want:
        assert (tmp_path / "out" / path).read_bytes() == (minilm_dir / path).read_bytes(), path
    assert not any(p.name.startswith("sha256:") for p in (tmp_path / "out").rglob("*"))


# `make test` installs skopeo (Makefile registry-bin); CI runs it, a developer's ad-hoc run may skip it.
@pytest.mark.skipif(shutil.which("skopeo") is None and not os.environ.get("CI"),
                    reason="skopeo is not installed (apt-get install skopeo)")
def test_skopeo_copies_the_artifact_byte_for_byte(artifacts: dict[str, Artifact], registry: RegistryServer) -> None:
    a = artifacts["huggingface"]
    target = f"{a.repo}-skopeo"
    p = subprocess.run(
        ["skopeo", "copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
         f"docker://{registry.host}/{a.repo}@{a.digest}", f"docker://{registry.host}/{target}:copy"],
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr
    src = requests.get(f"{registry.url}/v2/{a.repo}/manifests/{a.digest}", headers={"Accept": mp.OCI_MANIFEST},
                       timeout=10)
    dst = requests.get(f"{registry.url}/v2/{target}/manifests/copy", headers={"Accept": mp.OCI_MANIFEST},
                       timeout=10)
    assert dst.content == src.content and dst.headers["Docker-Content-Digest"] == a.digest
