"""The sync hook of Models and ClusterModels: parse -> decide (pure) -> render.

``sync`` takes the parent apart once (``parse_parent``), walks the decision
ladder below, and renders the ``Verdict`` it reaches (``hooks/model_answer.py``).
The worker Jobs it wants are built by ``hooks/model_children.py`` on
``hooks/worker_jobs.py``; their outcome is read by ``hooks/model_status.py``.

Order of decisions (docs/lifecycle.md):
1. Ready with a digest in status is sticky: no children (Job, Pods, upload
   server and credentials go away), status kept.
2. A terminal failure in status stays (no children); ``spec.source`` is
   immutable, so trying again means recreating the object.
3. Preflight (no Job, ``hooks/model_preflight.py``): the source kind, the URL,
   the auth Secret, the catalog plan. Failing preflight answers Failed/Pending
   with a reason and no Job; it is re-run on every sync, so fixing the Secret
   or the catalog recovers.
4. The current attempt's Job decides the phase: a result with an artifact →
   Ready; a permanent error → Failed; a transient error (or a Job that failed
   without a result) → a new attempt, up to ``MAX_ATTEMPTS``, whose pod sleeps
   the backoff first; otherwise Pending / Publishing / WaitForUpload. The call
   that sees a Job's end keeps the children once more, so a lost status write
   never loses the result. The attempt and upload-session counters are also
   carried as Job labels and adopted from the observed Jobs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hooks import catalog_imports as imports
from hooks import model_children as ch
from hooks import model_mounts as mounts
from hooks import worker_jobs as wj
from hooks.errors import HookInputError
from hooks.model_answer import (
    RESYNC_ACTIVE,
    RESYNC_IDLE,
    RESYNC_PREFLIGHT,
    Verdict,
    answer,
    counter,
)
from hooks.model_parent import ModelRef, parse_parent
from hooks.model_preflight import Preflight, preflight
from hooks.model_status import JOB, Outcome, adopted, by_name, clip, outcome, request_time
from hooks.worker_jobs import LABEL_ATTEMPT, backoff_seconds
from lib import credentials
from lib.api import conditions as cond
from lib.api.types import TRANSIENT_REASONS, ConditionType, Phase, Reason
from lib.config import Config
from lib.sources import registry as sources

Obj = dict[str, Any]

MAX_ATTEMPTS = 5

CATALOG_REASONS = frozenset(
    {
        Reason.CATALOG_AUTH_FAILED,
        Reason.CATALOG_TLS_INVALID,
        Reason.CATALOG_SOURCE_NOT_READY,
        Reason.CATALOG_INVALID,
        Reason.CATALOG_SOURCE_AMBIGUOUS,
        Reason.CATALOG_MODEL_NOT_FOUND,
    }
)
# Transient catalog failures retry without a bound: the user guide promises recovery once the
# administrator fixes the catalog source (at the capped backoff meanwhile).

# The user guide: Ollama registry, tag, manifest, descriptor and GGUF errors end as PublicationFailed
# (an unreachable registry is retried as SourceUnavailable first; the message says what failed).
FINAL_REASON: dict[tuple[str, str], str] = {
    (sources.OLLAMA.resolved_type, Reason.SOURCE_UNAVAILABLE): Reason.PUBLICATION_FAILED
}

def upload_token(config: Config, uid: str, session: int, observed: str | None = None) -> str:
    """The bearer token of one upload session: stable across calls, replicas and key rotations."""
    return credentials.upload_token(config.signing_keys, uid, session, observed)


def _is_ready(m: ModelRef) -> bool:
    return m.status.get("phase") == Phase.READY and bool((m.status.get("artifact") or {}).get("digest"))


def _old_reason(m: ModelRef) -> str:
    c = cond.find(m.status.get("conditions"), ConditionType.READY)
    return str(c.get("reason", "")) if c else ""


def _old_message(m: ModelRef) -> str:
    c = cond.find(m.status.get("conditions"), ConditionType.READY)
    return str(c.get("message", "")) if c else ""


def _is_terminal(m: ModelRef) -> bool:
    """Failed after a worker ran (not a preflight refusal, which is re-evaluated every sync,
    nor a catalog import failure, which is retried: the user guide calls those recoverable)."""
    if m.status.get("phase") != Phase.FAILED:
        return False
    artifact = cond.find(m.status.get("conditions"), ConditionType.ARTIFACT_RESOLVED)
    if artifact and artifact.get("reason") == Reason.PENDING:
        return False
    return not (isinstance(m.source.get("catalog"), dict) and imports.import_failed(m.status))


def published_message(result: Obj) -> str:
    art = result.get("artifact") or {}
    size = art.get("sizeBytes")
    size_txt = f", {size} bytes" if isinstance(size, int) else ""
    return f"published {art.get('digest')}{size_txt}"


def _retry_or_fail(
    m: ModelRef, v_base: dict[str, Any], attempt: int, error: tuple[str, str], next_children: Any
) -> Verdict:
    """A finished Job that failed: retry transient reasons (bounded), else Failed."""
    reason, message = error
    transient = reason in TRANSIENT_REASONS
    if transient and (attempt < MAX_ATTEMPTS or reason in CATALOG_REASONS):
        nxt = attempt + 1
        delay = backoff_seconds(nxt)
        return Verdict(
            phase=Phase.PUBLISHING,
            reason=reason,
            message=clip(
                f"attempt {attempt} failed: {message}; retrying in {delay}s "
                f"(attempt {nxt} of {MAX_ATTEMPTS if reason not in CATALOG_REASONS else 'unbounded'})"
            ),
            children=next_children(nxt, delay),
            resync=delay + 30,
            attempt=nxt,
            **v_base,
        )
    suffix = f" (gave up after {attempt} attempts)" if transient else ""
    # The user guide's reason for what the source could not give, whatever the retries met.
    final = FINAL_REASON.get((str(v_base.get("resolved_type") or ""), reason), reason)
    return Verdict(
        phase=Phase.FAILED,
        reason=final,
        message=clip(message + suffix),
        resync=RESYNC_IDLE,
        attempt=attempt,
        **v_base,
    )


def _sync_import(m: ModelRef, req: Obj, config: Config, pf: Preflight, now: str) -> Verdict:
    """A catalog import: the ModelCatalogSource runs the Job (module namespace); this reads it."""
    related = req.get("related") or {}
    (attempt,) = adopted(
        m, related, imports.WORKER, (counter(m.status.get("attempt"), 1, 1),), (LABEL_ATTEMPT,)
    )
    base = {"resolved_type": pf.resolved_type, "catalog": pf.catalog}
    job_name = imports.import_job_name(m, config, attempt)
    job = by_name(related, JOB, config.namespace, job_name)
    out = outcome(job, m.destination)
    source = (pf.catalog or {}).get("sourceName", "")
    # The import's worker runs in the module namespace; it may record Events beside a Model.
    account = imports.import_ref(m, config).worker_account
    beside = [] if m.cluster else wj.events_rbac(m.owner, account, config.namespace,
                                                 list_models=ch.quota_reads_models(config))
    verdict = _with_rejected(out, _decide(
        m,
        out,
        attempt,
        beside,
        lambda n, delay: beside,
        base,
        pending_msg=f"waiting for ModelCatalogSource {source!r} to start the import",
    ))
    retried = verdict.reason in imports.RETRIED_REASONS and verdict.attempt > attempt
    if verdict.phase == Phase.PUBLISHING and retried:
        # The worker failed with a catalog reason: Failed, as the user guide shows it, and retried
        # (the source runs the next attempt, same revision and digest) until the catalog is fixed.
        verdict.phase = Phase.FAILED
        verdict.message = clip(
            f"{verdict.message}; recoverable: the import of {(pf.catalog or {}).get('reference')} "
            f"is retried with the same revision and digest once ModelCatalogSource {source!r} is fixed"
        )
    elif imports.import_failed(m.status) and verdict.phase in (Phase.PENDING, Phase.PUBLISHING):
        # The retry is under way: the Model still shows why it failed until it succeeds.
        verdict.phase, verdict.reason, verdict.message = Phase.FAILED, _old_reason(m), _old_message(m)
    return verdict


def _sync_publish(m: ModelRef, req: Obj, config: Config, pf: Preflight, now: str) -> Verdict:
    children = req.get("children") or {}
    (attempt,) = adopted(m, children, "publish", (counter(m.status.get("attempt"), 1, 1),), (LABEL_ATTEMPT,))
    base = {"resolved_type": pf.resolved_type, "catalog": pf.catalog}

    mount_from = mounts.candidates(m, req.get("related") or {})

    def children_for(n: int, delay: int) -> list[Obj]:
        job = ch.publish_job(
            m, config, source=pf.source_url, attempt=n, auth=pf.auth, delay_seconds=delay,
            mount_from=mount_from,
        )
        return [ch.registry_secret(m, config, mount_from),
                *ch.worker_rbac(m, job["metadata"]["name"], config=config), job]

    job_name = m.publish_job(attempt)
    job = by_name(children, JOB, m.child_namespace, job_name)
    out = outcome(job, m.destination)
    # The current attempt is re-emitted identically on every call (a Job's template is immutable).
    current = children_for(attempt, backoff_seconds(attempt))
    return _with_rejected(out, _decide(
        m, out, attempt, current, children_for, base, pending_msg="waiting for the publish job to start"
    ))


def _rejected_note(out: Outcome) -> str:
    """The refused results, named, for the Ready condition's message (never their content)."""
    if not out.rejected:
        return ""
    more = len(out.rejected) - 3
    shown = "; ".join(out.rejected[:3]) + (f"; and {more} more" if more > 0 else "")
    return f" [ignored worker results that are not this model's: {shown}]"


def _with_rejected(out: Outcome, verdict: Verdict) -> Verdict:
    """Name the refused worker results in the message (docs/security.md), unless Ready."""
    note = _rejected_note(out)
    if note and verdict.phase != Phase.READY:
        verdict.message = clip(verdict.message + note)
    return verdict


def _decide(
    m: ModelRef,
    out: Outcome,
    attempt: int,
    current: list[Obj],
    children_for: Any,
    base: dict[str, Any],
    *,
    pending_msg: str,
    waiting: Verdict | None = None,
) -> Verdict:
    if out.success is not None:
        return Verdict(
            phase=Phase.READY,
            reason=Reason.ARTIFACT_PUBLISHED,
            message=published_message(out.success),
            children=current,
            resync=RESYNC_ACTIVE,
            attempt=attempt,
            result=out.success,
            **base,
        )
    if out.error is not None and (out.job_finished or out.error[0] not in TRANSIENT_REASONS):
        verdict = _retry_or_fail(m, base, attempt, out.error, children_for)
        if verdict.phase == Phase.FAILED and not verdict.children:
            verdict.children = current  # the transition call keeps the children once more
            verdict.resync = RESYNC_ACTIVE
        return verdict
    if out.job_succeeded:
        # Complete without a result: the worker could not reach the API server to report it.
        return _retry_or_fail(
            m, base, attempt, (Reason.WORKER_FAILED, "the worker finished without a result"), children_for
        )
    if waiting is not None and not out.progress:
        return waiting
    if not out.started:
        return Verdict(
            phase=Phase.PENDING,
            reason=Reason.PENDING,
            message=f"attempt {attempt}: {pending_msg}",
            children=current,
            attempt=attempt,
            **base,
        )
    msg = f"attempt {attempt}: publishing" + (f", {out.progress} done" if out.progress else "")
    if out.error is not None:
        msg += f" (the worker is retrying after: {out.error[1]})"
    return Verdict(
        phase=Phase.PUBLISHING,
        reason=Reason.PUBLISHING,
        message=clip(msg),
        children=current,
        attempt=attempt,
        progress=out.progress or "0%",
        **base,
    )


def _expires_at(m: ModelRef, config: Config, session: int) -> str:
    created = cond.parse_time(m.created)
    assert created is not None
    try:
        return cond.format_time(created + timedelta(seconds=config.upload_ttl_seconds * (session + 1)))
    except OverflowError:  # a session counter no real sequence of sessions reaches
        raise HookInputError(f"upload session {session} ends past the year 9999") from None


def _sync_upload(m: ModelRef, req: Obj, config: Config, pf: Preflight, now: str) -> Verdict:
    children = req.get("children") or {}
    old_upload = m.status.get("upload") or {}
    session, attempt = adopted(
        m,
        children,
        "upload-server",
        (counter(old_upload.get("session"), 0), counter(m.status.get("attempt"), 1, 1)),
        (ch.LABEL_SESSION, LABEL_ATTEMPT),
    )
    attempt = max(attempt, 1)
    note = ""

    job_name = m.upload_job(session, attempt)
    job = by_name(children, JOB, m.child_namespace, job_name)
    out = outcome(job, m.destination)
    if out.error is not None and out.error[0] == Reason.UPLOAD_EXPIRED:
        # Open the next session whose end is still ahead of everything the request has seen.
        ended = session
        session += 1
        while _expires_at(m, config, session) <= now:
            session += 1
        note = f"upload session {ended} expired at {_expires_at(m, config, ended)} without an upload; "
        attempt = 1  # a new session starts its own attempts (its Job name changes with the session)
        out = Outcome()

    def children_for_session(s: int) -> Any:
        def build(n: int, delay: int) -> list[Obj]:
            token = upload_token(config, m.uid, s, ch.observed_upload_token(children, m, s))
            job = ch.upload_job(
                m,
                config,
                session=s,
                attempt=n,
                expires_at=_expires_at(m, config, s),
                ttl_seconds=config.upload_ttl_seconds,
                delay_seconds=delay,
            )
            objs = [
                ch.registry_secret(m, config),
                *ch.worker_rbac(m, job["metadata"]["name"], config=config),
                ch.upload_secret(m, config, session=s, token=token),
                ch.upload_reader_role(m, session=s),
                ch.upload_service(m, config),
                job,
            ]
            if config.upload_external_base:
                objs.append(ch.upload_ingress(m, config))
            return objs

        return build

    build = children_for_session(session)
    current = build(attempt, backoff_seconds(attempt))
    upload: Obj = {
        "secretName": m.upload_secret(session),
        "expiresAt": _expires_at(m, config, session),
        "session": session,
    }
    base: dict[str, Any] = {"resolved_type": pf.resolved_type, "upload": upload}
    earlier = " (earlier sessions expired without an upload)" if session > 0 and not note else ""
    waiting = Verdict(
        phase=Phase.WAIT_FOR_UPLOAD,
        reason=Reason.WAITING_FOR_USER_UPLOAD,
        message=f"{note}upload session {session} is open until {upload['expiresAt']}{earlier}: "
        f"read the URL and token from Secret {m.upload_secret(session)} "
        f"(Role {m.upload_reader_role} grants access)",
        children=current,
        attempt=attempt,
        **base,
    )
    if note:
        return waiting
    verdict = _decide(m, out, attempt, current, build, base, pending_msg="", waiting=waiting)
    return _with_rejected(out, verdict)


def sync(req: Obj, config: Config, *, cluster: bool) -> Obj:
    """The sync hook of a Model (``cluster=False``) or a ClusterModel: parse, decide, render."""
    m = parse_parent(req, config, cluster=cluster)
    now = request_time(req)
    if _is_ready(m):
        v = Verdict(
            phase=Phase.READY,
            reason=Reason.ARTIFACT_PUBLISHED,
            message=_old_message(m) or published_message({"artifact": m.status.get("artifact") or {}}),
            resync=RESYNC_IDLE,
            attempt=counter(m.status.get("attempt"), 1, 1),
        )
        return answer(m, v, now)
    if _is_terminal(m):
        v = Verdict(
            phase=Phase.FAILED,
            reason=_old_reason(m),
            message=_old_message(m),
            resync=RESYNC_IDLE,
            attempt=counter(m.status.get("attempt"), 1, 1),
        )
        return answer(m, v, now)
    pf = preflight(m, req.get("parent") or {}, req.get("related") or {}, config)
    if pf.error is not None:
        phase, reason, message = pf.error
        v = Verdict(
            phase=phase,
            reason=reason,
            message=message,
            resync=RESYNC_PREFLIGHT,
            attempt=counter(m.status.get("attempt"), 1, 1),
            preflight=True,
        )
        return answer(m, v, now)
    if pf.kind == "upload":
        return answer(m, _sync_upload(m, req, config, pf, now), now)
    if pf.kind == "catalog":
        return answer(m, _sync_import(m, req, config, pf, now), now)
    return answer(m, _sync_publish(m, req, config, pf, now), now)

