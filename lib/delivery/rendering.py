"""Rendering: the pod template a workload object should carry, as a pure function of it.

``desired_state`` reads only the workload (its model annotations and the
resolution the decorator wrote) and says Gate, Deliver or nothing.
``render`` turns a pod template and that state into the new template:

1. strip what any earlier mutation injected: the template annotation, the
   scheduling gate, the env, and whatever each registered delivery mode
   strips (``lib.delivery.modes.MODES``), so a new resolution or a new mode
   replaces the old injection wholesale and a template renders to itself;
2. Gate: the scheduling gate and the template annotation with null digests;
3. Deliver: the template annotation with the digests, the env in every
   container and user init container, then the chosen mode's ``render``
   (volumes, mounts, init containers).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lib.api.types import MODELS_DIR, SCHEDULING_GATE
from lib.config import Config
from lib.delivery.interface import drop
from lib.delivery.modes import MODES
from lib.delivery.resolution import (
    ANNOTATION_BLOCKED,
    ANNOTATION_RESOLUTION,
    ModelRef,
    ResolvedModel,
    compact,
    decode_resolution,
    has_model_annotations,
    pull_secret_name,
    requested,
)

# Annotation the webhook writes onto the pod template: any change of the
# requested models or of their digests changes the template, so the workload
# rolls out (and its generation moves, which also refreshes Metacontroller's
# customize cache, keyed by generation).
ANNOTATION_TEMPLATE = "ai.deckhouse.io/model-digests"
ENV_MODELS_DIR = "AI_MODELS_MODELS_DIR"
ENV_MODELS = "AI_MODELS_MODELS"
INJECTED_ENV = frozenset({ENV_MODELS_DIR, ENV_MODELS})

WORKLOAD_KINDS = {
    ("apps", "Deployment"): ("spec", "template"),
    ("apps", "StatefulSet"): ("spec", "template"),
    ("apps", "DaemonSet"): ("spec", "template"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}


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


def pod_template(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The object's pod template (None: not a workload kind, or the template is missing)."""
    path = template_path(obj)
    template: Any = obj if path is not None else None
    for part in path or ():
        template = template.get(part) if isinstance(template, dict) else None
    return template if isinstance(template, dict) else None


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
    drop(spec, "schedulingGates", lambda g: isinstance(g, dict) and g.get("name") == SCHEDULING_GATE)
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                drop(c, "env", lambda e: isinstance(e, dict) and e.get("name") in INJECTED_ENV)
    # Every registered mode, not only the one about to render: a mode switch leaves nothing behind.
    for mode in MODES.values():
        spec = mode.strip(spec)
    t["spec"] = spec
    return t


def render(template: Mapping[str, Any], state: State, config: Config, mode: str) -> dict[str, Any]:
    """The pod template for ``state`` delivered in ``mode`` (a key of ``MODES``): a pure function.

    The gate, the env and the template annotation are the same in every mode;
    the mode decides the volumes, the mounts and whether init containers run.
    """
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
        annotations[ANNOTATION_TEMPLATE] = compact({f"{r.kind}/{r.name}": None for r in state.refs})
        spec["schedulingGates"] = [*(spec.get("schedulingGates") or []), {"name": SCHEDULING_GATE}]
        return t
    models = sorted(state.models, key=lambda m: m.name)
    annotations[ANNOTATION_TEMPLATE] = compact({f"{m.kind}/{m.name}": m.digest for m in models})
    env = [
        {"name": ENV_MODELS_DIR, "value": MODELS_DIR},
        {
            "name": ENV_MODELS,
            "value": compact(
                [{"name": m.name, "path": m.path, "digest": m.digest, "family": m.family} for m in models]
            ),
        },
    ]
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            c["env"] = [*(c.get("env") or []), *copy.deepcopy(env)]
    t["spec"] = MODES[mode].render(spec, models, secret_name=state.secret_name, config=config)
    return t
