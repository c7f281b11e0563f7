"""ModelPack config and manifest: media types, reproducibility, sorting, reading."""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import pytest

from lib import modelpack as mp
from lib.api.types import ResolvedInfo
from lib.formats.metadata import Resolution


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


LAYERS = [
    mp.layer_descriptor("model.safetensors", "weight", digest(b"w"), 100),
    mp.layer_descriptor("config.json", "config", digest(b"c"), 10),
    mp.layer_descriptor("README.md", "doc", digest(b"d"), 5),
    mp.layer_descriptor("1_Pooling/config.json", "config", digest(b"p"), 7),
]
RESOLVED = ResolvedInfo(
    format="Safetensors",
    family="bert",
    architecture="BertModel",
    parameterCount=22_713_728,
    contextWindowTokens=512,
    supportedEndpointTypes=["Embeddings"],
    supportedFeatures=[],
)


def test_media_types() -> None:
    assert mp.layer_media_type("m.gguf", "weight") == "application/vnd.cncf.model.weight.v1.raw"
    assert mp.layer_media_type("config.json", "config") == "application/vnd.cncf.model.weight.config.v1.raw"
    assert mp.layer_media_type("README.md", "doc") == "application/vnd.cncf.model.doc.v1.raw"
    with pytest.raises(ValueError):
        mp.layer_media_type("x", "nonsense")
    assert mp.normalize_media_type("application/vnd.cnai.model.weight.v1.raw") == mp.WEIGHT_RAW
    assert mp.layer_kind("application/vnd.cnai.model.weight.config.v1.tar+gzip") == ("config", "tar+gzip")
    assert mp.layer_kind(mp.DOC_RAW) == ("doc", "raw")
    assert mp.layer_kind("application/vnd.oci.image.layer.v1.tar") is None
    assert mp.layer_kind("application/vnd.cncf.model.weight.v1.zip") is None


def test_manifest_is_reproducible_and_sorted() -> None:
    config = mp.build_config(RESOLVED, LAYERS, name="minilm", source_url="https://huggingface.co/x/y")
    config_desc = mp.descriptor(mp.CONFIG, digest(config), len(config))
    bodies = {mp.build_manifest(config_desc, list(p)) for p in itertools.permutations(LAYERS)}
    assert len(bodies) == 1, "layer order must not change the bytes"
    body = bodies.pop()
    m = json.loads(body)
    assert m["schemaVersion"] == 2 and m["mediaType"] == mp.OCI_MANIFEST
    assert m["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert m["config"] == config_desc
    assert [layer["annotations"][mp.ANNOTATION_FILEPATH] for layer in m["layers"]] == [
        "1_Pooling/config.json",
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert body == mp.canonical_json(m), "canonical: sorted keys, no whitespace"
    # the same input in another process gives the same digest; a change in any layer changes it
    changed = [*LAYERS[:-1], mp.layer_descriptor("1_Pooling/config.json", "config", digest(b"q"), 7)]
    assert mp.build_manifest(config_desc, changed) != body
    assert "annotations" not in m
    annotated = json.loads(mp.build_manifest(config_desc, LAYERS, {"org.opencontainers.image.title": "x"}))
    assert annotated["annotations"] == {"org.opencontainers.image.title": "x"}


def test_config_contents() -> None:
    res = Resolution(
        info=RESOLVED, partial=False, precision="float32", architecture="transformer",
        licenses=["Apache-2.0"], languages=["en"],
    )
    body = mp.build_config(res, reversed(LAYERS), name="minilm", source_url="https://hf/x", revision="abc")
    assert body == mp.build_config(res, LAYERS, name="minilm", source_url="https://hf/x", revision="abc")
    c = json.loads(body)
    assert c["descriptor"] == {
        "name": "minilm",
        "family": "bert",
        "sourceURL": "https://hf/x",
        "revision": "abc",
        "licenses": ["Apache-2.0"],
    }
    assert c["config"] == {
        "architecture": "transformer",
        "format": "safetensors",
        "paramSize": "22.7M",
        "precision": "float32",
        "capabilities": {"inputTypes": ["text"], "outputTypes": ["embedding"], "languages": ["en"]},
    }
    # A plain ResolvedInfo has no ModelPack architecture: the status' class name is not one.
    assert "architecture" not in json.loads(mp.build_config(RESOLVED, LAYERS, name="m"))["config"]
    sorted_layers = sorted(LAYERS, key=lambda d: d["annotations"][mp.ANNOTATION_FILEPATH])
    assert c["modelfs"] == {"type": "layers", "diffIds": [d["digest"] for d in sorted_layers]}
    assert "createdAt" not in c["descriptor"], "no clock in the config unless the caller passes a time"
    with_time = json.loads(mp.build_config(RESOLVED, LAYERS, name="m", created="2024-01-02T03:04:05Z"))
    assert with_time["descriptor"]["createdAt"] == "2024-01-02T03:04:05Z"


@pytest.mark.parametrize(
    ("resolved", "expected"),
    [
        (
            {
                "supportedEndpointTypes": ["Chat", "TextGeneration"],
                "supportedFeatures": ["ToolCalling", "Thinking"],
            },
            {"inputTypes": ["text"], "outputTypes": ["text"], "toolUsage": True, "reasoning": True},
        ),
        (
            {"supportedEndpointTypes": ["Chat", "ImageToText"], "supportedFeatures": ["VisionInput"]},
            {"inputTypes": ["image", "text"], "outputTypes": ["text"]},
        ),
        (
            {"supportedEndpointTypes": ["ImageGeneration"], "supportedFeatures": ["ImageOutput"]},
            {"inputTypes": ["text"], "outputTypes": ["image"]},
        ),
        (
            {"supportedEndpointTypes": ["SpeechToText"], "supportedFeatures": ["AudioInput"]},
            {"inputTypes": ["audio"], "outputTypes": ["text"]},
        ),
        ({}, {}),
    ],
    ids=["chat", "vision", "image-gen", "speech", "unknown"],
)
def test_capabilities(resolved: dict[str, Any], expected: dict[str, Any]) -> None:
    assert mp.capabilities(resolved) == expected


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, ""),
        (0, ""),
        (49, ""),  # would round to 0K
        (50, "0.1K"),
        (320, "0.3K"),
        (999, "1K"),
        (1500, "1.5K"),
        (22_713_728, "22.7M"),
        (999_960_000, "1B"),  # rounds up into the next scale, never "1000M"
        (6_738_415_616, "6.7B"),
        (8_030_261_248, "8B"),
        (70_553_706_496, "70.6B"),
        (671_000_000_000, "671B"),
        (1_000_000_000_000, "1T"),
        (2_500_000_000_000_000, "2.5Q"),
    ],
)
def test_param_size(n: int | None, text: str) -> None:
    """model-spec v0.0.7 docs/config.md: ``<count><K|M|B|T|Q>``, at most one decimal."""
    import re

    assert mp.param_size(n) == text
    assert text == "" or re.fullmatch(mp.PARAM_SIZE_PATTERN, text)


def test_layer_annotations_name_the_file_for_every_tool() -> None:
    d = mp.layer_descriptor("1_Pooling/config.json", "config", digest(b"p"), 7, mtime="2024-05-06T07:08:09Z")
    ann = d["annotations"]
    assert ann[mp.ANNOTATION_FILEPATH] == ann[mp.ANNOTATION_TITLE] == "1_Pooling/config.json"
    meta = json.loads(ann[mp.ANNOTATION_FILE_METADATA])
    assert meta == {
        "name": "config.json", "mode": 0o644, "uid": 0, "gid": 0, "size": 7,
        "mtime": "2024-05-06T07:08:09Z", "typeflag": 0,
    }
    # No source date: Go's zero time, which modctl does not restore.
    undated = json.loads(mp.layer_descriptor("m.gguf", "weight", digest(b"w"), 3)["annotations"][mp.ANNOTATION_FILE_METADATA])
    assert undated["mtime"] == "0001-01-01T00:00:00Z"


def test_builders_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="filepath"):
        mp.build_manifest(
            mp.descriptor(mp.CONFIG, digest(b""), 0), [mp.descriptor(mp.WEIGHT_RAW, digest(b""), 0)]
        )
    with pytest.raises(ValueError, match="same file path"):
        mp.build_manifest(mp.descriptor(mp.CONFIG, digest(b""), 0), [LAYERS[0], LAYERS[0]])
    with pytest.raises(ValueError, match="at least one layer"):
        mp.build_config(RESOLVED, [], name="x")
    # descriptor.name is optional in the spec (minLength 1 when present): left out when unknown.
    assert "name" not in json.loads(mp.build_config(RESOLVED, LAYERS, name=""))["descriptor"]


def _manifest(layers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mp.OCI_MANIFEST,
        "artifactType": mp.ARTIFACT_TYPE,
        "config": {"mediaType": mp.CONFIG, "digest": digest(b"c"), "size": 1},
        "layers": layers,
        **extra,
    }


def test_parse_manifest_round_trip() -> None:
    config_desc = mp.descriptor(mp.CONFIG, digest(b"c"), 1)
    body = mp.build_manifest(config_desc, LAYERS)
    assert mp.is_model_manifest(body)
    parsed = mp.parse_manifest(body)
    assert [p for p, _ in parsed] == [
        "1_Pooling/config.json",
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert dict(parsed)["model.safetensors"] == LAYERS[0]


def test_older_cnai_media_types_are_read() -> None:
    legacy = {
        "schemaVersion": 2,
        "mediaType": mp.OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.cnai.model.config.v1+json",
            "digest": digest(b"c"),
            "size": 1,
        },
        "layers": [
            {
                "mediaType": "application/vnd.cnai.model.weight.v1.raw",
                "digest": digest(b"w"),
                "size": 3,
                "annotations": {"org.cnai.model.filepath": "model.gguf"},
            }
        ],
    }
    assert mp.is_model_manifest(legacy) and mp.is_model_manifest(json.dumps(legacy).encode())
    [(path, desc)] = mp.parse_manifest(legacy)
    assert path == "model.gguf" and desc["size"] == 3
    assert mp.layer_kind(desc["mediaType"]) == ("weight", "raw")


@pytest.mark.parametrize(
    "manifest",
    [
        {
            "schemaVersion": 2,
            "mediaType": mp.OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(b"c"),
                "size": 1,
            },
            "layers": [],
        },
        b"not json",
        b"[1]",
        {},
    ],
    ids=["container-image", "garbage", "list", "empty"],
)
def test_non_model_manifests(manifest: Any) -> None:
    assert not mp.is_model_manifest(manifest)
    with pytest.raises(mp.ManifestError):
        mp.parse_manifest(manifest)


def _layer(path: str | None, **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": mp.WEIGHT_RAW, "digest": digest(b"x"), "size": 1}
    if path is not None:
        d["annotations"] = {mp.ANNOTATION_FILEPATH: path}
    return {**d, **over}


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([], "no layers"),
        ([_layer(None)], "no org.cncf.model.filepath"),
        ([_layer("../etc/passwd")], "unsafe"),
        ([_layer("/abs")], "unsafe"),
        ([_layer("a/./b")], "unsafe"),
        ([_layer("a"), _layer("a")], "twice"),
        ([_layer("a", digest="sha256:xyz")], "malformed digest"),
        ([_layer("a", digest="md5:00")], "digest"),
        ([_layer("a", size=-1)], "size"),
        ([_layer("a", size="1")], "size"),
        (["x"], "not an object"),
    ],
    ids=[
        "none",
        "no-path",
        "dotdot",
        "absolute",
        "dot",
        "duplicate",
        "bad-digest",
        "algo",
        "negative",
        "string-size",
        "not-object",
    ],
)
def test_parse_manifest_refuses(layers: list[Any], message: str) -> None:
    with pytest.raises(mp.ManifestError, match=message):
        mp.parse_manifest(_manifest(layers))


def test_resolved_from_config() -> None:
    body = mp.build_config(Resolution(info=RESOLVED, partial=False), LAYERS, name="m")
    assert mp.resolved_from_config(body) == {"format": "Safetensors", "family": "bert"}
    assert mp.resolved_from_config(b"junk") == {}


def test_real_registry_accepts_the_artifact(registry: Any, minilm_dir: Any) -> None:
    """Push the minilm snapshot's blobs and our manifest to distribution with plain HTTP calls."""
    import requests

    from lib.formats.inspect import inspect_file
    from lib.formats.layout import detect_layout
    from lib.formats.metadata import resolve

    repo = "test/modelpack-minilm"
    base = f"{registry.url}/v2/{repo}"
    paths = sorted(str(p.relative_to(minilm_dir)) for p in minilm_dir.rglob("*") if p.is_file())
    layout = detect_layout(paths)

    def push(data: bytes) -> str:
        d = digest(data)
        r = requests.post(f"{base}/blobs/uploads/", timeout=30)
        assert r.status_code == 202, r.text
        loc = r.headers["Location"]
        loc = loc if loc.startswith("http") else registry.url + loc
        sep = "&" if "?" in loc else "?"
        r = requests.put(f"{loc}{sep}digest={d}", data=data, timeout=60)
        assert r.status_code == 201, r.text
        return d

    layers, facts = [], {}
    for p in layout.included:
        data = (minilm_dir / p).read_bytes()
        facts[p] = inspect_file(str(minilm_dir / p), p)
        layers.append(mp.layer_descriptor(p, layout.role(p) or "", push(data), len(data)))
    config = mp.build_config(resolve(layout, facts, {}), layers, name="minilm")
    config_desc = mp.descriptor(mp.CONFIG, push(config), len(config))
    body = mp.build_manifest(config_desc, layers)
    r = requests.put(f"{base}/manifests/v1", data=body, headers={"Content-Type": mp.OCI_MANIFEST}, timeout=30)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest(body)
    got = requests.get(f"{base}/manifests/{digest(body)}", headers={"Accept": mp.OCI_MANIFEST}, timeout=30)
    assert got.content == body
    assert mp.is_model_manifest(got.content)
    assert [p for p, _ in mp.parse_manifest(got.content)] == layout.included
