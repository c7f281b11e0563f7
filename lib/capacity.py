"""DMCR's capacity: refuse a model that cannot fit before any byte of it moves.

Why here and not in DMCR: distribution has no quota, and its own 507 comes
only once the disk is full, after hours of transfer and with other models
half-written beside it. The module knows two things the registry does not:
the size of a model before it is fetched (the Hugging Face API's file sizes,
an Ollama manifest's layer sizes, a catalog manifest, an upload's
``Content-Length``) and the size of every published artifact
(``status.artifact.sizeBytes``).

- **Capacity** is a setting (``AI_MODELS_REGISTRY_CAPACITY_BYTES``, bytes or a
  Kubernetes quantity such as ``500Gi``; 0 = no check), handed to the
  worker as ``--registry-capacity-bytes``.
- **Used** is the sum of ``status.artifact.sizeBytes`` of every Model and
  ClusterModel, written by the sweep into the ConfigMap
  ``ai-models-dmcr-usage`` (``usedBytes``, ``updatedAt``) of the module
  namespace and read by the worker (``--registry-usage NAMESPACE/NAME``).
  Missing or unreadable usage counts as 0 and the message says so: a
  missing record never refuses a model (DMCR's own 507 still ends as
  ``InsufficientStorage``).

- **Namespace quota** (``AI_MODELS_NAMESPACE_QUOTA_BYTES``, same units; 0 =
  none): the share of DMCR one namespace's Models may hold, so that one
  tenant cannot fill the registry for everyone. Used is the sum of the
  ``status.artifact.sizeBytes`` of the namespace's *other* Models (logical
  size: bytes mounted from a ClusterModel count too; the Model being
  published replaces its own artifact), listed by the worker itself at check
  time: fresh, and nothing about one tenant is published to another (the
  cluster-wide usage record holds one number). The hook hands the worker
  ``--namespace-quota-bytes`` and the Model's namespace (``--quota-namespace``,
  from the object Metacontroller sent, never from anything a tenant writes)
  and lets its Role ``list`` Models of that namespace. ClusterModels have no
  quota. Status is written through ``models/status``, which no tenant role
  grants, so a tenant cannot shrink its recorded usage.

Pure: the reader of the ConfigMap is injected (``jobs/capacity.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from lib.api.types import Reason
from lib.errors import SourceError

USAGE_CONFIGMAP = "ai-models-dmcr-usage"
USED_KEY = "usedBytes"
UPDATED_KEY = "updatedAt"
SETTING = "AI_MODELS_REGISTRY_CAPACITY_BYTES"
QUOTA_SETTING = "AI_MODELS_NAMESPACE_QUOTA_BYTES"

_SUFFIXES = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60,
}  # fmt: skip
_QUANTITY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTPE]i|[kMGTPE]|)\s*")


def parse_quantity(text: str) -> int:
    """Bytes from ``123``, ``500Gi``, ``1.5T`` (Kubernetes quantity suffixes); ``ValueError`` otherwise."""
    m = _QUANTITY.fullmatch(text)
    if not m or m[2] not in _SUFFIXES:
        raise ValueError(f"{text!r}: a byte count like 1099511627776, 500Gi or 2T")
    try:
        return int(Decimal(m[1]) * _SUFFIXES[m[2]])
    except InvalidOperation:
        raise ValueError(f"{text!r}: not a number") from None


def human(n: int) -> str:
    """``86.7 MiB (90868203 bytes)``: readable, and exact for anyone comparing."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            break
        value /= 1024
    short = f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
    return f"{short} ({n} bytes)"


@dataclass(frozen=True)
class Usage:
    """What the sweep recorded: ``used`` bytes, or None with ``problem`` saying why it is unknown."""

    used: int | None
    updated_at: str = ""
    problem: str = ""


def usage_from_data(data: Mapping[str, str] | None) -> Usage:
    """The ConfigMap's ``data`` as a ``Usage`` (unknown when absent or malformed)."""
    if data is None:
        return Usage(None, problem=f"ConfigMap {USAGE_CONFIGMAP} not found")
    raw = str(data.get(USED_KEY, "")).strip()
    if not raw.isdigit():
        return Usage(None, problem=f"ConfigMap {USAGE_CONFIGMAP} has no valid {USED_KEY} ({raw[:40]!r})")
    return Usage(int(raw), str(data.get(UPDATED_KEY, "")))


def read_usage(get: Callable[[], Mapping[str, str] | None]) -> Usage:
    """``get()`` (the ConfigMap's data, None when missing) as a ``Usage``; never raises."""
    try:
        return usage_from_data(get())
    except Exception as e:  # unreadable: the API is down, RBAC, no cluster at all
        why = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"  # one line in a status message
        return Usage(None, problem=f"cannot read ConfigMap {USAGE_CONFIGMAP}: {why}")


def refusal(needed: int, capacity: int, usage: Usage) -> str | None:
    """The refusal message when ``needed`` bytes do not fit, else None (pure)."""
    used = usage.used or 0
    if capacity <= 0 or used + needed <= capacity:
        return None
    if usage.used is None:
        used_text = f"used unknown ({usage.problem}; counted as 0)"
    else:
        when = f", recorded {usage.updated_at}" if usage.updated_at else ""
        used_text = f"used {human(used)}{when}"
    free = max(capacity - used, 0)
    return (
        f"DMCR cannot hold this model: it needs {human(needed)}, free {human(free)} "
        f"(capacity {human(capacity)}, {used_text}). Delete unused Models and ClusterModels, "
        f"or ask the cluster administrator to raise {SETTING}"
    )


def quota_refusal(needed: int, quota: int, namespace: str, used: Usage) -> str | None:
    """The refusal message when ``namespace`` (having ``used``) cannot hold ``needed`` more bytes."""
    taken = used.used or 0
    if quota <= 0 or not namespace or taken + needed <= quota:
        return None
    known = used.used is not None
    used_text = f"used {human(taken)}" if known else f"used unknown ({used.problem}; counted as 0)"
    return (
        f"namespace {namespace} cannot hold this model in DMCR: it needs {human(needed)}, free "
        f"{human(max(quota - taken, 0))} of the namespace's quota (quota {human(quota)}, {used_text} by "
        f"its other Models). Delete unused Models of this namespace, or ask the cluster administrator "
        f"to raise {QUOTA_SETTING}"
    )


def read_namespace_usage(models: Callable[[], Iterable[Mapping[str, Any]]], own_repository: str) -> Usage:
    """Bytes held by the Models ``models()`` lists, except the one publishing into
    ``own_repository`` (it replaces its own artifact); never raises."""
    try:
        others = [m for m in models() if _repository(m) != own_repository]
    except Exception as e:  # the API is down, RBAC: counted as 0 and said so
        why = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        return Usage(None, problem=f"cannot list the namespace's Models: {why}")
    return Usage(total_used(others))


def _repository(obj: Mapping[str, Any]) -> str:
    """The REGISTRY/REPOSITORY of an object's published artifact ("" when none)."""
    artifact = (obj.get("status") or {}).get("artifact") or {}
    uri = artifact.get("uri") if isinstance(artifact, Mapping) else None
    return uri.split("@", 1)[0] if isinstance(uri, str) else ""


class InsufficientCapacity(SourceError):
    """The model does not fit. A ``SourceError`` so every caller that maps a source's reason
    (the publish command, the upload session's 507) reports it as ``InsufficientStorage``."""

    def __init__(self, message: str):
        super().__init__(Reason.INSUFFICIENT_STORAGE, message)


def _no_usage() -> Usage:
    return Usage(None, problem="no usage record configured")


@dataclass(frozen=True)
class Capacity:
    """The check a worker runs once it knows a model's size, before pushing it."""

    capacity: int
    read_usage: Callable[[], Usage] = _no_usage
    namespace: str = ""  # the Model's namespace ("" for a ClusterModel: no quota)
    namespace_quota: int = 0
    read_namespace_usage: Callable[[], Usage] = _no_usage

    @property
    def active(self) -> bool:
        return self.capacity > 0 or self.quota_active

    @property
    def quota_active(self) -> bool:
        return self.namespace_quota > 0 and bool(self.namespace)

    def admit(self, needed: int) -> None:
        """Return when ``needed`` bytes fit; ``InsufficientCapacity`` with the numbers otherwise."""
        if self.capacity > 0 and (message := refusal(needed, self.capacity, self.read_usage())):
            raise InsufficientCapacity(message)
        self.admit_quota(needed)

    def admit_quota(self, needed: int) -> None:
        """The namespace quota alone, read fresh. ``admit`` runs it before any byte moves; a
        publish runs it again just before the manifest is tagged, to refuse what a concurrent
        publish (checked at the same moment, finished first) pushed over the quota, and a
        stream whose size was unknown up front."""
        if not self.quota_active:
            return
        message = quota_refusal(needed, self.namespace_quota, self.namespace, self.read_namespace_usage())
        if message is not None:
            raise InsufficientCapacity(message)


def artifact_size(obj: Mapping[str, Any]) -> int:
    """``status.artifact.sizeBytes`` of a Model or ClusterModel, 0 when it has none."""
    artifact = (obj.get("status") or {}).get("artifact") or {}
    size = artifact.get("sizeBytes") if isinstance(artifact, Mapping) else None
    return size if type(size) is int and size > 0 else 0


def total_used(objects: Iterable[Mapping[str, Any]]) -> int:
    """What DMCR holds for the live objects: the sum of their artifacts' sizes."""
    return sum(artifact_size(o) for o in objects)


def usage_data(used: int, updated_at: str) -> dict[str, str]:
    """The ConfigMap's ``data`` for ``used`` bytes."""
    return {USED_KEY: str(used), UPDATED_KEY: updated_at}
