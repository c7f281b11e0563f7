"""Workload delivery, as pure functions shared by the decorator hook and the webhook.

The decorator (``hooks.workload``) reads a workload's model annotations, looks
the names up among the related Model/ClusterModel objects and writes the
outcome back onto the workload as annotations: either a *resolution* (the
digest-pinned artifacts) or a *blocked* reason. The mutating webhook
(``hooks.webhook``) turns the workload object, and nothing else, into a new pod
template. Keeping both halves here means the end-to-end harness can run the
very same code to build the pod it then starts.

Everything injected into a pod template carries the ``ai-models-`` prefix (or
one of the fixed env names), so a new mutation first strips what an earlier one
added and then adds the current set: applying the mutation to its own output
changes nothing, and a new resolution replaces the old injection wholesale.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lib.api.naming import dns_label, model_repository, short_hash
from lib.api.types import (
    ANNOTATION_CLUSTERMODEL,
    ANNOTATION_MODEL,
    MODELS_DIR,
    SCHEDULING_GATE,
)
from lib.config import Config
from lib.result import artifact_problem

# Annotations the decorator writes onto the workload (top-level metadata).
ANNOTATION_RESOLUTION = "ai.deckhouse.io/model-resolution"
ANNOTATION_BLOCKED = "ai.deckhouse.io/model-delivery-blocked"
# Annotation the webhook writes onto the pod template: any change of the
# requested models or of their digests changes the template, so the workload
# rolls out (and its generation moves, which also refreshes Metacontroller's
# customize cache, keyed by generation).
ANNOTATION_TEMPLATE = "ai.deckhouse.io/model-digests"
# Label the webhook keeps on workloads that name a model in either annotation.
# The DecoratorController selects on it: Metacontroller keeps one selector per
# kind, and an annotation selector cannot say "model OR clustermodel".
LABEL_CONSUMER = "ai.deckhouse.io/model-consumer"

PREFIX = "ai-models-"
CACHE_VOLUME = "ai-models-cache"
PULL_VOLUME = "ai-models-pull"
PULL_DIR = "/var/run/ai-models/pull"
AUTH_FILE = f"{PULL_DIR}/.dockerconfigjson"
CA_FILE = f"{PULL_DIR}/ca.crt"  # DMCR's CA, shipped in the pull Secret when configured
ENV_MODELS_DIR = "AI_MODELS_MODELS_DIR"
ENV_MODELS = "AI_MODELS_MODELS"
INJECTED_ENV = frozenset({ENV_MODELS_DIR, ENV_MODELS})

# The materialize step runs as this non-root user; emptyDir directories are
# world-writable and the files it writes world-readable, so any app user reads them.
WORKER_UID = 65532
# Headroom over the summed artifact sizes for the emptyDir sizeLimit.
SIZE_HEADROOM_RATIO = 0.05
SIZE_HEADROOM_BYTES = 64 << 20

MODE_INIT_CONTAINER = "InitContainer"
DELIVERY_MODES = frozenset({MODE_INIT_CONTAINER})

WORKLOAD_KINDS = {
    ("apps", "Deployment"): ("spec", "template"),
    ("apps", "StatefulSet"): ("spec", "template"),
    ("apps", "DaemonSet"): ("spec", "template"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
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


@dataclass(frozen=True, order=True)
class ModelRef:
    kind: ModelKind
    name: str


@dataclass(frozen=True)
class Blocked:
    reason: BlockReason
    message: str

    def encode(self) -> str:
        return _compact({"reason": str(self.reason), "message": self.message})


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
    return _compact([m.to_json() for m in sorted(models, key=lambda m: m.name)])


def decode_resolution(value: str) -> list[ResolvedModel]:
    """Parse the resolution annotation; ValueError when it is not one we write."""
    try:
        items = json.loads(value)
    except ValueError as e:
        raise ValueError(f"{ANNOTATION_RESOLUTION} is not JSON: {e}") from None
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


# ------------------------------------------------------------ what to deliver


@dataclass(frozen=True)
class Gate:
    """Hold the pods: the models are not resolved (yet) for this request."""

    refs: tuple[ModelRef, ...]
    why: str


@dataclass(frozen=True)
class Deliver:
    models: tuple[ResolvedModel, ...]
    secret_name: str


State = Gate | Deliver | None


def desired_state(obj: Mapping[str, Any]) -> tuple[State, list[str]]:
    """What the pod template of ``obj`` should carry, plus warnings for the user.

    None: the object asks for no models (pass untouched, strip an earlier
    injection). Gate: asked, but the decorator has not (yet) written a
    resolution that matches exactly the names asked for, or it wrote a
    blocked reason. Deliver: a matching resolution.
    """
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if not has_model_annotations(annotations):
        return None, []
    refs, invalid = requested(annotations)
    if not refs:
        return None, []
    key = tuple(sorted(refs))
    if invalid is not None:
        return Gate(key, invalid.message), [invalid.message]
    if annotations.get(ANNOTATION_BLOCKED):
        return Gate(key, "delivery blocked"), []
    value = annotations.get(ANNOTATION_RESOLUTION)
    if not value:
        return Gate(key, "waiting for model resolution"), []
    try:
        models = decode_resolution(value)
    except ValueError as e:
        return Gate(key, str(e)), [f"ignoring {ANNOTATION_RESOLUTION}: {e}"]
    if tuple(sorted(m.ref for m in models)) != key:
        # The annotations changed after the last resolution: wait for the next one.
        return Gate(key, "resolution is for another set of models"), []
    name = meta.get("name")
    if not name:
        return Gate(key, "object has no name yet"), []
    return Deliver(tuple(models), pull_secret_name(str(obj.get("kind", "")), name)), []


def template_path(obj: Mapping[str, Any]) -> tuple[str, ...] | None:
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    return WORKLOAD_KINDS.get((group, str(obj.get("kind", ""))))


# ------------------------------------------------------- pod template changes


def strip(template: Mapping[str, Any]) -> dict[str, Any]:
    """``template`` without anything an earlier mutation injected (and nothing else changed)."""
    t = copy.deepcopy(dict(template))
    meta = t.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict):
        if meta["annotations"].pop(ANNOTATION_TEMPLATE, None) is not None and not meta["annotations"]:
            del meta["annotations"]
    spec = t.get("spec")
    if not isinstance(spec, dict):
        return t
    _drop(spec, "initContainers", _injected)
    _drop(spec, "volumes", _injected)
    _drop(spec, "schedulingGates", lambda g: isinstance(g, dict) and g.get("name") == SCHEDULING_GATE)
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _drop(c, "env", lambda e: isinstance(e, dict) and e.get("name") in INJECTED_ENV)
                _drop(c, "volumeMounts", _injected)
    return t


def _drop(holder: dict[str, Any], key: str, injected: Callable[[Any], bool]) -> None:
    """Remove injected items from ``holder[key]``; drop the key if that emptied it."""
    items = holder.get(key)
    if not isinstance(items, list):
        return
    kept = [x for x in items if not injected(x)]
    if len(kept) == len(items):
        return
    if kept:
        holder[key] = kept
    else:
        del holder[key]


def _injected(item: Any) -> bool:
    return isinstance(item, dict) and str(item.get("name", "")).startswith(PREFIX)


def render(template: Mapping[str, Any], state: State, config: Config) -> dict[str, Any]:
    """The pod template for ``state``: a pure function of its arguments."""
    t = strip(template)
    if state is None:
        return t
    if not isinstance(t.get("spec"), dict):
        t["spec"] = {}
    if not isinstance(t.get("metadata"), dict):
        t["metadata"] = {}
    spec, meta = t["spec"], t["metadata"]
    if not isinstance(meta.get("annotations"), dict):
        meta["annotations"] = {}
    annotations = meta["annotations"]
    if isinstance(state, Gate):
        annotations[ANNOTATION_TEMPLATE] = _compact({f"{r.kind}/{r.name}": None for r in state.refs})
        spec["schedulingGates"] = [*(spec.get("schedulingGates") or []), {"name": SCHEDULING_GATE}]
        return t
    models = sorted(state.models, key=lambda m: m.name)
    annotations[ANNOTATION_TEMPLATE] = _compact({f"{m.kind}/{m.name}": m.digest for m in models})
    spec["volumes"] = [*(spec.get("volumes") or []), *_volumes(models, state.secret_name, _ships_ca(config))]
    env = [
        {"name": ENV_MODELS_DIR, "value": MODELS_DIR},
        {
            "name": ENV_MODELS,
            "value": _compact(
                [{"name": m.name, "path": m.path, "digest": m.digest, "family": m.family} for m in models]
            ),
        },
    ]
    mount = {"name": CACHE_VOLUME, "mountPath": MODELS_DIR, "readOnly": True}
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            c["env"] = [*(c.get("env") or []), *copy.deepcopy(env)]
            c["volumeMounts"] = [*(c.get("volumeMounts") or []), dict(mount)]
    ours = [_init_container(m, config) for m in models]
    spec["initContainers"] = _insert_after_sidecars(spec.get("initContainers") or [], ours)
    return t


def _volumes(models: list[ResolvedModel], secret_name: str, with_ca: bool) -> list[dict[str, Any]]:
    total = sum(m.size_bytes for m in models)
    items = [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}]
    if with_ca:
        items.append({"key": "ca.crt", "path": "ca.crt"})
    empty_dir: dict[str, Any] = {}
    if total > 0:
        empty_dir["sizeLimit"] = quantity(math.ceil(total * (1 + SIZE_HEADROOM_RATIO)) + SIZE_HEADROOM_BYTES)
    return [
        {"name": CACHE_VOLUME, "emptyDir": empty_dir},
        {
            "name": PULL_VOLUME,
            "secret": {
                "secretName": secret_name,
                "items": items,
                "defaultMode": 0o444,
            },
        },
    ]


def init_container_name(model: str) -> str:
    """``ai-models-materialize-<model>`` as a DNS label (model names may hold dots)."""
    name = f"{PREFIX}materialize-{model}"
    if len(name) <= 63 and _DNS_LABEL.match(name):
        return name
    return dns_label(f"{PREFIX}materialize", f"{model.replace('.', '-')}-{short_hash(model)}")


def _ships_ca(config: Config) -> bool:
    return bool(config.registry_ca_pem) and not config.registry_insecure


def materialize_args(model: ResolvedModel, config: Config) -> list[str]:
    args = ["--artifact", model.uri, "--into", model.path, "--auth-file", AUTH_FILE]
    if config.registry_insecure:
        args.append("--insecure-registry")
    elif _ships_ca(config):
        args += ["--ca-file", CA_FILE]
    return args


def _init_container(model: ResolvedModel, config: Config) -> dict[str, Any]:
    # Every field the API server would default is set, so that the object we
    # get back on the next admission compares equal and the patch stays empty.
    return {
        "name": init_container_name(model.name),
        "image": config.worker_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "jobs", "materialize"],
        "args": materialize_args(model, config),
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": CACHE_VOLUME, "mountPath": MODELS_DIR},
            {"name": PULL_VOLUME, "mountPath": PULL_DIR, "readOnly": True},
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _insert_after_sidecars(
    existing: list[dict[str, Any]], ours: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Ours go after the last native sidecar (e.g. a mesh proxy the pull needs), before other inits."""
    cut = 0
    for i, c in enumerate(existing):
        if c.get("restartPolicy") == "Always":
            cut = i + 1
    return [*existing[:cut], *ours, *existing[cut:]]


def quantity(n: int) -> str:
    """Bytes rounded up to Mi, in the canonical form the API server stores (``2Gi``, not ``2048Mi``)."""
    value, suffix = math.ceil(n / (1 << 20)), "Mi"
    for bigger in ("Gi", "Ti", "Pi"):
        if value % 1024:
            break
        value, suffix = value // 1024, bigger
    return f"{value}{suffix}"


# ------------------------------------------------------------ whole workload


@dataclass(frozen=True)
class Mutation:
    """The webhook's answer for one workload object."""

    patch: list[dict[str, Any]]  # RFC 6902, relative to the object's root
    warnings: list[str]
    state: State


def mutate_object(obj: Mapping[str, Any], config: Config) -> Mutation:
    """The JSONPatch that brings ``obj``'s consumer label and pod template to their desired state.

    Unknown kinds and, for objects that name models, unknown delivery modes
    pass untouched, with a warning.
    """
    path = template_path(obj)
    if path is None:
        return Mutation([], [f"ai-models: {obj.get('kind')} is not a workload kind it mutates"], None)
    state, warnings = desired_state(obj)
    warnings = [f"ai-models: {w}" for w in warnings]
    if state is not None and config.delivery_mode not in DELIVERY_MODES:
        warning = f"ai-models: delivery mode {config.delivery_mode!r} is not implemented; object untouched"
        return Mutation([], [*warnings, warning], state)
    meta = obj.get("metadata") or {}
    ops = _label_patch(meta, has_model_annotations(meta.get("annotations")))
    template: Any = obj
    for part in path:
        template = template.get(part) if isinstance(template, dict) else None
    if not isinstance(template, dict):
        return Mutation(ops, [*warnings, f"ai-models: {'.'.join(path)} is missing"], state)
    new = render(template, state, config)
    prefix = "".join(f"/{_escape(p)}" for p in path)
    return Mutation([*ops, *json_patch(template, new, prefix)], warnings, state)


def _label_patch(meta: Mapping[str, Any], consumer: bool) -> list[dict[str, Any]]:
    """The consumer label (the one DecoratorController selects by it), and for a workload that
    no longer names models, the decorator's annotations dropped: with no finalize hook
    (metacontroller/workloads.yaml) nobody else removes them."""
    labels = meta.get("labels")
    current = dict(labels) if isinstance(labels, dict) else {}
    wanted = dict(current)
    if consumer:
        wanted[LABEL_CONSUMER] = "true"
    else:
        wanted.pop(LABEL_CONSUMER, None)
    ops = [] if wanted == current else json_patch({"labels": labels} if "labels" in meta else {},
                                                   {"labels": wanted}, "/metadata")
    annotations = meta.get("annotations")
    if not consumer and isinstance(annotations, dict):
        for key in (ANNOTATION_RESOLUTION, ANNOTATION_BLOCKED):
            if key in annotations:
                ops.append({"op": "remove", "path": f"/metadata/annotations/{_escape(key)}"})
    return ops


# ------------------------------------------------------------------ JSONPatch


def json_patch(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """RFC 6902 operations turning ``old`` into ``new``.

    Objects are compared key by key; lists and scalars are replaced whole
    (the API server applies the patch to the very object it sent, and whole
    lists keep the patch obvious to read).
    """
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = []
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
        for key, value in new.items():
            sub = f"{path}/{_escape(key)}"
            if key not in old:
                ops.append({"op": "add", "path": sub, "value": value})
            elif old[key] != value:
                ops.extend(json_patch(old[key], value, sub))
        return ops
    if old == new:
        return []
    return [{"op": "replace", "path": path, "value": new}]


def _escape(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
