"""Metacontroller's client-side apply of a child (its "dynamic apply").

Behaviour as documented by pkg/dynamic/apply/apply.go and
pkg/controller/common/manage_children.go (ApplyUpdate), re-implemented:
the last desired state is kept in an annotation; an update applies the diff
from that last state to the new desired state onto the observed object, so
fields set by others (the API server's defaults, another controller's
labels) survive. Lists of objects that share a conventional key
(``containerPort``, ``port``, ``mountPath``, ``name``, ``uid``, ``ip``,
``path``, in that order) merge item by item; other lists are replaced.
System metadata and ``status`` always come from the observed object.
"""

from __future__ import annotations

import copy
import json
from typing import Any

LAST_APPLIED = "metacontroller.k8s.io/last-applied-configuration"
MERGE_KEYS = ("containerPort", "port", "mountPath", "name", "uid", "ip", "path")
SYSTEM_FIELDS = ("selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
                 "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields")
Obj = dict[str, Any]


def last_applied(obj: Obj) -> Obj | None:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    return json.loads(raw) if raw else None


def set_last_applied(obj: Obj, content: Obj) -> None:
    obj.setdefault("metadata", {}).setdefault("annotations", {})[LAST_APPLIED] = json.dumps(
        content, sort_keys=True, separators=(",", ":"))


def _list_key(*lists: list[Any] | None) -> str | None:
    common: set[str] | None = None
    for lst in lists:
        for item in lst or []:
            if not isinstance(item, dict):
                return None
            common = set(item) if common is None else common & set(item)
    for k in MERGE_KEYS:
        if common and k in common:
            return k
    return None


def _merge(dest: Any, last: Any, desired: Any) -> Any:
    if isinstance(dest, dict):
        return _merge_object(dest, last if isinstance(last, dict) else {}, desired if isinstance(desired, dict) else {})
    if isinstance(dest, list):
        lastl = last if isinstance(last, list) else None
        desl = desired if isinstance(desired, list) else None
        key = _list_key(dest, lastl, desl)
        if key is None:
            return copy.deepcopy(desired)
        as_map = lambda lst: {str(i[key]): i for i in lst or []}  # noqa: E731
        dm = as_map(dest)
        _merge_object(dm, as_map(lastl), as_map(desl))
        out, added = [], set()
        for item in dest:
            k = str(item[key])
            if k in dm:
                out.append(dm[k])
                added.add(k)
        for item in desl or []:
            k = str(item[key])
            if k not in added:
                out.append(dm[k])
                added.add(k)
        return out
    return copy.deepcopy(desired)


def _merge_object(dest: Obj, last: Obj, desired: Obj) -> Obj:
    for k in last:
        if k not in desired:
            dest.pop(k, None)
    for k, v in desired.items():
        dest[k] = _merge(dest.get(k), last.get(k), v)
    return dest


def apply_update(observed: Obj, desired: Obj) -> Obj:
    """The object Metacontroller would PUT for ``desired`` over ``observed``."""
    update = copy.deepcopy(desired)
    (update.get("metadata") or {}).get("annotations", {}).pop(LAST_APPLIED, None)
    new = _merge(copy.deepcopy(observed), last_applied(observed) or {}, update)
    for f in SYSTEM_FIELDS:
        if f in observed.get("metadata", {}):
            new["metadata"][f] = observed["metadata"][f]
        else:
            new["metadata"].pop(f, None)
    if "status" in observed:
        new["status"] = observed["status"]
    else:
        new.pop("status", None)
    set_last_applied(new, update)
    return new


def selector_matches(selector: Obj | None, values: dict[str, str] | None) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against labels or annotations."""
    values = values or {}
    if selector is None:
        return True
    for k, v in (selector.get("matchLabels") or selector.get("matchAnnotations") or {}).items():
        if values.get(k) != v:
            return False
    for ex in selector.get("matchExpressions") or []:
        op, key, vals = ex["operator"], ex["key"], ex.get("values") or []
        if op == "Exists" and key not in values:
            return False
        if op == "DoesNotExist" and key in values:
            return False
        if op == "In" and values.get(key) not in vals:
            return False
        if op == "NotIn" and key in values and values[key] in vals:
            return False
    return True
