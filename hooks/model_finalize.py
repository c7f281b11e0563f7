"""The finalize hook of Models and ClusterModels: delete what was published, then let go.

``finalize`` takes the parent apart (``parse_parent``), finds the digest to
clean up (status, or a worker result not yet copied there), and decides:
nothing published → finalized at once; the namespace is terminating (no Job
can start there) → finalized, DMCR's sweep reclaims the artifact; otherwise a
cleanup Job (``hooks/model_children.py`` ``cleanup_job``) whose attempts are
retried with the same backoff as publishing, until it completes. The answer
is rendered as in sync (``hooks/model_answer.py``), with ``status.cleanup``.
"""

from __future__ import annotations

from typing import Any

from hooks import catalog_imports as imports
from hooks import model_children as ch
from hooks.model_answer import RESYNC_IDLE, Verdict, counter
from hooks.model_answer import answer as render
from hooks.model_parent import ModelRef, parse_parent
from hooks.model_status import JOB, NAMESPACE, adopted, by_name, clip, objects, outcome, request_time
from hooks.worker_jobs import LABEL_ATTEMPT, LABEL_WORKER, backoff_seconds
from lib.api.types import Phase, Reason
from lib.config import Config

Obj = dict[str, Any]


def _published_digest(m: ModelRef, children: Obj, related: Obj) -> str:
    """The digest to clean up: from status, or from a worker result not yet copied there.

    Worker Jobs are the Model's children (publish, upload) or related Jobs in the
    module namespace (catalog imports); only a result naming this model's
    repository counts.
    """
    digest = (m.status.get("artifact") or {}).get("digest")
    if isinstance(digest, str) and digest:
        return digest
    found = ""
    for job in [*objects(children, JOB), *objects(related, JOB)]:
        labels = (job.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_WORKER) not in ("publish", "upload-server", imports.WORKER):
            continue
        success = outcome(job, m.destination).success
        if success:
            found = max(found, success["artifact"]["digest"])
    return found


def namespace_terminating(m: ModelRef, related: Obj) -> bool:
    """Whether the Model's namespace is being deleted (the related Namespace, customize asks for it).

    The API server refuses every create in a Terminating namespace (NamespaceLifecycle), so a
    cleanup Job there would never start and the Model's finalizer would hold the namespace
    forever.
    """
    if m.cluster:
        return False
    ns = by_name(related, NAMESPACE, "", m.namespace)
    if ns is None:
        return False
    return bool((ns.get("metadata") or {}).get("deletionTimestamp")) or (
        (ns.get("status") or {}).get("phase") == "Terminating"
    )


def finalize(req: Obj, config: Config, *, cluster: bool) -> Obj:
    """The finalize hook of a Model (``cluster=False``) or a ClusterModel: parse, decide, render."""
    m = parse_parent(req, config, cluster=cluster)
    now = request_time(req)
    children, related = req.get("children") or {}, req.get("related") or {}
    attempt = counter(m.status.get("attempt"), 1, 1)
    digest = _published_digest(m, children, related)
    if digest and namespace_terminating(m, related):
        v = Verdict(
            phase=Phase.DELETING,
            reason=Reason.DELETING,
            message=f"namespace {m.namespace} is being deleted: {m.destination}@{digest} is reclaimed "
            "by the module's DMCR sweep (no Job can start in a terminating namespace)",
            resync=RESYNC_IDLE,
            attempt=attempt,
            result={"artifact": {**(m.status.get("artifact") or {}), "digest": digest}},
        )
        return {**render(m, v, now), "finalized": True}
    if not digest:
        v = Verdict(
            phase=Phase.DELETING,
            reason=Reason.DELETING,
            message="nothing was published; nothing to clean up",
            resync=RESYNC_IDLE,
            attempt=attempt,
        )
        return {**render(m, v, now), "finalized": True}
    old_cleanup = m.status.get("cleanup") or {}
    (cattempt,) = adopted(
        m, children, "cleanup", (counter(old_cleanup.get("attempt"), 1, 1),), (LABEL_ATTEMPT,)
    )

    def build(n: int) -> list[Obj]:
        job = ch.cleanup_job(m, config, digest=digest, attempt=n, delay_seconds=backoff_seconds(n))
        return [ch.cleanup_secret(m, config), *ch.worker_rbac(m, job["metadata"]["name"]), job]

    job_name = m.cleanup_job(cattempt)
    job = by_name(children, JOB, m.child_namespace, job_name)
    out = outcome(job, m.destination)
    artifact = f"{m.destination}@{digest}"
    v = Verdict(
        phase=Phase.DELETING,
        reason=Reason.DELETING,
        message=f"deleting {artifact}",
        attempt=attempt,
        result={"artifact": {**(m.status.get("artifact") or {}), "digest": digest}},
    )
    cleanup: Obj = {"attempt": cattempt}
    finalized = False
    if out.job_succeeded:  # Complete: the worker exited 0 after deleting the artifact
        finalized = True
        v.message = f"deleted {artifact}"
        v.resync = RESYNC_IDLE
    elif out.error is not None and out.job_finished:
        nxt = cattempt + 1
        delay = backoff_seconds(nxt)
        v.reason = Reason.CLEANUP_FAILED
        v.message = clip(f"cleanup attempt {cattempt} failed: {out.error[1]}; retrying in {delay}s")
        cleanup = {"attempt": nxt, "message": clip(f"{out.error[0]}: {out.error[1]}")}
        v.children = build(nxt)
        v.resync = delay + 30
    else:
        if out.error is not None:
            v.reason = Reason.CLEANUP_FAILED
            v.message = clip(f"cleanup attempt {cattempt}: the worker is retrying after: {out.error[1]}")
            cleanup["message"] = clip(f"{out.error[0]}: {out.error[1]}")
        elif old_cleanup.get("message") and counter(old_cleanup.get("attempt"), 1, 1) == cattempt:
            cleanup["message"] = str(old_cleanup["message"])
        v.children = build(cattempt)
    answer = render(m, v, now)
    answer["status"]["cleanup"] = cleanup
    return {**answer, "finalized": finalized}

