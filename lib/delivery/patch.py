"""Patching: the webhook's answer for one workload object, as an RFC 6902 JSONPatch.

``mutate_object`` picks the pod template by kind, the state
(``rendering.desired_state``) and the delivery mode (``modes.choose_mode``),
renders the template and diffs it against the object it was sent. Applying
the answer to its own output gives an empty patch: every field the API
server would default is rendered explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lib.config import Config
from lib.delivery.conflicts import conflict_block, mount_conflicts
from lib.delivery.init_container import MODE_INIT_CONTAINER
from lib.delivery.modes import choose_mode
from lib.delivery.rendering import Deliver, Gate, State, desired_state, pod_template, render, template_path
from lib.delivery.resolution import ANNOTATION_BLOCKED, ANNOTATION_RESOLUTION, has_model_annotations

# Label the webhook keeps on workloads that name a model in either annotation.
# The DecoratorController selects on it: Metacontroller keeps one selector per
# kind, and an annotation selector cannot say "model OR clustermodel".
LABEL_CONSUMER = "ai.deckhouse.io/model-consumer"


@dataclass(frozen=True)
class Mutation:
    """The webhook's answer for one workload object."""

    patch: list[dict[str, Any]]  # RFC 6902, relative to the object's root
    warnings: list[str]
    state: State


def mutate_object(obj: Mapping[str, Any], config: Config) -> Mutation:
    """The JSONPatch that brings ``obj``'s consumer label and pod template to their desired state.

    Unknown kinds pass untouched, with a warning. The delivery mode is the
    workload's ``ai.deckhouse.io/delivery-mode`` override or the module's
    setting (``lib.delivery.modes.choose_mode``): an invalid override falls back
    to the module's mode with a warning; an unknown module mode leaves an object
    that names models untouched, with a warning.
    """
    path = template_path(obj)
    if path is None:
        return Mutation([], [f"ai-models: {obj.get('kind')} is not a workload kind it mutates"], None)
    state, warnings = desired_state(obj)
    warnings = [f"ai-models: {w}" for w in warnings]
    meta = obj.get("metadata") or {}
    mode = MODE_INIT_CONTAINER  # unused when state is None: render only strips
    if state is not None:
        choice = choose_mode(meta.get("annotations"), config.delivery_mode)
        warnings += [f"ai-models: {w}" for w in choice.warnings]
        if choice.mode is None:
            return Mutation([], warnings, state)
        mode = choice.mode
    ops = _label_patch(meta, has_model_annotations(meta.get("annotations")))
    template = pod_template(obj)
    if template is None:
        return Mutation(ops, [*warnings, f"ai-models: {'.'.join(path)} is missing"], state)
    if isinstance(state, Deliver):
        # The decorator blocks this too (MountPathConflict); until it has seen this version of the
        # object, gate rather than hand the API server a template it refuses as a duplicate mount.
        problems = mount_conflicts(template, state.models, mode, config, state.secret_name)
        if problems:
            state = Gate(tuple(sorted(m.ref for m in state.models)), "mount path conflict")
            warnings += [f"ai-models: {conflict_block(problems).message}"]
    new = render(template, state, config, mode)
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
