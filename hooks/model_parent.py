"""The parent of a Model hook call, taken apart once, and the names derived from it.

Every child name is a pure function of the parent's identity (and of the
attempt / upload session counters kept in its status), so repeated calls and
other hook replicas derive the same objects. ClusterModel children live in the
module namespace next to other ClusterModels' (and possibly namespaced
Models'), so they get a distinct prefix (``ai-clustermodel-``) and can never
collide with a Model of the same name there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hooks.errors import HookInputError
from hooks.worker_jobs import Owner
from lib.api.naming import dns_label, model_repository
from lib.config import Config


@dataclass(frozen=True)
class ModelRef:
    cluster: bool
    kind: str
    name: str
    namespace: str  # "" for a ClusterModel
    uid: str
    generation: int | None
    created: str  # metadata.creationTimestamp (may be "")
    spec: dict[str, Any]
    status: dict[str, Any]
    child_namespace: str
    repository: str  # DMCR repository (no registry host)
    destination: str  # REGISTRY/REPOSITORY
    # Children made on this object's behalf by another controller (the catalog import run
    # by its ModelCatalogSource in the module namespace) get their own prefix and a stem
    # from the UID, so Models of the same name in different namespaces never collide there.
    child_prefix: str = ""
    child_stem: str = ""

    @property
    def prefix(self) -> str:
        return self.child_prefix or ("ai-clustermodel" if self.cluster else "ai-model")

    @property
    def stem(self) -> str:
        return self.child_stem or self.name

    @property
    def owner(self) -> Owner:
        """Whom this model's worker Jobs work for (``hooks/worker_jobs.py``)."""
        return Owner(
            kind=self.kind,
            name=self.name,
            namespace=self.namespace,
            uid=self.uid,
            child_namespace=self.child_namespace,
            prefix=self.prefix,
            stem=self.stem,
        )

    @property
    def source(self) -> dict[str, Any]:
        return self.spec.get("source") or {}

    # -- child names -------------------------------------------------------
    def publish_job(self, attempt: int) -> str:
        return dns_label(f"{self.prefix}-publish", f"{self.stem}-{attempt}")

    def upload_job(self, session: int, attempt: int) -> str:
        return dns_label(f"{self.prefix}-upload", f"{self.stem}-{session}-{attempt}")

    def cleanup_job(self, attempt: int) -> str:
        return dns_label(f"{self.prefix}-cleanup", f"{self.stem}-{attempt}")

    @property
    def worker_account(self) -> str:
        """ServiceAccount, Role and RoleBinding of the worker (same name, different kinds)."""
        return self.owner.worker_account

    @property
    def registry_secret(self) -> str:
        return dns_label(f"{self.prefix}-registry", self.stem)

    @property
    def cleanup_secret(self) -> str:
        return dns_label(f"{self.prefix}-cleanup-registry", self.stem)

    def upload_secret(self, session: int) -> str:
        """One Secret per session: a new upload server can never mount the previous token."""
        return dns_label(f"{self.prefix}-upload", f"{self.stem}-{session}")

    @property
    def upload_service(self) -> str:
        return dns_label(f"{self.prefix}-upload", self.stem)

    @property
    def upload_reader_role(self) -> str:
        # Pinned by the user guide for Models: ai-model-upload-reader-<model-name>.
        return dns_label(f"{self.prefix}-upload-reader", self.name, limit=253)


def parse_parent(req: dict[str, Any], config: Config, *, cluster: bool) -> ModelRef:
    """Take the request's parent apart; HookInputError when it is not a usable Model."""
    parent = req.get("parent") or {}
    md = parent.get("metadata") or {}
    kind = parent.get("kind", "")
    expected = "ClusterModel" if cluster else "Model"
    if kind != expected:
        raise HookInputError(f"parent.kind must be {expected}, got {kind!r}")
    name = md.get("name", "")
    uid = md.get("uid")
    if not isinstance(uid, str) or not uid:
        raise HookInputError("parent.metadata.uid is required")
    namespace = md.get("namespace") or ""
    if not cluster and not namespace:
        raise HookInputError("parent.metadata.namespace is required for a Model")
    spec = parent.get("spec")
    if not isinstance(spec, dict):
        raise HookInputError("parent.spec must be an object")
    source = spec.get("source")
    if not isinstance(source, dict):
        raise HookInputError("parent.spec.source must be an object")
    status = parent.get("status")
    if status is not None and not isinstance(status, dict):
        raise HookInputError("parent.status must be an object")
    generation = md.get("generation")
    repo = model_repository(namespace=None if cluster else namespace, name=name, uid=uid)
    return ModelRef(
        cluster=cluster,
        kind=kind,
        name=name,
        namespace="" if cluster else namespace,
        uid=uid,
        generation=generation if isinstance(generation, int) else None,
        created=md.get("creationTimestamp") or "",
        spec=spec,
        status=status or {},
        child_namespace=config.namespace if cluster else namespace,
        repository=repo,
        destination=f"{config.registry}/{repo}",
    )
