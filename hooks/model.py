"""Model and ClusterModel controllers: Metacontroller v2 sync, finalize and customize.

Each hook is a pure function of the request and ``Config``: it reads the
parent (its spec and the status it wrote before), the observed children and
the related Secrets / worker Jobs / ModelCatalogSources, and answers the
desired children and the whole new status. Nothing is remembered between
calls; what must survive (the attempt and upload-session counters, the
published artifact) lives in ``status``. The lifecycle, the retry policy and
the time rules are in ``docs/lifecycle.md``.

This module is the entry ``hooks/app.py`` routes to: the six handlers and
``customize``. Each kind reads as parse -> decide (pure) -> render:

- ``hooks/model_parent.py``: the parent taken apart once (``ModelRef``, its ``owner``);
- ``hooks/model_sync.py``: the sync ladder (``hooks/model_preflight.py`` first);
- ``hooks/model_finalize.py``: the cleanup ladder;
- ``hooks/model_answer.py``: the ``Verdict`` rendered into status;
- ``hooks/model_children.py`` over ``hooks/worker_jobs.py``: the children.
"""

from __future__ import annotations

from typing import Any

from hooks import model_mounts as mounts
from hooks.errors import HookInputError
from hooks.model_finalize import finalize, namespace_terminating
from hooks.model_sync import MAX_ATTEMPTS, sync, upload_token
from hooks.worker_jobs import BACKOFF_MAX_SECONDS, backoff_seconds
from lib.api.types import API_VERSION, LABEL_MODEL_UID
from lib.config import Config

Obj = dict[str, Any]


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
    # No Pods: worker results are on the worker's own Job (hooks/worker_jobs.py).
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
    return sync(req, config, cluster=False)


def clustermodel_sync(req: Obj, config: Config) -> Obj:
    return sync(req, config, cluster=True)


def model_finalize(req: Obj, config: Config) -> Obj:
    return finalize(req, config, cluster=False)


def clustermodel_finalize(req: Obj, config: Config) -> Obj:
    return finalize(req, config, cluster=True)


def model_customize(req: Obj, config: Config) -> Obj:
    return _customize(req, config, cluster=False)


def clustermodel_customize(req: Obj, config: Config) -> Obj:
    return _customize(req, config, cluster=True)


__all__ = [
    "BACKOFF_MAX_SECONDS",
    "MAX_ATTEMPTS",
    "backoff_seconds",
    "namespace_terminating",
    "clustermodel_customize",
    "clustermodel_finalize",
    "clustermodel_sync",
    "model_customize",
    "model_finalize",
    "model_sync",
    "upload_token",
]
