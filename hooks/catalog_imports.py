"""Catalog imports, run by the ModelCatalogSource controller in the module namespace.

An import needs the catalog's credential, and no tenant may ever read it
(docs/security.md). A pod mounts only Secrets of its own namespace, so the
import cannot run in a Model's namespace without a copy there. Instead the
ModelCatalogSource controller, which is cluster-scoped and may own children in
the module namespace, runs there, for every Model and ClusterModel whose status
asks for an import from it, a publish Job with the catalog credential and a
push credential derived for exactly that model's repository. The Model hooks
only read the outcome (related Jobs and Pods in the module namespace, labelled
with the model's UID) and write status. Names derive from the model's UID, so
Models of the same name in different namespaces never collide.

What asks for an import is the model's status, which only the Model hooks
write (no user role grants ``models/status``): phase Publishing, or Pending
with reason Pending, and a frozen selection naming this source. The attempt
counter comes from the same status, so the Model hooks keep deciding retries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hooks import model_children as ch
from hooks.errors import HookInputError
from hooks.model_parent import ModelRef, parse_parent
from hooks.worker_jobs import backoff_seconds
from lib import catalog
from lib.api import conditions as cond
from lib.api.naming import dns_label, short_hash
from lib.api.types import ConditionType, Phase, Reason
from lib.config import Config
from lib.sources import registry as sources

Obj = dict[str, Any]

PREFIX = "ai-catalog-import"
WORKER = "catalog-import"
LABEL_SOURCE_UID = "ai.deckhouse.io/catalog-source-uid"
DOCKERCONFIG_KEY = ".dockerconfigjson"
MAX_ATTEMPT = 1000  # a status counter above this is not ours
# What an import worker may fail with that the administrator can fix: the Model shows Failed with
# the reason and the import is retried, same revision and digest (the user guide: recoverable).
RETRIED_REASONS = frozenset(
    {Reason.CATALOG_AUTH_FAILED, Reason.CATALOG_TLS_INVALID, Reason.CATALOG_SOURCE_NOT_READY}
)


def import_failed(status: Obj) -> bool:
    """A catalog import whose worker failed with a retried reason (not a preflight refusal)."""
    conds = status.get("conditions")
    ready = cond.find(conds, ConditionType.READY) or {}
    artifact = cond.find(conds, ConditionType.ARTIFACT_RESOLVED) or {}
    return (
        status.get("phase") == Phase.FAILED
        and ready.get("reason") in RETRIED_REASONS
        and artifact.get("reason") != Reason.PENDING
    )


def auth_secret_name(source: str) -> str:
    """The source's dockerconfigjson, copied into the module namespace only."""
    return dns_label("ai-catalog-auth", source)


def ca_secret_name(source: str) -> str:
    return dns_label("ai-catalog-ca", source)


def import_ref(m: ModelRef, config: Config) -> ModelRef:
    """``m`` as the owner-to-be of its import's objects in the module namespace."""
    stem = short_hash(m.uid, length=12)
    return replace(m, child_namespace=config.namespace, child_prefix=PREFIX, child_stem=stem)


def import_job_name(m: ModelRef, config: Config, attempt: int) -> str:
    return import_ref(m, config).publish_job(attempt)


@dataclass(frozen=True)
class Request:
    """One import a model's status asks this source for."""

    model: ModelRef
    reference: str  # REPOSITORY@DIGEST in the catalog's registry
    attempt: int


def requested(obj: Obj, source: str, config: Config) -> Request | None:
    """The import ``obj`` (a related Model or ClusterModel) asks ``source`` for, if any."""
    md = obj.get("metadata") or {}
    if md.get("deletionTimestamp") or obj.get("kind") not in ("Model", "ClusterModel"):
        return None
    try:
        m = parse_parent({"parent": obj}, config, cluster=obj.get("kind") == "ClusterModel")
    except HookInputError:
        return None
    if not isinstance(m.source.get("catalog"), dict):
        return None
    status = m.status
    frozen = (status.get("source") or {}).get("catalog") or {}
    if not isinstance(frozen, dict) or frozen.get("sourceName") != source:
        return None
    ready = cond.find(status.get("conditions"), ConditionType.READY) or {}
    phase = status.get("phase")
    waiting = phase == Phase.PENDING and ready.get("reason") == Reason.PENDING
    if not (phase == Phase.PUBLISHING or waiting or import_failed(status)):
        return None
    reference, digest = str(frozen.get("reference") or ""), str(frozen.get("remoteDigest") or "")
    try:
        catalog.split_reference(reference)
    except catalog.CatalogError:
        return None
    if reference.rpartition("@")[2] != digest:
        return None
    attempt = status.get("attempt")
    attempt = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1 else 1
    if attempt > MAX_ATTEMPT:
        return None
    return Request(m, reference, attempt)


def children(
    req: Request, config: Config, *, source_name: str, source_uid: str, registry: str, insecure: bool,
    auth: bool, ca: bool,
) -> list[Obj]:
    """The push credential, the worker's RBAC and the import Job for one request."""
    mi = import_ref(req.model, config)
    how = ch.SourceAuth(
        secret=auth_secret_name(source_name) if auth else "",
        key=DOCKERCONFIG_KEY if auth else "",
        path=DOCKERCONFIG_KEY if auth else "",
        insecure=insecure,
        ca_secret=ca_secret_name(source_name) if ca else "",
    )
    job = ch.publish_job(
        mi,
        config,
        source=f"{sources.OCI_SCHEME}{registry}/{req.reference}",
        attempt=req.attempt,
        auth=how,
        delay_seconds=backoff_seconds(req.attempt),
        worker=WORKER,
        labels={LABEL_SOURCE_UID: source_uid},
    )
    return [ch.registry_secret(mi, config), *ch.worker_rbac(mi, job["metadata"]["name"]), job]
