"""Pure helpers for ``status.conditions`` (metav1.Condition shape).

Hooks have no clock, so a condition's ``lastTransitionTime`` must come from
the caller: the helpers keep the old time when the condition's ``status`` and
``reason`` are unchanged (only the message may move), and otherwise stamp the
time the caller derived from the request (see ``latest_time``). That makes
identical requests give identical conditions, and a repeated sync never
"touches" a condition that did not change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from lib.api.types import Condition

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"

EPOCH = "1970-01-01T00:00:00Z"


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of ``type_``, or None."""
    for c in conditions or ():
        if isinstance(c, Mapping) and c.get("type") == type_:
            return c
    return None


def make(
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    now: str,
    previous: Mapping[str, Any] | None = None,
    generation: int | None = None,
) -> Condition:
    """A condition; ``lastTransitionTime`` is kept from ``previous`` when status and reason match."""
    keep = (
        previous is not None
        and previous.get("status") == status
        and previous.get("reason") == reason
        and isinstance(previous.get("lastTransitionTime"), str)
        and previous.get("lastTransitionTime")
    )
    cond: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": str(reason),
        "message": message,
        "lastTransitionTime": previous["lastTransitionTime"] if keep and previous else now,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond  # type: ignore[return-value]


def merge(
    old: Iterable[Mapping[str, Any]] | None,
    new: Iterable[tuple[str, str, str, str]],
    *,
    now: str,
    generation: int | None = None,
) -> list[Condition]:
    """Conditions for ``new`` ``(type, status, reason, message)`` tuples, in that order.

    Old conditions of other types are dropped: the hook owns every condition
    type it writes and writes all of them on every call.
    """
    old_list = [c for c in (old or ()) if isinstance(c, Mapping)]
    return [
        make(t, s, r, m, now=now, previous=find(old_list, t), generation=generation) for t, s, r, m in new
    ]


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (as the API server writes them) or None.

    None too for one whose UTC form is outside years 1-9999 (``9999-12-31T23:59:59-14:00``):
    it could be neither compared with nor formatted like the others.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        t = t if t.tzinfo else t.replace(tzinfo=UTC)
        t.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return t


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with second precision (``2026-01-02T03:04:05Z``)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_CANONICAL = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")


def latest_time(values: Iterable[Any], default: str = EPOCH) -> str:
    """The newest of the given timestamps (unparseable ones ignored), formatted."""
    present = [v for v in values if isinstance(v, str) and v]
    if present and all(_CANONICAL.match(v) for v in present):
        return max(present)  # the API server's own format sorts as text: skip parsing
    best: datetime | None = None
    for v in present:
        t = parse_time(v)
        if t is not None and (best is None or t > best):
            best = t
    return format_time(best) if best else default
