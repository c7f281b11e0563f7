"""Reading the world for the Model hooks: worker results, Job state, progress, time.

The worker's result is its container's termination message (DESIGN.md). With
``terminationMessagePolicy: FallbackToLogsOnError`` a worker that died before
writing it (OOM-killed, crashed) leaves the tail of its log there instead, so a
message that is not a JSON object is treated as "no result": the failure is
then described from the container's terminated state (reason, exit code) and
the last log line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hooks.model_children import LABEL_WORKER_JOB, WORKER_CONTAINER
from lib.api.conditions import latest_time, parse_time
from lib.api.types import ANNOTATION_PROGRESS, Reason
from lib.result import artifact_problem

Obj = dict[str, Any]

JOB = "Job.batch/v1"
POD = "Pod.v1"
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

_PROGRESS = re.compile(r"^(100|[1-9]?[0-9])%$")
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]{0,126}[A-Za-z0-9_])?$")
MAX_MESSAGE = 1024


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
class Termination:
    """One terminated worker container."""

    result: Obj | None  # the parsed JSON result, when the message was one
    reason: str  # the container's terminated reason (Completed, Error, OOMKilled, ...)
    exit_code: int
    tail: str  # a non-JSON message (log tail), clipped
    finished_at: str
    pod: str = ""  # namespace/name of the Pod, to name it when its result is refused


def _pod_name(pod: Obj) -> str:
    md = pod.get("metadata") or {}
    return clip(f"{md.get('namespace') or ''}/{md.get('name') or ''}".lstrip("/"), 120)


def _terminations(pod: Obj) -> Iterator[Termination]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or ():
        if not isinstance(cs, dict) or cs.get("name") != WORKER_CONTAINER:
            continue
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if not isinstance(term, dict):
            continue
        message = term.get("message") or ""
        result: Obj | None = None
        tail = ""
        if isinstance(message, str) and message.strip():
            try:
                parsed = json.loads(message)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and ("artifact" in parsed or "error" in parsed):
                result = parsed
            else:
                lines = [ln for ln in message.strip().splitlines() if ln.strip()]
                tail = clip(lines[-1] if lines else "", 300)
        code = term.get("exitCode")
        yield Termination(
            result=result,
            reason=str(term.get("reason") or ""),
            exit_code=code if isinstance(code, int) else -1,
            tail=tail,
            finished_at=str(term.get("finishedAt") or ""),
            pod=_pod_name(pod),
        )


def _controller_uid(obj: Obj) -> str:
    refs = (obj.get("metadata") or {}).get("ownerReferences")
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, dict) and ref.get("controller") is True:
            return str(ref.get("uid") or "")
    return ""


def job_pods(related: Mapping[str, Any] | None, job_name: str, job: Obj | None = None) -> list[Obj]:
    """Related Pods created by the Job ``job_name`` (by our label, or the Job controller's).

    Labels are written by whoever creates the Pod, so when the Job is observed
    a Pod must also be controlled by that Job's UID (the Job controller sets
    it). That keeps stray Pods out; a tenant can still forge both, which is
    why every result is checked for content as well (``outcome``).
    """
    job_uid = str(((job or {}).get("metadata") or {}).get("uid") or "")
    out = []
    for pod in objects(related, POD):
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if job_name not in (
            labels.get(LABEL_WORKER_JOB),
            labels.get("batch.kubernetes.io/job-name"),
            labels.get("job-name"),
        ):
            continue
        if job_uid and _controller_uid(pod) != job_uid:
            continue
        out.append(pod)
    return out


@dataclass(frozen=True)
class Outcome:
    """What the worker of one Job reported so far."""

    success: Obj | None = None  # a result with an artifact digest
    error: tuple[str, str] | None = None  # (reason, message) from a result or a crash
    job_finished: bool = False  # Complete or Failed per the Job itself
    job_failed: bool = False
    job_succeeded: bool = False
    started: bool = False  # the Job exists (observed)
    progress: str = ""
    clean_exit: bool = False  # a worker container exited 0 without an error result
    # The Job says it finished but its Pods (still listed) show no terminated worker yet:
    # the Pod cache lags behind the Job's; wait for the result instead of guessing.
    unsettled: bool = False
    # Results refused by the trust check ("namespace/pod: why"): shown, never copied.
    rejected: tuple[str, ...] = ()


def _job_condition(job: Obj, type_: str) -> Obj | None:
    for c in (job.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def outcome(job: Obj | None, pods: Iterable[Obj], destination: str) -> Outcome:
    """Combine the observed Job and its Pods into one verdict (pure, order-independent).

    A success counts only when its artifact is a publish of ``destination``
    (``REGISTRY/REPOSITORY`` the hook derived itself); any other is listed in
    ``rejected`` and otherwise ignored.
    """
    pods = list(pods)
    rejected: list[str] = []
    terms = sorted(
        (t for p in pods for t in _terminations(p)),
        key=lambda t: (parse_time(t.finished_at) is None, t.finished_at, t.exit_code, t.reason, t.tail),
    )
    success = None
    error: tuple[str, str] | None = None
    clean_exit = any(t.exit_code == 0 and not (t.result or {}).get("error") for t in terms)
    for t in terms:  # oldest first: the newest failure wins, any success wins
        if t.result is not None:
            art = t.result.get("artifact")
            err = t.result.get("error")
            if isinstance(art, dict) and isinstance(art.get("digest"), str) and art["digest"]:
                problem = artifact_problem(art, destination)
                if problem is None:
                    success = t.result
                else:
                    rejected.append(f"{t.pod}: {problem}")
            elif isinstance(err, dict):
                reason = str(err.get("reason") or "")
                if not _REASON.match(reason):  # the CRD's reason pattern; never echo junk
                    reason = Reason.PUBLICATION_FAILED
                error = (reason, clip(str(err.get("message") or "")))
        elif t.exit_code != 0:
            what = f"worker container terminated: {t.reason or 'Error'} (exit code {t.exit_code})"
            if t.reason == "OOMKilled":
                what += "; it ran out of memory"
            error = (Reason.WORKER_FAILED, clip(f"{what}: {t.tail}" if t.tail else what))
    failed = succeeded = False
    progress = ""
    if job is not None:
        st = job.get("status") or {}
        failed_cond = _job_condition(job, "Failed")
        succeeded = bool(_job_condition(job, "Complete")) or (st.get("succeeded") or 0) >= 1
        failed = bool(failed_cond) and not succeeded
        if (failed or succeeded) and pods and not terms:
            return Outcome(started=True, unsettled=True, rejected=tuple(rejected))
        if failed and error is None:
            why = failed_cond.get("reason") or "Failed" if failed_cond else "Failed"
            msg = failed_cond.get("message") if failed_cond else ""
            error = (
                Reason.WORKER_FAILED,
                clip(f"worker job failed without a result: {why}" + (f": {msg}" if msg else "")),
            )
        annotations = (job.get("metadata") or {}).get("annotations") or {}
        p = annotations.get(ANNOTATION_PROGRESS)
        if isinstance(p, str) and _PROGRESS.match(p.strip()):
            progress = p.strip()
    return Outcome(
        success=success,
        error=error,
        job_finished=failed or succeeded,
        job_failed=failed,
        job_succeeded=succeeded,
        started=job is not None,
        progress=progress,
        clean_exit=clean_exit,
        rejected=tuple(sorted(set(rejected))),
    )


def pick(source: Any, fields: Mapping[str, type]) -> Obj:
    """Only the CRD-declared fields of ``source``, with the declared JSON types."""
    out: Obj = {}
    if not isinstance(source, Mapping):
        return out
    for key, typ in fields.items():
        v = source.get(key)
        if typ is int:
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                out[key] = v
        elif typ is list:
            if isinstance(v, list):  # a CRD "set": unique items, first occurrence kept
                out[key] = list(dict.fromkeys(x for x in v if isinstance(x, str) and x))
        elif isinstance(v, str) and v:
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
