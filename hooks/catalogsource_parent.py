"""The parent of a ModelCatalogSource hook call, taken apart once (``Source``).

Like ``hooks/model_parent.py`` for the Model hooks: ``parse_source`` checks
the request's parent and returns a frozen value; ``Source.owner`` is whom the
probe Jobs work for (``hooks/worker_jobs.py``): the cluster-scoped source
itself, its children in the module namespace under the ``ai-catalog-probe``
prefix. ``decode_ca`` is shared with the Model hooks' catalog plan
(``hooks/model_catalog.py``), which checks a source's CA before an import.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from hooks.errors import HookInputError
from hooks.worker_jobs import Owner
from lib.api.naming import dns_label

Obj = dict[str, Any]

KIND = "ModelCatalogSource"
PROBE_PREFIX = "ai-catalog-probe"
DEFAULT_REFRESH = 300


def probe_job_name(source: str, attempt: int) -> str:
    """The Job of probe ``attempt``: a function of the source's name and the probe counter."""
    return dns_label(PROBE_PREFIX, f"{source}-{attempt}")


@dataclass(frozen=True)
class Source:
    name: str
    uid: str
    generation: int | None
    spec: Obj
    status: Obj
    registry: str
    repository: str
    tag: str
    insecure: bool
    refresh: int
    auth_ref: tuple[str, str] | None  # (namespace, name)

    @property
    def catalog_ref(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    def owner(self, child_namespace: str) -> Owner:
        """Whom the probe Jobs work for: this source, their objects in ``child_namespace``."""
        return Owner(
            kind=KIND,
            name=self.name,
            namespace="",
            uid=self.uid,
            child_namespace=child_namespace,
            prefix=PROBE_PREFIX,
            stem=self.name,
        )


def decode_ca(value: Any) -> str:
    """``spec.caBundle`` (base64 PEM) → PEM text; ValueError when it is not that."""
    if not value:
        return ""
    try:
        pem = base64.b64decode(str(value), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("spec.caBundle is not base64-encoded PEM") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("spec.caBundle does not contain a PEM certificate (-----BEGIN CERTIFICATE-----)")
    return pem


def parse_source(parent: Obj) -> Source:
    md = parent.get("metadata") or {}
    if parent.get("kind") != KIND:
        raise HookInputError(f"parent.kind must be {KIND}, got {parent.get('kind')!r}")
    name, uid = md.get("name"), md.get("uid")
    if not isinstance(name, str) or not name or not isinstance(uid, str) or not uid:
        raise HookInputError("parent.metadata.name and uid are required")
    spec = parent.get("spec")
    if not isinstance(spec, dict):
        raise HookInputError("parent.spec must be an object")
    status = parent.get("status") or {}
    if not isinstance(status, dict):
        raise HookInputError("parent.status must be an object")
    registry, repository = spec.get("registry"), spec.get("repository")
    if not isinstance(registry, str) or not registry or not isinstance(repository, str) or not repository:
        raise HookInputError("parent.spec.registry and parent.spec.repository are required")
    ref = spec.get("authSecretRef")
    auth = None
    if isinstance(ref, dict) and ref.get("name") and ref.get("namespace"):
        auth = (str(ref["namespace"]), str(ref["name"]))
    refresh = spec.get("refreshIntervalSeconds")
    gen = md.get("generation")
    return Source(
        name=name,
        uid=uid,
        generation=gen if isinstance(gen, int) else None,
        spec=spec,
        status=status,
        registry=registry,
        repository=repository,
        tag=str(spec.get("tag") or "latest"),
        insecure=spec.get("insecure") is True,
        refresh=refresh if isinstance(refresh, int) and refresh >= 30 else DEFAULT_REFRESH,
        auth_ref=auth,
    )
