"""Resolution: which models a workload asks for, and which artifacts they are.

The decorator (``hooks.workload``) reads a workload's model annotations, looks
the names up among the related Model/ClusterModel objects and writes the
outcome back onto the workload as annotations: either a *resolution* (the
digest-pinned artifacts, canonical JSON) or a *blocked* reason. The webhook
only ever decodes that annotation (``decode_resolution``): it never reads a
Model. Nothing here knows how a model reaches a pod; that is the delivery
mode's business (``lib.delivery.modes``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lib.api.naming import dns_label, model_repository
from lib.api.types import ANNOTATION_CLUSTERMODEL, ANNOTATION_MODEL, MODELS_DIR
from lib.result import artifact_problem

# Annotations the decorator writes onto the workload (top-level metadata).
ANNOTATION_RESOLUTION = "ai.deckhouse.io/model-resolution"
ANNOTATION_BLOCKED = "ai.deckhouse.io/model-delivery-blocked"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PINNED_URI = re.compile(r"^[^/@\s]+/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$")


class ModelKind(StrEnum):
    MODEL = "Model"
    CLUSTER_MODEL = "ClusterModel"


_ANNOTATION_KINDS = ((ModelKind.MODEL, ANNOTATION_MODEL), (ModelKind.CLUSTER_MODEL, ANNOTATION_CLUSTERMODEL))


class BlockReason(StrEnum):
    """Why a workload's models cannot be delivered (written on the workload)."""

    INVALID_MODEL_NAME = "InvalidModelName"
    DUPLICATE_MODEL_NAME = "DuplicateModelName"
    MODEL_NOT_FOUND = "ModelNotFound"
    MODEL_NOT_READY = "ModelNotReady"
    MOUNT_PATH_CONFLICT = "MountPathConflict"


@dataclass(frozen=True, order=True)
class ModelRef:
    kind: ModelKind
    name: str


# A blocked message names what the workload asked for, which the tenant wrote (up to the API
# server's 256 KB of annotations): it is written back onto the workload, so it is bounded.
MAX_BLOCKED_MESSAGE = 1024


def bounded(text: str, limit: int = MAX_BLOCKED_MESSAGE) -> str:
    """``text``, cut to ``limit`` characters (the last one an ellipsis) when longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Blocked:
    reason: BlockReason
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", bounded(self.message))

    def encode(self) -> str:
        return compact({"reason": str(self.reason), "message": self.message})


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    kind: ModelKind
    uri: str
    digest: str
    family: str
    size_bytes: int

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.kind, self.name)

    @property
    def path(self) -> str:
        return f"{MODELS_DIR}/{self.name}"

    @property
    def repository(self) -> str:
        """The repository part of the digest-pinned URI (no registry host, no digest)."""
        return self.uri.split("@", 1)[0].split("/", 1)[1]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": str(self.kind),
            "uri": self.uri,
            "digest": self.digest,
            "family": self.family,
            "sizeBytes": self.size_bytes,
        }


def compact(value: Any) -> str:
    """Canonical compact JSON (sorted keys): equal values are equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- annotations


def valid_name(name: str) -> bool:
    """A Model/ClusterModel name: a DNS-1123 subdomain."""
    return len(name) <= 253 and bool(_DNS_SUBDOMAIN.match(name))


def split_names(value: str | None) -> list[str]:
    """``"a, b,,c "`` → ``["a", "b", "c"]`` (spaces tolerated, empty items ignored)."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def requested(annotations: Mapping[str, str] | None) -> tuple[list[ModelRef], Blocked | None]:
    """The models a workload asks for, or why the request itself is invalid.

    Names must be unique across both annotations: each one is a directory
    ``/data/modelcache/models/<name>`` in the same pod.
    """
    annotations = annotations or {}
    refs: list[ModelRef] = []
    invalid: list[str] = []
    for kind, key in _ANNOTATION_KINDS:
        for name in split_names(annotations.get(key)):
            if not valid_name(name):
                invalid.append(f"{key}: {name!r}")
            refs.append(ModelRef(kind, name))
    if invalid:
        return refs, Blocked(
            BlockReason.INVALID_MODEL_NAME,
            "model names must be DNS-1123 subdomains (lowercase letters, digits, '-', '.'): "
            + ", ".join(invalid),
        )
    seen: dict[str, ModelRef] = {}
    dups: list[str] = []
    for ref in refs:
        if ref.name in seen:
            dups.append(f"{seen[ref.name].kind}/{ref.name} and {ref.kind}/{ref.name}")
        else:
            seen[ref.name] = ref
    if dups:
        return refs, Blocked(
            BlockReason.DUPLICATE_MODEL_NAME,
            "model names must be unique across ai.deckhouse.io/model and ai.deckhouse.io/clustermodel "
            "(each one is a directory under " + MODELS_DIR + "): " + "; ".join(dups),
        )
    return refs, None


def has_model_annotations(annotations: Mapping[str, str] | None) -> bool:
    annotations = annotations or {}
    return ANNOTATION_MODEL in annotations or ANNOTATION_CLUSTERMODEL in annotations


# ----------------------------------------------------------------- resolution


def resolve(
    refs: list[ModelRef], lookup: Callable[[ModelRef], Mapping[str, Any] | None], registry: str
) -> list[ResolvedModel] | Blocked:
    """Each requested model's Ready artifact, or the first reason one has none.

    ``lookup`` returns the Model/ClusterModel object (as Metacontroller sends
    it in ``related``) or None when it does not exist. ``registry`` is DMCR's
    address: every URI (and so every repository the pull credential grants)
    is rebuilt from it and the object's identity, never taken from status.
    """
    missing: list[str] = []
    not_ready: list[str] = []
    out: list[ResolvedModel] = []
    for ref in sorted(refs, key=lambda r: r.name):
        obj = lookup(ref)
        if obj is None:
            missing.append(f"{ref.kind} {ref.name!r}")
            continue
        resolved, why = _ready_artifact(ref, obj, registry)
        if resolved is None:
            not_ready.append(f"{ref.kind} {ref.name!r} ({why})")
        else:
            out.append(resolved)
    if missing:
        return Blocked(BlockReason.MODEL_NOT_FOUND, "not found: " + ", ".join(missing))
    if not_ready:
        return Blocked(BlockReason.MODEL_NOT_READY, "not Ready yet: " + ", ".join(not_ready))
    return out


def _ready_artifact(
    ref: ModelRef, obj: Mapping[str, Any], registry: str
) -> tuple[ResolvedModel | None, str]:
    md = obj.get("metadata") or {}
    if md.get("deletionTimestamp"):
        return None, "being deleted"
    status = obj.get("status") or {}
    phase = status.get("phase") or "no status yet"
    if phase != "Ready":
        return None, f"phase {phase}"
    uid = md.get("uid")
    if not isinstance(uid, str) or not uid:
        return None, "it has no metadata.uid"
    namespace = md.get("namespace") if ref.kind == ModelKind.MODEL else None
    repository = model_repository(namespace=namespace, name=ref.name, uid=uid)
    artifact = status.get("artifact") or {}
    digest = artifact.get("digest") or ""
    uri = f"{registry}/{repository}@{digest}"
    if artifact_problem(artifact, f"{registry}/{repository}") is not None or not _PINNED_URI.match(uri):
        return None, "status.artifact is not a digest-pinned artifact of its own repository"
    size = artifact.get("sizeBytes")
    family = (status.get("resolved") or {}).get("family") or ""
    return (
        ResolvedModel(
            name=ref.name,
            kind=ref.kind,
            uri=uri,
            digest=digest,
            family=str(family),
            size_bytes=size if isinstance(size, int) and size >= 0 else 0,
        ),
        "",
    )


def encode_resolution(models: list[ResolvedModel]) -> str:
    """Canonical compact JSON, sorted by name: equal resolutions are equal strings."""
    return compact([m.to_json() for m in sorted(models, key=lambda m: m.name)])


def decode_resolution(value: str) -> list[ResolvedModel]:
    """Parse the resolution annotation; ValueError when it is not one we write."""
    try:
        items = json.loads(value)
    except ValueError as e:
        raise ValueError(f"{ANNOTATION_RESOLUTION} is not JSON: {e}") from None
    except RecursionError:  # nested thousands deep: whoever may edit the workload may write it
        raise ValueError(f"{ANNOTATION_RESOLUTION} is not JSON: nested too deeply") from None
    if not isinstance(items, list):
        raise ValueError(f"{ANNOTATION_RESOLUTION} must be a JSON list")
    out: list[ResolvedModel] = []
    for item in items:
        try:
            m = ResolvedModel(
                name=item["name"],
                kind=ModelKind(item["kind"]),
                uri=item["uri"],
                digest=item["digest"],
                family=item.get("family") or "",
                size_bytes=int(item.get("sizeBytes") or 0),
            )
        except (TypeError, KeyError, ValueError) as e:
            raise ValueError(f"{ANNOTATION_RESOLUTION}: bad entry {item!r}: {e}") from None
        if not (isinstance(m.name, str) and _DNS_SUBDOMAIN.match(m.name)):
            raise ValueError(f"{ANNOTATION_RESOLUTION}: bad model name {m.name!r}")
        if not (isinstance(m.uri, str) and _PINNED_URI.match(m.uri) and m.uri.endswith("@" + m.digest)):
            raise ValueError(f"{ANNOTATION_RESOLUTION}: {m.name}: uri must be REGISTRY/REPO@sha256:<hex>")
        out.append(m)
    return sorted(out, key=lambda m: m.name)


def pull_secret_name(kind: str, name: str) -> str:
    """The workload's pull credential Secret, derived from the workload alone."""
    return dns_label("ai-models-pull", f"{kind.lower()}-{name}")
