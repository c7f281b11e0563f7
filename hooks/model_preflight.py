"""Preflight of the Model hooks: what to run, or why nothing can run yet.

Re-run on every sync and never creates a Job when it refuses (docs/lifecycle.md,
"Decision order in sync", step 3): exactly one of ``url``/``upload``/``catalog``;
a URL some entry of the source registry accepts (``lib/sources/registry.py``);
the ``authSecretRef`` Secret related and holding one of that entry's keys; a
catalog plan (``hooks/model_catalog.py``). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hooks import model_catalog
from hooks import model_children as ch
from hooks.errors import HookInputError
from hooks.model_parent import ModelRef
from hooks.model_status import SECRET, by_name
from lib.api import conditions as cond
from lib.api.types import Phase, Reason
from lib.config import Config
from lib.sources import registry as sources
from lib.sources.base import SourceError

Obj = dict[str, Any]


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
    data: dict[str, Any] = {}
    for field in ("stringData", "data"):  # maps, as the API server returns them; anything else is none
        part = secret.get(field)
        data.update(part if isinstance(part, dict) else {})
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

