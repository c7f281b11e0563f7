"""The answer of the Model hooks: a ``Verdict``, rendered into the whole new status.

The sync and finalize ladders (``hooks/model_sync.py``, ``hooks/model_finalize.py``)
decide a ``Verdict`` (phase, reason, message, the desired children, the
resync delay and what to copy into status); ``answer`` renders it. The
status replaces the old one and holds only fields the CRD declares; the
conditions keep their ``lastTransitionTime`` while they do not change
(``lib/api/conditions.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hooks.model_parent import ModelRef
from hooks.model_status import ARTIFACT_FIELDS, RESOLVED_FIELDS, SOURCE_FIELDS, pick
from lib.api import conditions as cond
from lib.api.types import ConditionType, Phase, Reason

Obj = dict[str, Any]

RESYNC_ACTIVE = 60  # while a Job runs (its changes trigger syncs anyway)
RESYNC_PREFLIGHT = 300  # waiting for a Secret / catalog (related changes trigger syncs)
RESYNC_IDLE = 0  # Ready or terminally Failed: nothing to poll


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


def counter(v: Any, default: int, minimum: int = 0) -> int:
    """A counter from status: ``v`` when it is an int of at least ``minimum``, else ``default``."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= minimum else default


def _conditions(m: ModelRef, v: Verdict, now: str) -> list[Obj]:
    old = m.status.get("conditions")
    if v.phase == Phase.READY:
        # Checked like status.resolved itself: the result is forgeable by whoever may patch the Job.
        resolved = pick((v.result or {}).get("resolved"), RESOLVED_FIELDS) or pick(
            m.status.get("resolved"), RESOLVED_FIELDS
        )
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


def answer(m: ModelRef, v: Verdict, now: str) -> Obj:
    return {"status": _status(m, v, now), "children": v.children, "resyncAfterSeconds": v.resync}

