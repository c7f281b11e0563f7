"""What the stand-ins need from an API server, and the two places it can come from.

One Metacontroller stand-in and one kubelet serve both backends: ``Cluster``
(``devstack/cluster.py``, in memory, for ``make run`` with no cluster)
and ``KubeStore`` (``devstack/kubestore.py``, a real kube-apiserver, for
the tests). Both keep an ordered log of watch events carrying whole objects,
which is what an informer is built from (``devstack/informer.py``).
"""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    api_version: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


# kind -> where it lives in the API
KINDS: dict[str, Resource] = {
    "Model": Resource("ai.deckhouse.io/v1alpha1", "models"),
    "ClusterModel": Resource("ai.deckhouse.io/v1alpha1", "clustermodels", False),
    "ModelCatalogSource": Resource("ai.deckhouse.io/v1alpha1", "modelcatalogsources", False),
    "Job": Resource("batch/v1", "jobs"),
    "CronJob": Resource("batch/v1", "cronjobs"),
    "Pod": Resource("v1", "pods"),
    "Secret": Resource("v1", "secrets"),
    "ConfigMap": Resource("v1", "configmaps"),
    "Service": Resource("v1", "services"),
    "ServiceAccount": Resource("v1", "serviceaccounts"),
    "Namespace": Resource("v1", "namespaces", False),
    "Node": Resource("v1", "nodes", False),
    "Role": Resource("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": Resource("rbac.authorization.k8s.io/v1", "rolebindings"),
    "ClusterRole": Resource("rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": Resource("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Ingress": Resource("networking.k8s.io/v1", "ingresses"),
    "Deployment": Resource("apps/v1", "deployments"),
    "StatefulSet": Resource("apps/v1", "statefulsets"),
    "DaemonSet": Resource("apps/v1", "daemonsets"),
    "Event": Resource("events.k8s.io/v1", "events"),
}
CLUSTER_SCOPED = {k for k, r in KINDS.items() if not r.namespaced}
# plural resource name -> kind (what Metacontroller objects and relatedResources name)
RESOURCES = {r.plural: k for k, r in KINDS.items()}
# Kinds whose status is a subresource: a main-resource write never changes it.
NO_STATUS = {"Event", "Secret", "ConfigMap", "Role", "RoleBinding", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}


def namespace_of(obj: Obj) -> str:
    return "" if obj["kind"] in CLUSTER_SCOPED else (obj["metadata"].get("namespace") or "")


def key_of(obj: Obj) -> tuple[str, str, str]:
    return obj["kind"], namespace_of(obj), obj["metadata"]["name"]


class ApiError(Exception):
    """A refused request, with the API server's status code and reason."""

    def __init__(self, code: int, reason: str, message: str):
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message


class NotFound(ApiError):
    def __init__(self, message: str):
        super().__init__(404, "NotFound", message)


class AlreadyExists(ApiError):
    def __init__(self, message: str):
        super().__init__(409, "AlreadyExists", message)


class Conflict(ApiError):
    def __init__(self, message: str):
        super().__init__(409, "Conflict", message)


def error_for(code: int, reason: str, message: str) -> ApiError:
    if code == 404:
        return NotFound(message)
    if code == 409 and reason == "AlreadyExists":
        return AlreadyExists(message)
    if code == 409:
        return Conflict(message)
    return ApiError(code, reason, message)


@dataclass(frozen=True)
class Event:
    """One watch event: ``ADDED``, ``MODIFIED`` or ``DELETED`` with the whole object."""

    type: str
    obj: Obj
    at: float = field(default_factory=time.monotonic)


class Store(Protocol):
    """The API surface the stand-ins and the tests use."""

    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None: ...

    def list(self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> list[Obj]: ...

    def create(self, obj: Obj) -> Obj:
        """POST; raises ``AlreadyExists``, or ``ApiError`` for a namespaced object without namespace."""
        ...

    def update(self, obj: Obj) -> Obj:
        """PUT of the main resource (status untouched); ``Conflict`` on a stale resourceVersion."""
        ...

    def apply(self, obj: Obj) -> Obj:
        """What a user's ``kubectl apply`` does (namespace defaults to ``default``)."""
        ...

    def delete(self, kind: str, name: str, namespace: str = "", uid: str | None = None,
               grace_period: int | None = None) -> None:
        """Background propagation; ``uid`` is a precondition; ``NotFound`` when absent."""
        ...

    def set_status(self, kind: str, name: str, namespace: str, status: Obj) -> Obj | None:
        """Replace ``status`` through the status subresource; None when the object is gone."""
        ...

    def patch_metadata(self, kind: str, name: str, namespace: str, **changes: Any) -> Obj | None: ...

    def remove_finalizer(self, kind: str, name: str, namespace: str, finalizer: str) -> None: ...

    def bind(self, pod: Obj, node: str) -> None:
        """The pods/binding subresource: what the scheduler does."""
        ...

    def events_since(self, cursor: int) -> tuple[int, builtins.list[Event]]:
        """Watch events after ``cursor`` (0: from the beginning) and the next cursor."""
        ...

    def in_cluster(self) -> tuple[str, int]:
        """Where a pod reaches the API server (``KUBERNETES_SERVICE_HOST``/``_PORT``)."""
        ...

    def service_account_token(self, namespace: str, account: str, pod: Obj, expiration: int) -> str:
        """TokenRequest for a projected ``serviceAccountToken`` volume, bound to ``pod``."""
        ...
