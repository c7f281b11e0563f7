"""What a delivery mode is: the ``DeliveryMode`` protocol, what it needs, and the pod-spec edits modes share.

Rendering (``lib.delivery.rendering``) does what is the same in every mode:
the scheduling gate while the models are not resolved, the
``AI_MODELS_MODELS_DIR`` / ``AI_MODELS_MODELS`` env in every container, the
template annotation with the digests. A mode does the rest, on the pod spec
only:

- ``render(pod_spec, models, secret_name=..., config=...)`` adds how the
  files get to ``/data/modelcache/models/<name>``: volumes, mounts, init
  containers. It gets a private copy (the env is already in place) and
  returns the spec; a pure function of its arguments.
- ``strip(pod_spec)`` removes exactly what its ``render`` adds, and nothing
  else. Before any render, every registered mode's ``strip`` runs, so a
  workload switching from mode A to mode B keeps nothing of A, and a spec
  rendered by a mode strips back to the user's own spec.
- ``needs`` says what the cluster must provide for the pods to start (the
  decorator's pull Secret, the worker image, a CSI driver, a feature gate):
  documentation in code, for the install checks and the decorator.

Rule for names: everything a mode injects is named ``ai-models-*`` (``PREFIX``)
so it cannot collide with the user's own volumes and containers, and a mode
strips by its own names. Pure: no I/O, nothing read but the arguments.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lib.config import Config
from lib.delivery.resolution import ResolvedModel

PREFIX = "ai-models-"

PodSpec = dict[str, Any]


@dataclass(frozen=True)
class Needs:
    """What the cluster must provide for a mode's pods to start."""

    pull_secret: bool = False  # the decorator's per-workload pull Secret (ai-models-pull-<kind>-<name>)
    worker_image: bool = False  # the pod runs the module's worker image (pullable from its namespace)
    csi_driver: str | None = None  # a CSI driver registered on every node that runs such pods
    feature_gates: tuple[str, ...] = ()  # Kubernetes feature gates the rendered spec relies on


class DeliveryMode(Protocol):
    """One way of getting resolved models into a pod: see the module docstring."""

    @property
    def name(self) -> str:
        """The value of ``AI_MODELS_DELIVERY_MODE`` and of ``ai.deckhouse.io/delivery-mode``."""
        ...

    @property
    def needs(self) -> Needs: ...

    def strip(self, pod_spec: PodSpec) -> PodSpec:
        """``pod_spec`` without what this mode's ``render`` added (may edit it in place)."""
        ...

    def render(
        self, pod_spec: PodSpec, models: Sequence[ResolvedModel], *, secret_name: str, config: Config
    ) -> PodSpec:
        """``pod_spec`` (already stripped, env in place) with ``models`` delivered (may edit in place).

        ``models`` are sorted by name; ``secret_name`` is the workload's pull
        Secret, written by the decorator.
        """
        ...


# ------------------------------------------------------------ shared pod-spec edits


def drop(holder: dict[str, Any], key: str, injected: Callable[[Any], bool]) -> None:
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


def named(predicate: Callable[[str], bool]) -> Callable[[Any], bool]:
    """An item (volume, mount, container) whose ``name`` satisfies ``predicate``."""
    return lambda item: isinstance(item, dict) and predicate(str(item.get("name", "")))


def containers(pod_spec: PodSpec) -> list[dict[str, Any]]:
    """Every init container and container of the spec, in that order."""
    return [
        c for key in ("initContainers", "containers") for c in pod_spec.get(key) or [] if isinstance(c, dict)
    ]


def strip_volumes(pod_spec: PodSpec, ours: Callable[[str], bool]) -> PodSpec:
    """Remove the volumes named by ``ours`` and their mounts in every container."""
    drop(pod_spec, "volumes", named(ours))
    for c in containers(pod_spec):
        drop(c, "volumeMounts", named(ours))
    return pod_spec


def add_volumes(pod_spec: PodSpec, volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> PodSpec:
    """Append ``volumes`` to the pod and ``mounts`` to every container present (user init containers too)."""
    pod_spec["volumes"] = [*(pod_spec.get("volumes") or []), *volumes]
    for c in containers(pod_spec):
        c["volumeMounts"] = [*(c.get("volumeMounts") or []), *copy.deepcopy(mounts)]
    return pod_spec
