"""Workload DecoratorController hooks: resolve the models a workload names.

A decorator may write only labels, annotations, status and attachments
(Metacontroller forbids spec changes), so ``sync`` writes the *resolution* (or
the reason there is none) as annotations on the workload and attaches the
workload's pull credential Secret; the mutating webhook (``hooks.webhook``)
turns those annotations into the pod template. Status is left alone: a
Deployment's status belongs to its own controller.

Request shapes: Metacontroller's decorator hooks send ``{controller, object,
attachments, related, finalizing}`` (v2: ``namespace/name`` keys, v1:
relative keys; pkg/controller/decorator/api/v2/hooks.go); ``parent`` and
``children`` are read too (the object lookups ignore the key style).

No ``resyncAfterSeconds``: with v2 hooks every change of a related Model
(same namespace, by name) or ClusterModel (cluster-scoped, by name) wakes the
workloads that name it (pkg/controller/common/customize/manager.go
matchesRelatedRule), so polling would only cost hook calls: 5,000 blocked
workloads at 30 s were 166 calls a second. The DecoratorController's
``resyncPeriodSeconds`` remains the safety net (tests/test_scale.py).

One exception, cheap and bounded: an answer that *changes* the workload's
annotations asks for one follow-up sync (``RESYNC_AFTER_WRITE``). Metacontroller
writes them with a PUT of its cached object and ignores a conflict, counting on
the next event (pkg/controller/decorator/controller.go, sync); with
``ignoreStatusChanges`` the event that caused the conflict — the Deployment
controller's status write — is dropped, so the resolution would wait for the
resync period (600 s) while the new template stays gated. The follow-up sees
the annotations written and asks for nothing more: one extra call per change.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from hooks.errors import HookInputError
from lib import credentials, delivery
from lib.api.types import API_VERSION
from lib.config import Config
from lib.delivery import Blocked, ModelKind, ModelRef

SECRET_TYPE = "kubernetes.io/dockerconfigjson"
LABELS = {"app.kubernetes.io/managed-by": "ai-models", "app.kubernetes.io/component": "model-pull"}
RESYNC_AFTER_WRITE = 5  # seconds; see the module docstring


def _target(req: Mapping[str, Any]) -> dict[str, Any]:
    """The decorated object: ``parent`` in v2 requests (and every customize), ``object`` in v1."""
    obj = req.get("parent") or req.get("object")
    if not isinstance(obj, dict):
        raise HookInputError("request has no object")
    return obj


def _namespace(obj: Mapping[str, Any]) -> str:
    ns = (obj.get("metadata") or {}).get("namespace")
    if not ns:
        raise HookInputError(f"{obj.get('kind')} {obj['metadata']['name']!r} has no namespace")
    return str(ns)


def customize(req: dict[str, Any], config: Config) -> dict[str, Any]:
    """Relate the named Models (same namespace) and ClusterModels.

    Only valid names are asked for; sync reports the invalid ones. Metacontroller
    caches this answer per generation: the webhook's pod-template annotation
    moves the generation whenever the requested names change.
    """
    obj = _target(req)
    refs, _ = delivery.requested((obj.get("metadata") or {}).get("annotations"))
    valid = [r for r in refs if delivery.valid_name(r.name)]
    rules: list[dict[str, Any]] = []
    models = sorted({r.name for r in valid if r.kind == ModelKind.MODEL})
    cluster = sorted({r.name for r in valid if r.kind == ModelKind.CLUSTER_MODEL})
    if models:
        rules.append(
            {"apiVersion": API_VERSION, "resource": "models", "namespace": _namespace(obj), "names": models}
        )
    if cluster:
        rules.append({"apiVersion": API_VERSION, "resource": "clustermodels", "names": cluster})
    return {"relatedResources": rules}


def _lookup(related: Mapping[str, Any] | None, namespace: str) -> Any:
    """ref → the related object, whatever the map's key style (v1 ``name`` or v2 ``ns/name``)."""
    index: dict[ModelRef, dict[str, Any]] = {}
    for group in (related or {}).values():
        for obj in (group or {}).values():
            if not isinstance(obj, dict) or str(obj.get("apiVersion", "")).split("/")[0] != "ai.deckhouse.io":
                continue
            meta = obj.get("metadata") or {}
            kind = obj.get("kind")
            if kind == ModelKind.MODEL and meta.get("namespace") == namespace:
                index[ModelRef(ModelKind.MODEL, meta.get("name", ""))] = obj
            elif kind == ModelKind.CLUSTER_MODEL:
                index[ModelRef(ModelKind.CLUSTER_MODEL, meta.get("name", ""))] = obj
    return index.get


def pull_secret(
    obj: Mapping[str, Any], models: list[delivery.ResolvedModel], config: Config
) -> dict[str, Any]:
    """The workload's ``kubernetes.io/dockerconfigjson`` Secret: pull of exactly its models' repositories.

    Key ``ca.crt`` holds DMCR's CA when one is configured (``--ca-file`` of the init containers).
    """
    user, password = credentials.pull_credential(config.signing_keys, [m.repository for m in models])
    config_json = credentials.dockerconfigjson(config.registry, user, password)
    meta = obj["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": delivery.pull_secret_name(str(obj.get("kind", "")), meta["name"]),
            "namespace": meta["namespace"],
            "labels": dict(LABELS),
        },
        "type": SECRET_TYPE,
        # data, not stringData: the API server stores data, so a re-apply compares equal.
        "data": {
            ".dockerconfigjson": _b64(config_json.encode()),
            # DMCR's CA travels with the credential, as for the module's own workers.
            **({"ca.crt": _b64(config.registry_ca_pem)} if config.registry_ca_pem else {}),
        },
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _observed_secret(
    req: Mapping[str, Any], name: str, namespace: str, config: Config
) -> dict[str, Any] | None:
    """The attached pull Secret as desired state (kept while blocked: pods of the old revision need it).

    The observed Secret lives in the tenant's namespace and may have been edited there, so it is
    kept only when it still holds a pull credential this module signed (any other content is
    dropped, never re-applied), and then rendered anew from that verified credential and the
    module's CA: nothing else of the observed bytes (other ``auths`` entries, a ``ca.crt`` of the
    tenant's) is copied.
    """
    for group in (req.get("children") or req.get("attachments") or {}).values():
        for obj in (group or {}).values():
            obj = obj or {}
            meta = obj.get("metadata") or {}
            if obj.get("kind") != "Secret" or (meta.get("name"), meta.get("namespace")) != (name, namespace):
                continue
            raw = obj.get("data")
            data: dict[str, Any] = raw if isinstance(raw, dict) else {}
            verified = _signed_pull_credential(data.get(".dockerconfigjson"), config)
            if verified is None:
                return None
            config_json = credentials.dockerconfigjson(config.registry, *verified)
            return {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(LABELS)},
                "type": SECRET_TYPE,
                "data": {
                    ".dockerconfigjson": _b64(config_json.encode()),
                    **({"ca.crt": _b64(config.registry_ca_pem)} if config.registry_ca_pem else {}),
                },
            }
    return None


def _signed_pull_credential(value: Any, config: Config) -> tuple[str, str] | None:
    """``(username, password)`` of the pull credential for DMCR that a base64 ``.dockerconfigjson``
    holds, when our keys verify it; None for anything else."""
    try:
        doc = json.loads(base64.b64decode(str(value), validate=True))
        auth = doc["auths"][config.registry]
        user, password = str(auth["username"]), str(auth["password"])
        grant = credentials.verify(config.signing_keys, user, password)  # lone surrogates: ValueError
    # RecursionError: JSON nested thousands deep (the tenant may write this Secret).
    except (ValueError, TypeError, KeyError, binascii.Error, RecursionError):
        return None
    return (user, password) if grant is not None and grant.kind == "pull" else None


def sync(req: dict[str, Any], config: Config) -> dict[str, Any]:
    answer = _sync(req, config)
    observed = (_target(req).get("metadata") or {}).get("annotations") or {}
    if any(observed.get(k) != v for k, v in answer["annotations"].items()):
        answer["resyncAfterSeconds"] = RESYNC_AFTER_WRITE  # a lost write is retried, not left to the resync
    return answer


def _sync(req: dict[str, Any], config: Config) -> dict[str, Any]:
    obj = _target(req)
    namespace = _namespace(obj)
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    refs, blocked = delivery.requested(annotations)
    if not refs:
        return {
            "annotations": {delivery.ANNOTATION_RESOLUTION: None, delivery.ANNOTATION_BLOCKED: None},
            "attachments": [],
        }
    lookup = _lookup(req.get("related"), namespace)
    result: list[delivery.ResolvedModel] | Blocked = (
        blocked if blocked is not None else delivery.resolve(refs, lookup, config.registry)
    )
    if not isinstance(result, Blocked):
        result = _mount_conflict(obj, result, config) or result
    if isinstance(result, Blocked):
        name = delivery.pull_secret_name(str(obj.get("kind", "")), obj["metadata"]["name"])
        kept = _observed_secret(req, name, namespace, config)
        written = {delivery.ANNOTATION_RESOLUTION: None, delivery.ANNOTATION_BLOCKED: result.encode()}
        return {"annotations": written, "attachments": [kept] if kept else []}
    response: dict[str, Any] = {
        "annotations": {
            delivery.ANNOTATION_RESOLUTION: delivery.encode_resolution(result),
            delivery.ANNOTATION_BLOCKED: None,
        },
        "attachments": [pull_secret(obj, result, config)],
    }
    return response


def _mount_conflict(
    obj: dict[str, Any], models: list[delivery.ResolvedModel], config: Config
) -> Blocked | None:
    """Blocked when a mount the user wrote sits where the workload's delivery mode mounts the models."""
    mode = delivery.choose_mode((obj.get("metadata") or {}).get("annotations"), config.delivery_mode).mode
    template = delivery.pod_template(obj)
    if mode is None or template is None:
        return None
    secret = delivery.pull_secret_name(str(obj.get("kind", "")), obj["metadata"]["name"])
    try:
        problems = delivery.mount_conflicts(template, models, mode, config, secret)
    except (TypeError, AttributeError, KeyError, ValueError) as e:
        # Only a stored (so validated) workload comes from Metacontroller: this is not one.
        raise HookInputError(f"the object's pod template is malformed ({type(e).__name__}: {e})") from None
    return delivery.conflict_block(problems) if problems else None


def finalize(req: dict[str, Any], config: Config) -> dict[str, Any]:
    """Remove what sync wrote; the webhook strips the injection once the annotations are gone.

    No DecoratorController of ours declares this hook any more (no finalizer on
    user workloads, metacontroller/workloads.yaml). It stays served so that the
    two DecoratorControllers of an older install release their finalizers during
    an upgrade: while the workload still names models and is not being deleted,
    the resolution stays, so its pods are not gated and rolled for nothing.
    """
    obj = _target(req)
    md = obj.get("metadata") or {}
    handed_over = not md.get("deletionTimestamp") and delivery.has_model_annotations(md.get("annotations"))
    out: dict[str, Any] = {"attachments": [], "finalized": True}
    if not handed_over:
        out["annotations"] = {delivery.ANNOTATION_RESOLUTION: None, delivery.ANNOTATION_BLOCKED: None}
    return out
