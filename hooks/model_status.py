"""Reading the world for the Model hooks: worker results, Job state, progress, counters, time.

The worker's result is the ``ai.deckhouse.io/result`` annotation it patches on
its own Job before it exits (read with ``hooks/worker_jobs.py``); a worker that
died before writing it (OOM-killed, crashed, past its deadline) is described
from the Job's Failed condition.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hooks.model_parent import ModelRef
from hooks.worker_jobs import LABEL_WORKER, adopt, failed_without_result, job_label, job_result, job_state
from lib.api.conditions import latest_time
from lib.api.types import ANNOTATION_PROGRESS, LABEL_MODEL_UID, Reason
from lib.result import INT64_MAX, artifact_problem

Obj = dict[str, Any]

JOB = "Job.batch/v1"
SECRET = "Secret.v1"
SERVICE = "Service.v1"
SERVICE_ACCOUNT = "ServiceAccount.v1"
ROLE = "Role.rbac.authorization.k8s.io/v1"
ROLE_BINDING = "RoleBinding.rbac.authorization.k8s.io/v1"
INGRESS = "Ingress.networking.k8s.io/v1"
CATALOG_SOURCE = "ModelCatalogSource.ai.deckhouse.io/v1alpha1"
NAMESPACE = "Namespace.v1"

# The child types the Model/ClusterModel CompositeControllers declare.
CHILD_TYPES = (JOB, SECRET, SERVICE, SERVICE_ACCOUNT, ROLE, ROLE_BINDING, INGRESS)

# CRD-declared fields of status.artifact / status.resolved / status.source.
ARTIFACT_FIELDS = {"uri": str, "digest": str, "mediaType": str, "sizeBytes": int}
RESOLVED_FIELDS = {
    "format": str,
    "family": str,
    "architecture": str,
    "parameterCount": int,
    "quantization": str,
    "contextWindowTokens": int,
    "supportedEndpointTypes": list,
    "supportedFeatures": list,
}
SOURCE_FIELDS = {"resolvedType": str, "resolvedRevision": str, "remoteDigest": str}
# The CRD's maxLength of those string fields (and of each item of the lists): a longer value,
# which only a forged result carries, is left out; copied, it would fail the whole status write.
MAX_LENGTH = {
    "uri": 1024,
    "digest": 128,
    "mediaType": 256,
    "format": 64,
    "family": 256,
    "architecture": 256,
    "quantization": 64,
    "resolvedType": 64,
    "resolvedRevision": 256,
    "remoteDigest": 128,
}
MAX_ITEM_LENGTH = 128

_PROGRESS = re.compile(r"^(100|[1-9]?[0-9])%$")
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]{0,126}[A-Za-z0-9_])?$")
MAX_MESSAGE = 1024


def valid_reason(reason: Any, default: str) -> str:
    """``reason`` if it fits the CRD's condition-reason pattern, else ``default``: never echo junk."""
    return reason if isinstance(reason, str) and _REASON.match(reason) else default


def at(obj: Any, *keys: str) -> Obj:
    """The mapping at ``keys``, ``{}`` where a level is absent or not a mapping: an object's
    shape is the API server's promise (or a tenant's word), never a reason for a 500."""
    for key in keys:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj if isinstance(obj, dict) else {}


def objects(group: Mapping[str, Any] | None, kind_key: str) -> list[Obj]:
    """The objects of one ``Kind.apiVersion`` key of a children/related map, in key order."""
    items = (group or {}).get(kind_key) or {}
    if not isinstance(items, Mapping):
        return []
    return [items[k] for k in sorted(items) if isinstance(items[k], dict)]


def by_name(group: Mapping[str, Any] | None, kind_key: str, namespace: str, name: str) -> Obj | None:
    items = (group or {}).get(kind_key) or {}
    if not isinstance(items, Mapping):
        return None
    found = items.get(f"{namespace}/{name}") if namespace else items.get(name)
    if found is None:  # v1-style keys (name only) are accepted too
        found = items.get(name)
    return found if isinstance(found, dict) else None


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Outcome:
    """What the worker of one Job reported so far (its Job's result annotation and conditions)."""

    success: Obj | None = None  # a result with an artifact digest
    error: tuple[str, str] | None = None  # (reason, message) from a result or a failed Job
    job_finished: bool = False  # Complete or Failed per the Job itself
    job_failed: bool = False
    job_succeeded: bool = False
    started: bool = False  # the Job exists (observed)
    progress: str = ""
    # Results refused by the trust check ("namespace/job: why"): shown, never copied.
    rejected: tuple[str, ...] = ()


def outcome(job: Obj | None, destination: str) -> Outcome:
    """The verdict of one worker Job (pure).

    A success counts only when its artifact is a publish of ``destination``
    (``REGISTRY/REPOSITORY`` the hook derived itself); any other is listed in
    ``rejected`` and otherwise ignored. A Job that failed without a result (a
    crash, an OOM kill, a deadline) is described from its Failed condition.
    """
    state = job_state(job)
    if not state.exists:
        return Outcome()
    doc, unreadable = job_result(job)
    rejected: list[str] = []
    success = None
    error: tuple[str, str] | None = None
    name = job_label(job)
    if unreadable:
        rejected.append(f"{name}: {unreadable}")
    elif doc is not None:
        art, err = doc.get("artifact"), doc.get("error")
        if isinstance(err, dict):
            reason = valid_reason(err.get("reason"), Reason.PUBLICATION_FAILED)
            error = (reason, clip(str(err.get("message") or "")))
        elif isinstance(art, dict) and isinstance(art.get("digest"), str) and art["digest"]:
            problem = artifact_problem(art, destination)
            if problem is None:
                success = doc
            else:
                rejected.append(f"{name}: {problem}")
    if state.failed and error is None and success is None:
        namespace, _, short = name.partition("/")
        error = (Reason.WORKER_FAILED, clip(failed_without_result("worker", state.why, short, namespace)))
    progress = ""
    annotations = ((job or {}).get("metadata") or {}).get("annotations") or {}
    p = annotations.get(ANNOTATION_PROGRESS) if isinstance(annotations, dict) else None
    if isinstance(p, str) and _PROGRESS.match(p.strip()):
        progress = p.strip()
    return Outcome(
        success=success,
        error=error,
        job_finished=state.finished,
        job_failed=state.failed,
        job_succeeded=state.succeeded,
        started=True,
        progress=progress,
        rejected=tuple(sorted(set(rejected))),
    )


def adopted(
    m: ModelRef, group: Obj, worker: str, counters: tuple[int, ...], labels: tuple[str, ...]
) -> tuple[int, ...]:
    """The newest of (status counters, counters carried by observed Jobs of ``m``'s ``worker``):
    a status write lost after a new attempt's children were applied loses nothing."""
    return adopt(objects(group, JOB), {LABEL_WORKER: worker, LABEL_MODEL_UID: m.uid}, counters, labels)


def pick(source: Any, fields: Mapping[str, type]) -> Obj:
    """Only the CRD-declared fields of ``source``, with the declared JSON types and within the
    CRD's bounds (``MAX_LENGTH``, ``MAX_ITEM_LENGTH``, int64); anything else is left out."""
    out: Obj = {}
    if not isinstance(source, Mapping):
        return out
    for key, typ in fields.items():
        v = source.get(key)
        if typ is int:
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= INT64_MAX:
                out[key] = v
        elif typ is list:
            if isinstance(v, list):  # a CRD "set": unique items, first occurrence kept
                items = (x for x in v if isinstance(x, str) and 0 < len(x) <= MAX_ITEM_LENGTH)
                out[key] = list(dict.fromkeys(items))
        elif isinstance(v, str) and 0 < len(v) <= MAX_LENGTH.get(key, MAX_MESSAGE):
            out[key] = v
    return out


def _times(obj: Any) -> Iterator[Any]:
    """Timestamps the API server writes on an object: creation, and in its status
    start/completion, condition transitions and container start/finish."""
    if not isinstance(obj, dict):
        return
    yield (obj.get("metadata") or {}).get("creationTimestamp")
    st = obj.get("status")
    if not isinstance(st, dict):
        return
    yield st.get("startTime")
    yield st.get("completionTime")
    for c in st.get("conditions") or ():
        if isinstance(c, dict):
            yield c.get("lastTransitionTime")
    for cs in st.get("containerStatuses") or ():
        if isinstance(cs, dict):
            for state in (cs.get("state"), cs.get("lastState")):
                if isinstance(state, dict):
                    yield ((state.get("running") or {}).get("startedAt"))
                    yield ((state.get("terminated") or {}).get("finishedAt"))


def request_time(req: Mapping[str, Any]) -> str:
    """The newest instant the request proves has passed: a clock-free "now".

    The max of the timestamps found in the parent (creation, its own
    conditions) and in every child and related object (creation, Job/Pod start
    and completion, container start/finish, condition transitions).
    """
    parent = req.get("parent") or {}
    values: list[Any] = [(parent.get("metadata") or {}).get("creationTimestamp")]
    for c in (parent.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict):
            values.append(c.get("lastTransitionTime"))
    for group in (req.get("children"), req.get("related")):
        if not isinstance(group, Mapping):
            continue
        for items in group.values():
            if isinstance(items, Mapping):
                for obj in items.values():
                    values.extend(_times(obj))
    return latest_time(values)
