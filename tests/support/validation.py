"""Validate each distinct object once per test session, with no loss of checking.

Every hook test checks every object it gets back: each child with
``kubernetes-validate`` (strict), each status against our CRD with its CEL
rules (``tests.support.crd_validate``). Those checks used to take 98% of a
pure hook test's time, although most of the objects are the same ones over
and over (the same Job for the same Model, sync after sync). Two things make
them cheap without checking less:

* **Memoised by content.** The key is a SHA-256 of the canonical JSON of
  everything the result depends on (the object, the Kubernetes version and
  strictness; for a CRD check, the CRD, the object and the old object).
  An object that changes in any byte is a different key, so it is validated
  afresh; an identical one gets the result of the identical check. A
  refusal is not cached: it is raised by a fresh validation each time (its
  message and traceback are the test's). Objects that are not plain JSON
  (a ``to_dict()`` model, a NaN, non-string keys) are never cached.
* **Schema files read once.** ``kubernetes-validate`` parses its JSON Schema
  files (the 1.33 ``_definitions.json`` alone is megabytes) on every call;
  they are package data that cannot change during a session, so
  ``schema_contents`` is cached per file. The validation itself is the
  library's, unchanged.

``install()`` (called once from ``tests/conftest.py``) wraps
``kubernetes_validate.validate`` in place, so the tests keep calling the
library as documented. ``STATS`` counts calls and distinct checks (printed by
``pytest -v`` at the end of the session).
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import kubernetes_validate
import kubernetes_validate.utils as kv_utils

T = TypeVar("T")

# calls / distinct checks, per validator ("kubernetes", "crd").
STATS: dict[str, dict[str, int]] = {}
_CACHES: dict[str, dict[str, Any]] = {}
_LOCK = threading.Lock()


def content_key(*parts: Any) -> str | None:
    """SHA-256 of the canonical JSON of ``parts``, or ``None`` when they are not plain JSON."""
    try:
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def memoised(name: str, key: str | None, compute: Callable[[], T], copy: Callable[[T], T] = lambda v: v) -> T:
    """``compute()`` once per ``key`` in cache ``name`` (``key`` None: always compute).

    Only values are cached; an exception propagates and the next call with
    the same key computes again. ``copy`` is applied to what is returned, so
    a caller that mutates a result cannot change the cached one.
    """
    stats = STATS.setdefault(name, {"calls": 0, "checks": 0})
    cache = _CACHES.setdefault(name, {})
    with _LOCK:
        stats["calls"] += 1
        if key is not None and key in cache:
            return copy(cache[key])
        stats["checks"] += 1
    value = compute()
    if key is not None:
        with _LOCK:
            cache[key] = value
    return copy(value)


def install() -> None:
    """Memoise ``kubernetes_validate.validate`` and read its schema files once (idempotent)."""
    if getattr(kubernetes_validate.validate, "__wrapped__", None) is not None:
        return
    original = kubernetes_validate.validate
    kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)

    @functools.wraps(original)
    def validate(data: Any, desired_version: str, strict: bool = False) -> str:
        key = content_key(data, desired_version, strict) if isinstance(data, dict) else None
        return memoised("kubernetes", key, lambda: original(data, desired_version, strict))

    kubernetes_validate.validate = validate
    kv_utils.validate = validate


def summary() -> str:
    """One line: calls and distinct checks per validator."""
    parts = [f"{name}: {s['calls']} calls, {s['checks']} checked" for name, s in sorted(STATS.items())]
    return "validation memo (tests/support/validation.py): " + ("; ".join(parts) or "unused")
