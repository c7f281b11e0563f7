"""Reading a worker Job: its result annotation and its Complete/Failed condition.

The worker patches its result JSON onto its own Job (``ai.deckhouse.io/result``,
``jobs/own_job.py``) before it exits, so the Job alone tells the whole story:
no ``pods`` related rule (Metacontroller would cache every Pod in the cluster)
and no Pod cache lagging behind the Job's. Pure functions of the observed Job;
whoever can patch the Job can write the annotation, so callers check a
result's content before they trust it (``lib/result.artifact_problem``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lib.api.types import ANNOTATION_RESULT
from lib.result import LIMIT

Obj = dict[str, Any]

# The worker's document is at most LIMIT bytes; a longer annotation is not one of ours.
MAX_ANNOTATION = 2 * LIMIT


@dataclass(frozen=True)
class JobState:
    """What the Job's own status says (the Job controller writes it, tenants cannot)."""

    exists: bool = False
    succeeded: bool = False
    failed: bool = False
    reason: str = ""  # of the Failed condition: BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy
    message: str = ""
    finished_at: str = ""

    @property
    def finished(self) -> bool:
        return self.succeeded or self.failed


def job_state(job: Obj | None) -> JobState:
    if job is None:
        return JobState()
    st = job.get("status") or {}
    succeeded = failed = False
    reason = message = at = ""
    for c in st.get("conditions") or ():
        if not isinstance(c, dict) or c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            succeeded, at = True, str(c.get("lastTransitionTime") or "")
        elif c.get("type") == "Failed":
            failed, at = True, str(c.get("lastTransitionTime") or "")
            reason, message = str(c.get("reason") or "Failed"), str(c.get("message") or "")
    if not succeeded and isinstance(st.get("succeeded"), int) and st["succeeded"] >= 1:
        succeeded = True
    return JobState(True, succeeded, failed and not succeeded, reason, message, at)


def job_result(job: Obj | None) -> tuple[Obj | None, str]:
    """The parsed result annotation, or (None, why it is unreadable); ("", "") when absent."""
    raw = ((job or {}).get("metadata") or {}).get("annotations") or {}
    value = raw.get(ANNOTATION_RESULT) if isinstance(raw, dict) else None
    if value is None:
        return None, ""
    if not isinstance(value, str) or len(value) > MAX_ANNOTATION:
        return None, f"{ANNOTATION_RESULT} is not a result document"
    try:
        doc = json.loads(value)
    except ValueError:
        return None, f"{ANNOTATION_RESULT} is not JSON"
    if not isinstance(doc, dict):
        return None, f"{ANNOTATION_RESULT} is not a JSON object"
    return doc, ""


def job_label(job: Obj | None) -> str:
    """``namespace/name`` of a Job, to name it when its result is refused (never its content)."""
    md = (job or {}).get("metadata") or {}
    return f"{md.get('namespace') or ''}/{md.get('name') or ''}".lstrip("/")[:120]
