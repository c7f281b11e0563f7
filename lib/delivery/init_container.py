"""The ``InitContainer`` delivery mode: each pod downloads its models into its own ``emptyDir``.

Injected (everything named ``ai-models-*``, which is what ``strip`` removes):

- volume ``ai-models-cache``: ``emptyDir`` whose ``sizeLimit`` is the summed
  artifact sizes + 5 % + 64 MiB (kubelet evicts a pod that outgrows it,
  rather than filling the node);
- volume ``ai-models-pull``: the workload's pull Secret, mounted **only** into
  our init containers: the app never sees a registry credential;
- volume ``ai-models-kube-api``: a projected service-account token (the
  pod's own account) and the cluster CA, mounted **only** into our init
  containers, so ``materialize`` can record Events on its pod
  (``ModelMaterialized``, ``MaterializeFailed``) where the account may
  (an administrator binds ``ai-models:materialize-events``; without it the
  step runs as before and records nothing);
- per model, init container ``ai-models-materialize-<name>`` running
  ``python -m jobs materialize`` by digest, restricted security context,
  after the last native sidecar (a mesh proxy the pull may need) and before
  the user's other init containers;
- in every container and user init container, a read-only mount of the cache
  at ``/data/modelcache/models``.

Every field the API server would default is set explicitly, so the object the
webhook is sent back renders to itself and the patch is empty.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from lib.api import worker_cli
from lib.api.naming import dns_label, short_hash
from lib.api.types import MODELS_DIR
from lib.config import Config
from lib.delivery.interface import PREFIX, Needs, PodSpec, add_volumes, drop, named, strip_volumes
from lib.delivery.resolution import ResolvedModel

MODE_INIT_CONTAINER = "InitContainer"

CACHE_VOLUME = "ai-models-cache"
PULL_VOLUME = "ai-models-pull"
PULL_DIR = "/var/run/ai-models/pull"
AUTH_FILE = f"{PULL_DIR}/.dockerconfigjson"
KUBE_VOLUME = "ai-models-kube-api"
KUBE_DIR = "/var/run/ai-models/kube"
CA_FILE = f"{PULL_DIR}/ca.crt"  # DMCR's CA, shipped in the pull Secret when configured
INIT_CONTAINER_PREFIX = f"{PREFIX}materialize"

# The materialize step runs as this non-root user; emptyDir directories are
# world-writable and the files it writes world-readable, so any app user reads them.
WORKER_UID = 65532
# Headroom over the summed artifact sizes for the emptyDir sizeLimit.
SIZE_HEADROOM_RATIO = 0.05
SIZE_HEADROOM_BYTES = 64 << 20

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class InitContainerMode:
    """``DeliveryMode`` ``InitContainer`` (the default)."""

    name = MODE_INIT_CONTAINER
    needs = Needs(pull_secret=True, worker_image=True)

    def strip(self, pod_spec: PodSpec) -> PodSpec:
        drop(pod_spec, "initContainers", named(lambda n: n.startswith(INIT_CONTAINER_PREFIX)))
        return strip_volumes(pod_spec, lambda n: n in (CACHE_VOLUME, PULL_VOLUME, KUBE_VOLUME))

    def render(
        self, pod_spec: PodSpec, models: Sequence[ResolvedModel], *, secret_name: str, config: Config
    ) -> PodSpec:
        mounts = [{"name": CACHE_VOLUME, "mountPath": MODELS_DIR, "readOnly": True}]
        add_volumes(pod_spec, _volumes(models, secret_name, _ships_ca(config)), mounts)
        ours = [_init_container(m, config) for m in models]
        pod_spec["initContainers"] = _insert_after_sidecars(pod_spec.get("initContainers") or [], ours)
        return pod_spec


def _volumes(models: Sequence[ResolvedModel], secret_name: str, with_ca: bool) -> list[dict[str, Any]]:
    total = sum(m.size_bytes for m in models)
    items = [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}]
    if with_ca:
        items.append({"key": "ca.crt", "path": "ca.crt"})
    empty_dir: dict[str, Any] = {}
    if total > 0:
        empty_dir["sizeLimit"] = quantity(math.ceil(total * (1 + SIZE_HEADROOM_RATIO)) + SIZE_HEADROOM_BYTES)
    return [
        {"name": CACHE_VOLUME, "emptyDir": empty_dir},
        {
            "name": PULL_VOLUME,
            "secret": {
                "secretName": secret_name,
                "items": items,
                "defaultMode": 0o444,
            },
        },
        {
            "name": KUBE_VOLUME,
            "projected": {
                "defaultMode": 0o444,
                "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                    {"configMap": {"name": "kube-root-ca.crt",
                                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                ],
            },
        },
    ]


def init_container_name(model: str) -> str:
    """``ai-models-materialize-<model>`` as a DNS label (model names may hold dots)."""
    name = f"{INIT_CONTAINER_PREFIX}-{model}"
    if len(name) <= 63 and _DNS_LABEL.match(name):
        return name
    return dns_label(INIT_CONTAINER_PREFIX, f"{model.replace('.', '-')}-{short_hash(model)}")


def _ships_ca(config: Config) -> bool:
    return bool(config.registry_ca_pem) and not config.registry_insecure


def materialize_command(model: ResolvedModel, config: Config) -> worker_cli.Materialize:
    """The init container's ``python -m jobs materialize``: by digest, with the pull Secret's files."""
    return worker_cli.Materialize(
        artifact=model.uri,
        into=model.path,
        auth_file=AUTH_FILE,
        insecure_registry=config.registry_insecure,
        ca_file=CA_FILE if _ships_ca(config) else None,
    )


def materialize_args(model: ResolvedModel, config: Config) -> list[str]:
    """Its flags: the command name is in the container's ``command``."""
    return materialize_command(model, config).options()


def _init_container(model: ResolvedModel, config: Config) -> dict[str, Any]:
    # Every field the API server would default is set, so that the object we
    # get back on the next admission compares equal and the patch stays empty.
    return {
        "name": init_container_name(model.name),
        "image": config.worker_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "jobs", worker_cli.Materialize.COMMAND],
        "args": materialize_args(model, config),
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "env": [
            {"name": "AI_MODELS_KUBE_DIR", "value": KUBE_DIR},
            *({"name": f"AI_MODELS_POD_{key.upper()}", "valueFrom": {"fieldRef": {"apiVersion": "v1",
              "fieldPath": f"metadata.{key}"}}} for key in ("name", "namespace", "uid")),
        ],
        "volumeMounts": [
            {"name": CACHE_VOLUME, "mountPath": MODELS_DIR},
            {"name": PULL_VOLUME, "mountPath": PULL_DIR, "readOnly": True},
            {"name": KUBE_VOLUME, "mountPath": KUBE_DIR, "readOnly": True},
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _insert_after_sidecars(
    existing: list[dict[str, Any]], ours: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Ours go after the last native sidecar (e.g. a mesh proxy the pull needs), before other inits."""
    cut = 0
    for i, c in enumerate(existing):
        if c.get("restartPolicy") == "Always":
            cut = i + 1
    return [*existing[:cut], *ours, *existing[cut:]]


def quantity(n: int) -> str:
    """Bytes rounded up to Mi, in the canonical form the API server stores (``2Gi``, not ``2048Mi``)."""
    value, suffix = math.ceil(n / (1 << 20)), "Mi"
    for bigger in ("Gi", "Ti", "Pi"):
        if value % 1024:
            break
        value, suffix = value // 1024, bigger
    return f"{value}{suffix}"
