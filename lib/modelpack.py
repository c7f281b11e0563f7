"""CNCF ModelPack artifacts: media types, the config blob and the manifest.

Builders are pure functions from descriptors to canonical JSON bytes (sorted
keys, no whitespace, layers sorted by file path, no wall-clock timestamps
unless the caller passes one taken from the source), so the same model
published twice gets the same manifest digest (the rule: docs/publish.md,
"What the digest depends on"). Descriptors are plain dicts
(``{"mediaType", "digest", "size", "annotations"}``) so this module does not
depend on the OCI client.

Field formats follow model-spec v0.0.7 (docs/config.md, docs/annotations.md,
schema/config-schema.json at commit d78bf32): ``paramSize`` is
``<count><K|M|B|T|Q>`` with at most one decimal; layers carry
``org.cncf.model.filepath``, ``org.cncf.model.file.metadata+json`` and, for
ORAS-family clients, ``org.opencontainers.image.title``.

Readers accept the older ``application/vnd.cnai.*`` media types and the
``org.cnai.model.filepath`` annotation as well (earlier ModelPack drafts,
still produced by some tools).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NotRequired, TypedDict

from lib.api.types import ResolvedInfo
from lib.formats.metadata import Resolution

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG = "application/vnd.cncf.model.config.v1+json"
WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"
DOC_RAW = "application/vnd.cncf.model.doc.v1.raw"
CODE_RAW = "application/vnd.cncf.model.code.v1.raw"
DATASET_RAW = "application/vnd.cncf.model.dataset.v1.raw"

# Aliases the pipeline uses.
CONFIG_MEDIA_TYPE = CONFIG
MANIFEST_MEDIA_TYPE = OCI_MANIFEST

ANNOTATION_FILEPATH = "org.cncf.model.filepath"
LEGACY_ANNOTATION_FILEPATH = "org.cnai.model.filepath"
ANNOTATION_FILE_METADATA = "org.cncf.model.file.metadata+json"
# oras (Go and Python) names a pulled layer's file after this annotation.
ANNOTATION_TITLE = "org.opencontainers.image.title"
# Go's zero time.Time: modctl restores a file's mtime only when it is not zero,
# so an unknown date leaves the pulled file's mtime alone.
ZERO_TIME = "0001-01-01T00:00:00Z"
# Every file is published as a plain readable file: the mode on the worker's
# disk (umask, a copy's mode) is not part of the model.
FILE_MODE = 0o644

_CNCF = "application/vnd.cncf.model."
_CNAI = "application/vnd.cnai.model."
MANIFEST_ARTIFACT_TYPES = frozenset({ARTIFACT_TYPE, _CNAI + "manifest.v1+json"})
CONFIG_TYPES = frozenset({CONFIG, _CNAI + "config.v1+json"})

LayerRole = Literal["weight", "config", "doc", "code", "dataset"]
Packaging = Literal["raw", "tar", "tar+gzip", "tar+zstd"]
_ROLE_MEDIA = {
    "weight": "weight",
    "config": "weight.config",
    "doc": "doc",
    "code": "code",
    "dataset": "dataset",
}
_MEDIA_ROLE: dict[str, LayerRole] = {
    "weight": "weight",
    "weight.config": "config",
    "doc": "doc",
    "code": "code",
    "dataset": "dataset",
}


class Descriptor(TypedDict):
    mediaType: str
    digest: str
    size: int
    annotations: NotRequired[dict[str, str]]


class ManifestError(ValueError):
    """A manifest is not a usable ModelPack manifest (callers map this to ``ManifestInvalid``)."""


def canonical_json(obj: Any) -> bytes:
    """The one serialisation of ``obj``: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def layer_media_type(path: str, role: str) -> str:
    """Raw (never compressed) ModelPack media type for a file of ``role`` (weight/config/doc/...)."""
    if role not in _ROLE_MEDIA:
        raise ValueError(f"unknown layer role {role!r} for {path}")
    return f"{_CNCF}{_ROLE_MEDIA[role]}.v1.raw"


def normalize_media_type(media_type: str) -> str:
    """Map an older ``vnd.cnai.model.*`` type to its ``vnd.cncf.model.*`` equivalent."""
    return _CNCF + media_type[len(_CNAI) :] if media_type.startswith(_CNAI) else media_type


def layer_kind(media_type: str) -> tuple[LayerRole, Packaging] | None:
    """``(role, packaging)`` of a ModelPack layer media type (either prefix), else ``None``."""
    mt = normalize_media_type(media_type)
    if not mt.startswith(_CNCF):
        return None
    rest = mt[len(_CNCF) :]
    kind, sep, packaging = rest.partition(".v1.")
    if not sep or kind not in _MEDIA_ROLE or packaging not in ("raw", "tar", "tar+gzip", "tar+zstd"):
        return None
    return _MEDIA_ROLE[kind], packaging  # type: ignore[return-value]


def descriptor(
    media_type: str, digest: str, size: int, annotations: Mapping[str, str] | None = None
) -> Descriptor:
    d: Descriptor = {"mediaType": media_type, "digest": digest, "size": int(size)}
    if annotations:
        d["annotations"] = dict(annotations)
    return d


def file_metadata(path: str, size: int, mtime: str = "") -> str:
    """The ``org.cncf.model.file.metadata+json`` value (model-spec ``FileMetadata``).

    Nothing here comes from the worker's disk: mode 0644, owner 0:0, regular
    file, and ``mtime`` the source's date (a commit date) or Go's zero time
    when the source has none. So the value, and the digest, depend only on
    the file's path, size and the source.
    """
    fields = {
        "name": posixpath.basename(path),
        "mode": FILE_MODE,
        "uid": 0,
        "gid": 0,
        "size": int(size),
        "mtime": mtime or ZERO_TIME,
        "typeflag": 0,
    }
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def layer_annotations(path: str, size: int, mtime: str = "") -> dict[str, str]:
    """The annotations of a file layer: ModelPack's file path and metadata, and oras' title."""
    return {
        ANNOTATION_FILEPATH: path,
        ANNOTATION_FILE_METADATA: file_metadata(path, size, mtime),
        ANNOTATION_TITLE: path,
    }


def layer_descriptor(path: str, role: str, digest: str, size: int, *, mtime: str = "") -> Descriptor:
    """A raw layer descriptor for the file at ``path`` with its annotations (``layer_annotations``)."""
    return descriptor(layer_media_type(path, role), digest, size, layer_annotations(path, size, mtime))


def filepath_of(desc: Mapping[str, Any]) -> str | None:
    ann = desc.get("annotations") or {}
    value = ann.get(ANNOTATION_FILEPATH, ann.get(LEGACY_ANNOTATION_FILEPATH))
    return value if isinstance(value, str) else None


def sort_layers(layers: Iterable[Descriptor]) -> list[Descriptor]:
    """Layers ordered by file path; every layer needs one and paths are unique."""
    out = list(layers)
    paths = [filepath_of(d) for d in out]
    if any(p is None for p in paths):
        raise ValueError(f"every layer needs the {ANNOTATION_FILEPATH} annotation")
    if len(set(paths)) != len(paths):
        raise ValueError("two layers have the same file path")
    return sorted(out, key=lambda d: filepath_of(d) or "")


# --- config -----------------------------------------------------------------

_ENDPOINT_MODALITIES: dict[str, tuple[list[str], list[str]]] = {
    "Chat": (["text"], ["text"]),
    "TextGeneration": (["text"], ["text"]),
    "Embeddings": (["text"], ["embedding"]),
    "Rerank": (["text"], ["other"]),
    "SpeechToText": (["audio"], ["text"]),
    "ImageToText": (["image", "text"], ["text"]),
    "ImageGeneration": (["text"], ["image"]),
}
_FEATURE_INPUTS = {"VisionInput": "image", "AudioInput": "audio"}


_SCALES = (("Q", 10**15), ("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3))
PARAM_SIZE_PATTERN = r"^[0-9]+(\.[0-9])?[QqTtBbMmKk]$"


def param_size(n: int | None) -> str:
    """``paramSize`` as model-spec defines it: ``<count><scale>``, at most one decimal.

    The largest scale whose rounded count is at least 1 (``22.7M``, ``8B``,
    ``0.3K`` for 320); ``""`` when unknown or when fewer than 50 parameters
    would round to ``0K``. Integer arithmetic, so no float rounding surprises.
    """
    if not n or n <= 0:
        return ""
    for unit, scale in _SCALES:
        tenths = (n * 10 + scale // 2) // scale
        if tenths >= 10 or (unit == "K" and tenths >= 1):
            whole, frac = divmod(tenths, 10)
            return f"{whole}.{frac}{unit}" if frac else f"{whole}{unit}"
    return ""


def capabilities(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """ModelPack ``capabilities`` from ``supportedEndpointTypes`` / ``supportedFeatures``."""
    inputs: set[str] = set()
    outputs: set[str] = set()
    for ep in resolved.get("supportedEndpointTypes") or []:
        i, o = _ENDPOINT_MODALITIES.get(ep, ([], []))
        inputs.update(i)
        outputs.update(o)
    features = set(resolved.get("supportedFeatures") or [])
    inputs.update(m for f, m in _FEATURE_INPUTS.items() if f in features)
    if "ImageOutput" in features:
        outputs.add("image")
    caps: dict[str, Any] = {}
    if inputs:
        caps["inputTypes"] = sorted(inputs)
    if outputs:
        caps["outputTypes"] = sorted(outputs)
    if "ToolCalling" in features:
        caps["toolUsage"] = True
    if "Thinking" in features:
        caps["reasoning"] = True
    return caps


def build_config(
    resolved: Resolution | Mapping[str, Any],
    layers: Iterable[Descriptor],
    *,
    name: str = "",
    source_url: str = "",
    revision: str = "",
    created: str | None = None,
    precision: str = "",
    licenses: Iterable[str] = (),
    languages: Iterable[str] = (),
) -> bytes:
    """The ModelPack config blob (canonical JSON).

    ``resolved`` is a ``lib.formats.metadata.Resolution`` (its ModelPack-only
    fields ``architecture``, ``precision``, ``licenses`` and ``languages`` are
    used) or a plain ``ResolvedInfo`` dict. ``config.architecture`` is the
    spec's kind of network (``transformer``), never the status' class name,
    so it comes only from a ``Resolution``. ``layers`` are the layer
    descriptors; ``modelfs.diffIds`` lists their digests in manifest order
    (sorted by file path; raw layers' diff IDs are their digests).
    ``created`` (RFC 3339) is written only when given: pass a date the source
    carries (a commit date), never the clock, to keep digests reproducible.
    Empty values are left out (every field but ``modelfs`` is optional).
    """
    info: Mapping[str, Any]
    architecture = ""
    if isinstance(resolved, Resolution):
        info = resolved.info
        precision = precision or resolved.precision
        architecture = resolved.architecture
        licenses = list(licenses) or resolved.licenses
        languages = list(languages) or resolved.languages
    else:
        info = resolved
    ordered = sort_layers(layers)
    if not ordered:
        raise ValueError("a ModelPack artifact needs at least one layer")
    desc: dict[str, Any] = {}
    for key, value in (
        ("name", name),
        ("family", info.get("family", "")),
        ("sourceURL", source_url),
        ("revision", revision),
        ("createdAt", created or ""),
        ("licenses", list(licenses)),
    ):
        if value:
            desc[key] = value
    cfg: dict[str, Any] = {}
    for key, value in (
        ("architecture", architecture),
        ("format", str(info.get("format", "")).lower()),
        ("paramSize", param_size(info.get("parameterCount"))),
        ("precision", precision),
        ("quantization", info.get("quantization", "")),
    ):
        if value:
            cfg[key] = value
    caps = capabilities(info)
    if languages:
        caps["languages"] = list(languages)
    if caps:
        cfg["capabilities"] = caps
    return canonical_json(
        {
            "descriptor": desc,
            "config": cfg,
            "modelfs": {"type": "layers", "diffIds": [d["digest"] for d in ordered]},
        }
    )


# --- manifest ---------------------------------------------------------------


def build_manifest(
    config_descriptor: Descriptor,
    layer_descriptors: Iterable[Descriptor],
    annotations: Mapping[str, str] | None = None,
) -> bytes:
    """The OCI image manifest of a ModelPack artifact (canonical JSON, layers sorted by file path)."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": dict(config_descriptor),
        "layers": [dict(d) for d in sort_layers(layer_descriptors)],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return canonical_json(manifest)


def _load(manifest: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(manifest, Mapping):
        return manifest
    try:
        obj = json.loads(manifest)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"manifest is not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ManifestError("manifest is not a JSON object")
    return obj


def is_model_manifest(manifest: bytes | str | Mapping[str, Any]) -> bool:
    """Whether a manifest is a ModelPack artifact (cncf or older cnai media types)."""
    try:
        m = _load(manifest)
    except ManifestError:
        return False
    config = m.get("config")
    config_type = config.get("mediaType") if isinstance(config, Mapping) else None
    return m.get("artifactType") in MANIFEST_ARTIFACT_TYPES or config_type in CONFIG_TYPES


def _safe_path(p: str) -> bool:
    parts = p.split("/")
    return (
        bool(p)
        and not p.startswith("/")
        and "\\" not in p
        and "\0" not in p
        and all(part not in ("", ".", "..") for part in parts)
        and posixpath.normpath(p) == p
    )


def parse_manifest(manifest: bytes | str | Mapping[str, Any]) -> list[tuple[str, Descriptor]]:
    """``(filepath, descriptor)`` for every layer of a ModelPack manifest, in manifest order.

    Raises ``ManifestError`` when the manifest is not a ModelPack manifest, a
    layer lacks a file path, a path is unsafe (absolute, ``..``) or repeated,
    or a descriptor is malformed.
    """
    m = _load(manifest)
    if not is_model_manifest(m):
        raise ManifestError("not a ModelPack manifest (artifactType / config media type)")
    layers = m.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ManifestError("manifest has no layers")
    out: list[tuple[str, Descriptor]] = []
    seen: set[str] = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, Mapping):
            raise ManifestError(f"layer {i} is not an object")
        mt, digest, size = layer.get("mediaType"), layer.get("digest"), layer.get("size")
        if not isinstance(mt, str) or not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise ManifestError(f"layer {i} has no valid mediaType/digest")
        if len(digest) != 71 or any(c not in "0123456789abcdef" for c in digest[7:]):
            raise ManifestError(f"layer {i} has a malformed digest {digest!r}")
        if type(size) is not int or size < 0:
            raise ManifestError(f"layer {i} has an invalid size")
        path = filepath_of(layer)
        if path is None:
            raise ManifestError(f"layer {i} has no {ANNOTATION_FILEPATH} annotation")
        if not _safe_path(path):
            raise ManifestError(f"layer {i} has an unsafe file path {path!r}")
        if path in seen:
            raise ManifestError(f"file path {path!r} appears twice")
        seen.add(path)
        ann = layer.get("annotations") or {}
        out.append((path, descriptor(mt, digest, size, {str(k): str(v) for k, v in ann.items()})))
    return out


def resolved_from_config(config: bytes | Mapping[str, Any]) -> ResolvedInfo:
    """Best-effort ``ResolvedInfo`` from a ModelPack config blob (catalog imports)."""
    try:
        obj = json.loads(config) if not isinstance(config, Mapping) else config
    except (ValueError, UnicodeDecodeError):
        return ResolvedInfo()
    if not isinstance(obj, Mapping):
        return ResolvedInfo()
    raw_cfg, raw_desc = obj.get("config"), obj.get("descriptor")
    cfg: Mapping[str, Any] = raw_cfg if isinstance(raw_cfg, Mapping) else {}
    desc: Mapping[str, Any] = raw_desc if isinstance(raw_desc, Mapping) else {}
    out = ResolvedInfo()
    fmt = str(cfg.get("format", "")).lower()
    names = {"gguf": "GGUF", "safetensors": "Safetensors", "diffusers": "Diffusers"}
    if fmt in names:
        out["format"] = names[fmt]
    # config.architecture is the kind of network ("transformer"), not the class
    # name status.resolved.architecture holds, so it is not copied.
    if isinstance(cfg.get("quantization"), str) and cfg["quantization"]:
        out["quantization"] = cfg["quantization"]
    if isinstance(desc.get("family"), str) and desc["family"]:
        out["family"] = desc["family"]
    return out
