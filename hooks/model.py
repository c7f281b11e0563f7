"""Model and ClusterModel controllers: Metacontroller v2 sync, finalize and customize.

Each hook is a pure function of the request and ``Config``: it reads the
parent (its spec and the status it wrote before), the observed children and
the related Secrets / worker Pods / ModelCatalogSources, and answers the
desired children and the whole new status. Nothing is remembered between
calls; what must survive (the attempt and upload-session counters, the
published artifact) lives in ``status``. The lifecycle, the retry policy and
the time rules are in ``docs/lifecycle.md``.

Order of decisions in sync:
1. Ready with a digest in status is sticky: no children (Job, Pods, upload
   server and credentials go away), status kept.
2. A terminal failure in status stays (no children); ``spec.source`` is
   immutable, so trying again means recreating the object.
3. Preflight (no Job): the source kind, the URL, the auth Secret, the catalog
   plan. Failing preflight answers Failed/Pending with a reason and no Job;
   it is re-run on every sync, so fixing the Secret or the catalog recovers.
4. The current attempt's Job and its Pods decide the phase: a result with an
   artifact → Ready; a permanent error → Failed; a transient error (or a Job
   that failed without a result) → a new attempt, up to ``MAX_ATTEMPTS``,
   whose pod sleeps the backoff first; otherwise Pending / Publishing /
   WaitForUpload. The call that sees a Job's end keeps the children once
   more, so a lost status write never loses the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hooks import catalog_imports as imports
from hooks import model_catalog
from hooks import model_children as ch
from hooks import model_mounts as mounts
from hooks.errors import HookInputError
from hooks.model_children import BACKOFF_MAX_SECONDS, backoff_seconds
from hooks.model_parent import ModelRef, parse_parent
from hooks.model_status import (
    ARTIFACT_FIELDS,
    JOB,
    NAMESPACE,
    RESOLVED_FIELDS,
    SECRET,
    SOURCE_FIELDS,
    Outcome,
    by_name,
    clip,
    objects,
    outcome,
    pick,
    request_time,
)
from lib import credentials
from lib.api import conditions as cond
from lib.api.types import (
    API_VERSION,
    LABEL_MODEL_UID,
    TRANSIENT_REASONS,
    ConditionType,
    Phase,
    Reason,
)
from lib.config import Config
from lib.sources import registry as sources
from lib.sources.base import SourceError

Obj = dict[str, Any]

MAX_ATTEMPTS = 5
RESYNC_ACTIVE = 60  # while a Job runs (its changes trigger syncs anyway)
RESYNC_PREFLIGHT = 300  # waiting for a Secret / catalog (related changes trigger syncs)
RESYNC_IDLE = 0  # Ready or terminally Failed: nothing to poll

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

UPLOAD_SECRET_PURPOSE = "upload"


def upload_token(config: Config, uid: str, session: int, observed: str | None = None) -> str:
    """The bearer token of one upload session: stable across calls, replicas and key rotations."""
    return credentials.upload_token(config.signing_keys, uid, session, observed)


# -- the answer being built ----------------------------------------------------


@dataclass
class Verdict:
    phase: str
    reason: str
    message: str
    children: list[Obj] = field(default_factory=list)
    resync: int = RESYNC_ACTIVE
    attempt: int = 1
    progress: str = ""
    result: Obj | None = None  # a success result to copy into status
    upload: Obj | None = None
    catalog: Obj | None = None
    resolved_type: str = ""
    # Refused before any worker ran: ArtifactResolved/MetadataResolved stay Pending
    # (nothing was tried), only Ready carries the reason. That marks it re-evaluable.
    preflight: bool = False


def _int(v: Any, default: int, minimum: int = 0) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= minimum else default


def _conditions(m: ModelRef, v: Verdict, now: str) -> list[Obj]:
    old = m.status.get("conditions")
    if v.phase == Phase.READY:
        resolved = (v.result or {}).get("resolved") or m.status.get("resolved") or {}
        partial = not (resolved.get("format") and resolved.get("supportedEndpointTypes"))
        meta_reason = Reason.MODEL_METADATA_PARTIAL if partial else Reason.MODEL_METADATA_CALCULATED
        meta_msg = (
            "some metadata could not be resolved from the model files"
            if partial
            else f"{resolved.get('format')} model, family {resolved.get('family') or 'unknown'}"
        )
        rows: list[tuple[str, str, str, str]] = [
            (ConditionType.ARTIFACT_RESOLVED, cond.TRUE, Reason.ARTIFACT_PUBLISHED, v.message),
            (ConditionType.METADATA_RESOLVED, cond.TRUE, meta_reason, meta_msg),
            (ConditionType.READY, cond.TRUE, Reason.ARTIFACT_PUBLISHED, v.message),
        ]
    elif v.preflight:
        waiting = f"not started: {v.message}"
        rows = [
            (ConditionType.ARTIFACT_RESOLVED, cond.FALSE, Reason.PENDING, waiting),
            (ConditionType.METADATA_RESOLVED, cond.FALSE, Reason.PENDING, waiting),
            (ConditionType.READY, cond.FALSE, v.reason, v.message),
        ]
    else:
        rows = [
            (ConditionType.ARTIFACT_RESOLVED, cond.FALSE, v.reason, v.message),
            (ConditionType.METADATA_RESOLVED, cond.FALSE, v.reason, v.message),
            (ConditionType.READY, cond.FALSE, v.reason, v.message),
        ]
    return [
        dict(c)
        for c in cond.merge(
            old, [(str(t), s, str(r), msg) for t, s, r, msg in rows], now=now, generation=m.generation
        )
    ]


def _status(m: ModelRef, v: Verdict, now: str) -> Obj:
    """The whole new status (it replaces the old one): only CRD-declared fields."""
    old = m.status
    result = v.result or {}
    status: Obj = {"phase": str(v.phase), "attempt": v.attempt, "conditions": _conditions(m, v, now)}
    artifact = pick(result.get("artifact"), ARTIFACT_FIELDS) or pick(old.get("artifact"), ARTIFACT_FIELDS)
    if artifact and v.phase in (Phase.READY, Phase.DELETING):
        status["artifact"] = artifact
    resolved = pick(result.get("resolved"), RESOLVED_FIELDS) or pick(old.get("resolved"), RESOLVED_FIELDS)
    if resolved and v.phase in (Phase.READY, Phase.DELETING):
        status["resolved"] = resolved
    source = pick(old.get("source"), SOURCE_FIELDS)
    if v.resolved_type:
        source.setdefault("resolvedType", v.resolved_type)
    source.update(pick(result.get("source"), SOURCE_FIELDS))
    catalog = v.catalog or (old.get("source") or {}).get("catalog")
    if isinstance(catalog, dict) and catalog:
        source["catalog"] = {
            k: str(catalog[k])
            for k in ("sourceName", "catalogRevision", "remoteDigest", "reference")
            if isinstance(catalog.get(k), str) and catalog.get(k)
        }
    if source:
        status["source"] = source
    if v.progress:
        status["progress"] = v.progress
    if v.upload:
        status["upload"] = v.upload
    return status


def _answer(m: ModelRef, v: Verdict, now: str) -> Obj:
    return {"status": _status(m, v, now), "children": v.children, "resyncAfterSeconds": v.resync}


# -- preflight -----------------------------------------------------------------


@dataclass(frozen=True)
class Preflight:
    kind: str  # url | upload | catalog
    source_url: str = ""
    resolved_type: str = ""
    auth: ch.SourceAuth = ch.SourceAuth()
    catalog: Obj | None = None
    error: tuple[str, str, str] | None = None  # (phase, reason, message)


def _source_kind(m: ModelRef) -> str:
    present = [k for k in ("url", "upload", "catalog") if m.source.get(k) is not None]
    if len(present) != 1:
        raise _Refuse(
            Phase.FAILED,
            Reason.UNSUPPORTED_SOURCE,
            "spec.source must set exactly one of url, upload or catalog"
            + (f" (found {', '.join(present)})" if present else ""),
        )
    return present[0]


class _Refuse(Exception):
    def __init__(self, phase: str, reason: str, message: str):
        super().__init__(message)
        self.args3 = (phase, reason, message)


def _auth_secret(m: ModelRef, related: Obj, keys: tuple[str, ...]) -> ch.SourceAuth:
    """The authSecretRef Secret's first non-empty key of ``keys`` (the source entry's), mounted as a file."""
    ref = m.source.get("authSecretRef")
    if not ref:
        return ch.SourceAuth()
    if m.cluster:
        raise _Refuse(
            Phase.FAILED,
            Reason.AUTH_SECRET_INVALID,
            "a ClusterModel cannot reference a namespaced Secret (authSecretRef); "
            "use a Model in the Secret's namespace",
        )
    name = ref.get("name") if isinstance(ref, dict) else None
    if not isinstance(name, str) or not name:
        raise _Refuse(Phase.FAILED, Reason.AUTH_SECRET_INVALID, "spec.source.authSecretRef.name is empty")
    secret = by_name(related, SECRET, m.namespace, name)
    if secret is None:
        raise _Refuse(
            Phase.FAILED,
            Reason.AUTH_SECRET_MISSING,
            f"Secret {m.namespace}/{name} named by authSecretRef does not exist (or is not readable)",
        )
    data = {**(secret.get("stringData") or {}), **(secret.get("data") or {})}
    for key in keys:
        if isinstance(data.get(key), str) and data[key].strip():
            return ch.SourceAuth(secret=name, key=key, path="token")
    raise _Refuse(
        Phase.FAILED,
        Reason.AUTH_SECRET_INVALID,
        f"Secret {m.namespace}/{name} has none of the keys {', '.join(keys)} (or they are empty)",
    )


def preflight(m: ModelRef, parent: Obj, related: Obj, config: Config) -> Preflight:
    """What to run, or why nothing can run yet; no Job is created when this refuses."""
    try:
        kind = _source_kind(m)
        if kind == "url":
            url = m.source.get("url")
            try:
                entry = sources.for_url(url if isinstance(url, str) else "")
            except SourceError as e:
                raise _Refuse(Phase.FAILED, Reason.UNSUPPORTED_SOURCE, e.message) from None
            auth = _auth_secret(m, related, entry.secret_keys)
            return Preflight(kind, source_url=str(url), resolved_type=entry.resolved_type, auth=auth)
        if kind == "upload":
            if not cond.parse_time(m.created):
                raise HookInputError("parent.metadata.creationTimestamp is required for an upload source")
            return Preflight(kind, resolved_type=sources.UPLOAD_RESOLVED_TYPE)
        plan = model_catalog.plan(parent, related, config)
        if plan.error is not None:
            raise _Refuse(plan.error.phase, plan.error.reason, plan.error.message)
        # The import itself runs under the ModelCatalogSource (hooks/catalog_imports.py).
        return Preflight(
            kind,
            source_url=plan.source_url,
            resolved_type=sources.CATALOG.resolved_type,
            catalog=plan.frozen.as_status() if plan.frozen else None,
        )
    except _Refuse as r:
        return Preflight("", error=r.args3)


# -- sync ------------------------------------------------------------------------


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


# Counters adopted from observed Jobs' labels (tenant-writable in a Model's namespace) above
# this are ignored: no real sequence of attempts or upload sessions gets there.
MAX_ADOPTED_COUNTER = 1000


def _label_int(obj: Obj, label: str) -> int:
    v = ((obj.get("metadata") or {}).get("labels") or {}).get(label, "")
    if not (isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 4):
        return 0
    return int(v) if int(v) <= MAX_ADOPTED_COUNTER else 0


def _adopt(
    m: ModelRef, children: Obj, worker: str, counters: tuple[int, ...], labels: tuple[str, ...]
) -> tuple[int, ...]:
    """The newest of (status counters, counters carried by observed Jobs of this worker).

    Covers a status write that was lost after the children of a new attempt
    were applied: the observed Job proves the newer attempt exists.
    """
    best = counters
    for job in objects(children, JOB):
        md = job.get("metadata") or {}
        if (md.get("labels") or {}).get(ch.LABEL_WORKER) != worker or (md.get("labels") or {}).get(
            LABEL_MODEL_UID
        ) != m.uid:
            continue
        seen = tuple(_label_int(job, lb) for lb in labels)
        if seen > best:
            best = seen
    return best


def _published_message(result: Obj) -> str:
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
    (attempt,) = _adopt(
        m, related, imports.WORKER, (_int(m.status.get("attempt"), 1, 1),), (ch.LABEL_ATTEMPT,)
    )
    base = {"resolved_type": pf.resolved_type, "catalog": pf.catalog}
    job_name = imports.import_job_name(m, config, attempt)
    job = by_name(related, JOB, config.namespace, job_name)
    out = outcome(job, m.destination)
    source = (pf.catalog or {}).get("sourceName", "")
    # The import's worker runs in the module namespace; it may record Events beside a Model.
    account = imports.import_ref(m, config).worker_account
    beside = [] if m.cluster else ch.events_rbac(m, account, config.namespace)
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
    (attempt,) = _adopt(m, children, "publish", (_int(m.status.get("attempt"), 1, 1),), (ch.LABEL_ATTEMPT,))
    base = {"resolved_type": pf.resolved_type, "catalog": pf.catalog}

    mount_from = mounts.candidates(m, req.get("related") or {})

    def children_for(n: int, delay: int) -> list[Obj]:
        job = ch.publish_job(
            m, config, source=pf.source_url, attempt=n, auth=pf.auth, delay_seconds=delay,
            mount_from=mount_from,
        )
        return [ch.registry_secret(m, config, mount_from), *ch.worker_rbac(m, job["metadata"]["name"]), job]

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
            message=_published_message(out.success),
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
    return cond.format_time(created + timedelta(seconds=config.upload_ttl_seconds * (session + 1)))


def _sync_upload(m: ModelRef, req: Obj, config: Config, pf: Preflight, now: str) -> Verdict:
    children = req.get("children") or {}
    old_upload = m.status.get("upload") or {}
    session, attempt = _adopt(
        m,
        children,
        "upload-server",
        (_int(old_upload.get("session"), 0), _int(m.status.get("attempt"), 1, 1)),
        (ch.LABEL_SESSION, ch.LABEL_ATTEMPT),
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
                *ch.worker_rbac(m, job["metadata"]["name"]),
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


def _sync(req: Obj, config: Config, *, cluster: bool) -> Obj:
    m = parse_parent(req, config, cluster=cluster)
    now = request_time(req)
    if _is_ready(m):
        v = Verdict(
            phase=Phase.READY,
            reason=Reason.ARTIFACT_PUBLISHED,
            message=_old_message(m) or _published_message({"artifact": m.status.get("artifact") or {}}),
            resync=RESYNC_IDLE,
            attempt=_int(m.status.get("attempt"), 1, 1),
        )
        return _answer(m, v, now)
    if _is_terminal(m):
        v = Verdict(
            phase=Phase.FAILED,
            reason=_old_reason(m),
            message=_old_message(m),
            resync=RESYNC_IDLE,
            attempt=_int(m.status.get("attempt"), 1, 1),
        )
        return _answer(m, v, now)
    pf = preflight(m, req.get("parent") or {}, req.get("related") or {}, config)
    if pf.error is not None:
        phase, reason, message = pf.error
        v = Verdict(
            phase=phase,
            reason=reason,
            message=message,
            resync=RESYNC_PREFLIGHT,
            attempt=_int(m.status.get("attempt"), 1, 1),
            preflight=True,
        )
        return _answer(m, v, now)
    if pf.kind == "upload":
        return _answer(m, _sync_upload(m, req, config, pf, now), now)
    if pf.kind == "catalog":
        return _answer(m, _sync_import(m, req, config, pf, now), now)
    return _answer(m, _sync_publish(m, req, config, pf, now), now)


# -- finalize --------------------------------------------------------------------


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
        if labels.get(ch.LABEL_WORKER) not in ("publish", "upload-server", imports.WORKER):
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


def _finalize(req: Obj, config: Config, *, cluster: bool) -> Obj:
    m = parse_parent(req, config, cluster=cluster)
    now = request_time(req)
    children, related = req.get("children") or {}, req.get("related") or {}
    attempt = _int(m.status.get("attempt"), 1, 1)
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
        return {**_answer(m, v, now), "finalized": True}
    if not digest:
        v = Verdict(
            phase=Phase.DELETING,
            reason=Reason.DELETING,
            message="nothing was published; nothing to clean up",
            resync=RESYNC_IDLE,
            attempt=attempt,
        )
        return {**_answer(m, v, now), "finalized": True}
    old_cleanup = m.status.get("cleanup") or {}
    (cattempt,) = _adopt(
        m, children, "cleanup", (_int(old_cleanup.get("attempt"), 1, 1),), (ch.LABEL_ATTEMPT,)
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
        elif old_cleanup.get("message") and _int(old_cleanup.get("attempt"), 1, 1) == cattempt:
            cleanup["message"] = str(old_cleanup["message"])
        v.children = build(cattempt)
    answer = _answer(m, v, now)
    answer["status"]["cleanup"] = cleanup
    return {**answer, "finalized": finalized}


# -- customize --------------------------------------------------------------------


def _customize(req: Obj, config: Config, *, cluster: bool) -> Obj:
    """What sync must see; a function of the parent's identity and spec only (it is cached)."""
    parent = req.get("parent") or {}
    md = parent.get("metadata") or {}
    uid = md.get("uid")
    if not isinstance(uid, str) or not uid:
        raise HookInputError("parent.metadata.uid is required")
    namespace = md.get("namespace") or ""
    if not cluster and not namespace:
        raise HookInputError("parent.metadata.namespace is required for a Model")
    source = (parent.get("spec") or {}).get("source") or {}
    if not isinstance(source, dict):
        raise HookInputError("parent.spec.source must be an object")
    # No Pods: worker results are on the worker's own Job (hooks/worker_result.py).
    related: list[Obj] = []
    if not cluster:
        # Finalize must know when its namespace is terminating (namespace_terminating).
        related.append({"apiVersion": "v1", "resource": "namespaces", "names": [namespace]})
    ref = source.get("authSecretRef")
    if not cluster and isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"]:
        related.insert(
            0, {"apiVersion": "v1", "resource": "secrets", "namespace": namespace, "names": [ref["name"]]}
        )
    if source.get("catalog") is not None:
        related.append({"apiVersion": API_VERSION, "resource": "modelcatalogsources"})
        # The import runs under the ModelCatalogSource in the module namespace (only the
        # module writes there); its Job carries this object's UID and the worker's result.
        mine = {"matchLabels": {LABEL_MODEL_UID: uid}}
        rule = {"namespace": config.namespace, "labelSelector": mine}
        related.append({"apiVersion": "batch/v1", "resource": "jobs", **rule})
    if mounts.wants_candidates(parent):
        # Published objects of the same source to mount blobs from (hooks/model_mounts.py).
        related.extend(mounts.related_rules(cluster, namespace))
    return {"relatedResources": related}


# -- the six handlers hooks/app.py routes to ---------------------------------------


def model_sync(req: Obj, config: Config) -> Obj:
    return _sync(req, config, cluster=False)


def clustermodel_sync(req: Obj, config: Config) -> Obj:
    return _sync(req, config, cluster=True)


def model_finalize(req: Obj, config: Config) -> Obj:
    return _finalize(req, config, cluster=False)


def clustermodel_finalize(req: Obj, config: Config) -> Obj:
    return _finalize(req, config, cluster=True)


def model_customize(req: Obj, config: Config) -> Obj:
    return _customize(req, config, cluster=False)


def clustermodel_customize(req: Obj, config: Config) -> Obj:
    return _customize(req, config, cluster=True)


__all__ = [
    "BACKOFF_MAX_SECONDS",
    "backoff_seconds",
    "clustermodel_customize",
    "clustermodel_finalize",
    "clustermodel_sync",
    "model_customize",
    "model_finalize",
    "model_sync",
    "upload_token",
]
