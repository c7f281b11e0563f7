"""Builders of the Model controllers' children: Jobs, Secrets, RBAC, Service, Ingress.

Pure functions of the parent (``ModelRef``), the config and a few counters.
Every object is complete and deterministic, because Metacontroller applies it
with a three-way merge on every sync: a field that changed between two calls
would be an update (and a Job's pod template cannot be updated at all).

The Jobs are worker Jobs of ``hooks/worker_jobs.py`` (restricted pod, result
on the Job's annotation, a token that may patch that one Job) working for the
model's ``owner``; what is the Model's own here is the worker's command line,
its mounts (the DMCR credential, the source's, the upload token) and its
budget.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from hooks import worker_jobs as wj
from hooks.model_parent import ModelRef
from hooks.worker_jobs import (
    LABEL_ATTEMPT,
    LABEL_WORKER,
    RESULT_FILE,
    SOURCE_CA_DIR,
    SOURCE_DIR,
    Budget,
    JobSpec,
    secret_volume,
    worker_job,
)
from lib.api import worker_cli as cli
from lib.api.types import LABEL_MODEL_UID
from lib.capacity import USAGE_CONFIGMAP
from lib.config import Config
from lib.credentials import cleanup_credential, dockerconfigjson, publish_credential

Obj = dict[str, Any]

LABEL_SESSION = "ai.deckhouse.io/upload-session"

REGISTRY_DIR = "/var/run/ai-models/registry"
REGISTRY_AUTH_FILE = f"{REGISTRY_DIR}/.dockerconfigjson"
REGISTRY_CA_FILE = f"{REGISTRY_DIR}/ca.crt"
UPLOAD_DIR = "/var/run/ai-models/upload"
UPLOAD_TOKEN_FILE = f"{UPLOAD_DIR}/token"
SCRATCH_DIR = "/scratch"

# Publishing streams every file straight into its blob: no local copy, so the
# ephemeral storage is only /tmp and logs. Uploads may spool a zip.
PUBLISH = Budget(("250m", "2"), ("256Mi", "1Gi"), ("512Mi", "2Gi"), 24 * 3600, 2)
UPLOAD = Budget(("250m", "2"), ("256Mi", "1Gi"), ("1Gi", "66Gi"), 0, 2)
CLEANUP = Budget(("50m", "500m"), ("64Mi", "256Mi"), ("64Mi", "256Mi"), 600, 3)
UPLOAD_SCRATCH_SIZE = "64Gi"
UPLOAD_SCRATCH_BYTES = 63 << 30  # --max-spool-bytes stays under the emptyDir limit
UPLOAD_PUBLISH_GRACE_SECONDS = 24 * 3600  # an upload that arrived may still be publishing


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _meta(m: ModelRef, name: str) -> Obj:
    return wj.meta(m.owner, name)


def _capacity_flags(config: Config, namespace: str) -> dict[str, Any]:
    """``--registry-capacity-bytes`` with ``--registry-usage``, and ``--namespace-quota-bytes`` with
    the Model's namespace, each when configured, else nothing: the Job spec is a function of the
    Config and the Model's identity alone (lib/capacity.py). ClusterModels (``namespace`` "")
    have no quota."""
    flags: dict[str, Any] = {}
    if config.registry_capacity_bytes > 0:
        flags["registry_capacity_bytes"] = config.registry_capacity_bytes
        flags["registry_usage"] = f"{config.namespace}/{USAGE_CONFIGMAP}"
    if config.namespace_quota_bytes > 0 and namespace:
        flags.update(namespace_quota_bytes=config.namespace_quota_bytes, quota_namespace=namespace)
    return flags


def _registry_ca(config: Config) -> str | None:
    """DMCR's CA file when it ships in the worker's Secret; else plain HTTP (local runs) or public TLS."""
    return REGISTRY_CA_FILE if config.registry_ca_pem and not config.registry_insecure else None


def _registry_volume(secret: str, config: Config) -> tuple[Obj, Obj]:
    items = [(".dockerconfigjson", ".dockerconfigjson")]
    if config.registry_ca_pem and not config.registry_insecure:
        items.append(("ca.crt", "ca.crt"))
    return (
        secret_volume("registry-auth", secret, items),
        {"name": "registry-auth", "mountPath": REGISTRY_DIR, "readOnly": True},
    )


@dataclass(frozen=True)
class SourceAuth:
    """How the publish worker reaches a private source, without copying the credential."""

    secret: str = ""  # user's Secret in the child namespace
    key: str = ""  # the key mounted
    path: str = ""  # token | .dockerconfigjson
    insecure: bool = False  # a catalog registry that speaks plain HTTP
    ca_secret: str = ""  # the CA as key ca.crt of a Secret (the catalog source's copy)


def publish_job(
    m: ModelRef,
    config: Config,
    *,
    source: str,
    attempt: int,
    auth: SourceAuth,
    delay_seconds: int = 0,
    worker: str = "publish",
    labels: dict[str, str] | None = None,
    mount_from: tuple[str, ...] = (),
) -> Obj:
    name = m.publish_job(attempt)
    command = cli.Publish(
        source=source,
        destination=m.destination,
        model_name=m.name,
        registry_auth_file=REGISTRY_AUTH_FILE,
        result_file=RESULT_FILE,
        insecure_registry=config.registry_insecure,
        registry_ca_file=_registry_ca(config),
        auth_file=f"{SOURCE_DIR}/{auth.path}" if auth.secret else None,
        insecure_source=auth.insecure,
        ca_file=f"{SOURCE_CA_DIR}/ca.crt" if auth.ca_secret else None,
        **_capacity_flags(config, m.namespace),
        mount_from=mount_from,
    )
    vol, mount = _registry_volume(m.registry_secret, config)
    source_volumes, source_mounts = wj.source_mounts(
        (auth.secret, [(auth.key, auth.path)]) if auth.secret else None, auth.ca_secret
    )
    return worker_job(
        m.owner,
        config,
        JobSpec(
            name=name,
            worker=worker,
            args=command.argv(),
            budget=PUBLISH,
            service_account=True,
            volumes=[vol, *source_volumes],
            mounts=[mount, *source_mounts],
            labels={LABEL_ATTEMPT: str(attempt), **(labels or {})},
            delay_seconds=delay_seconds,
        ),
    )


def upload_job(
    m: ModelRef,
    config: Config,
    *,
    session: int,
    attempt: int,
    expires_at: str,
    ttl_seconds: int,
    delay_seconds: int = 0,
) -> Obj:
    name = m.upload_job(session, attempt)
    command = cli.UploadServer(
        destination=m.destination,
        model_name=m.name,
        listen=f"0.0.0.0:{config.upload_port}",
        token_file=UPLOAD_TOKEN_FILE,
        expires_at=expires_at,
        registry_auth_file=REGISTRY_AUTH_FILE,
        scratch_dir=SCRATCH_DIR,
        max_spool_bytes=UPLOAD_SCRATCH_BYTES,
        max_upload_bytes=config.upload_max_bytes,
        result_file=RESULT_FILE,
        insecure_registry=config.registry_insecure,
        registry_ca_file=_registry_ca(config),
        **_capacity_flags(config, m.namespace),
    )
    vol, mount = _registry_volume(m.registry_secret, config)
    volumes = [
        vol,
        secret_volume("upload-token", m.upload_secret(session), [("token", "token")]),
        {"name": "scratch", "emptyDir": {"sizeLimit": UPLOAD_SCRATCH_SIZE}},
    ]
    mounts = [
        mount,
        {"name": "upload-token", "mountPath": UPLOAD_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
    ]
    return worker_job(
        m.owner,
        config,
        JobSpec(
            name=name,
            worker="upload-server",
            args=command.argv(),
            budget=UPLOAD,
            service_account=True,
            volumes=volumes,
            mounts=mounts,
            labels={LABEL_ATTEMPT: str(attempt), LABEL_SESSION: str(session)},
            delay_seconds=delay_seconds,
            deadline_seconds=max(ttl_seconds, 60) + UPLOAD_PUBLISH_GRACE_SECONDS,
            ports=[{"name": "upload", "containerPort": config.upload_port, "protocol": "TCP"}],
        ),
    )


def cleanup_job(m: ModelRef, config: Config, *, digest: str, attempt: int, delay_seconds: int = 0) -> Obj:
    command = cli.Cleanup(
        artifact=f"{m.destination}@{digest}",
        auth_file=REGISTRY_AUTH_FILE,
        result_file=RESULT_FILE,
        insecure_registry=config.registry_insecure,
        ca_file=_registry_ca(config),
    )
    vol, mount = _registry_volume(m.cleanup_secret, config)
    return worker_job(
        m.owner,
        config,
        JobSpec(
            name=m.cleanup_job(attempt),
            worker="cleanup",
            args=command.argv(),
            budget=CLEANUP,
            service_account=True,
            volumes=[vol],
            mounts=[mount],
            labels={LABEL_ATTEMPT: str(attempt)},
            delay_seconds=delay_seconds,
        ),
    )


def _dockerconfig_secret(m: ModelRef, config: Config, name: str, user: str, password: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(m, name),
        "type": "kubernetes.io/dockerconfigjson",
        "data": {
            ".dockerconfigjson": _b64(dockerconfigjson(config.registry, user, password)),
            **({"ca.crt": _b64(config.registry_ca_pem.decode())} if config.registry_ca_pem else {}),
        },
    }


def registry_secret(m: ModelRef, config: Config, mount_from: tuple[str, ...] = ()) -> Obj:
    """Push (and pull) on this model's repository; pull on its mount candidates (hooks/model_mounts.py)."""
    user, pw = publish_credential(config.signing_keys, m.repository, mount_from)
    return _dockerconfig_secret(m, config, m.registry_secret, user, pw)


def cleanup_secret(m: ModelRef, config: Config) -> Obj:
    """Delete (and pull) on this model's repository only."""
    user, pw = cleanup_credential(config.signing_keys, m.repository)
    return _dockerconfig_secret(m, config, m.cleanup_secret, user, pw)


def worker_rbac(m: ModelRef, *job_names: str, config: Config | None = None) -> list[Obj]:
    """The RBAC of the model's worker: it may get/patch its own Jobs (``hooks/worker_jobs.py``);
    with ``config`` naming a namespace quota, also list the namespace's Models (publish, upload)."""
    return wj.worker_rbac(m.owner, *job_names, list_models=quota_reads_models(config))


def quota_reads_models(config: Config | None) -> bool:
    """Whether a publish or upload worker lists its namespace's Models (the namespace quota)."""
    return config is not None and config.namespace_quota_bytes > 0


# -- upload session ---------------------------------------------------------

INGRESS_PATH_ROOT = "/ai-models/upload"


def upload_path(m: ModelRef) -> str:
    """Path of this model's upload endpoint behind the optional external Ingress.

    The kind is its own segment and the UID ends the path, so no Model path can
    equal a ClusterModel's (whatever the namespace is called) or another
    Model's, and a recreated Model of the same name gets a new path.
    """
    scope = f"clustermodel/{m.name}" if m.cluster else f"model/{m.namespace}/{m.name}"
    return f"{INGRESS_PATH_ROOT}/{scope}/{m.uid}"


def upload_path_pattern(m: ModelRef) -> str:
    """The Ingress path: ingress-nginx treats it as a regex (rewrite-target), so it is
    escaped and anchored: a ``.`` in a name matches only a dot, and nothing may follow."""
    return re.escape(upload_path(m)) + "$"


def upload_urls(m: ModelRef, config: Config) -> tuple[str, str]:
    """``(url, in_cluster_url)``: the URL users get (external when configured) and the Service URL."""
    internal = f"http://{m.upload_service}.{m.child_namespace}.svc:{config.upload_port}/upload"
    if config.upload_external_base:
        return f"{config.upload_external_base.rstrip('/')}{upload_path(m)}", internal
    return internal, internal


def upload_secret(m: ModelRef, config: Config, *, session: int, token: str) -> Obj:
    url, internal = upload_urls(m, config)
    data = {"url": _b64(url), "token": _b64(token)}
    if url != internal:
        data["inClusterURL"] = _b64(internal)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(m, m.upload_secret(session)),
        "type": "Opaque",
        "data": data,
    }


def observed_upload_token(children: Obj | None, m: ModelRef, session: int) -> str | None:
    """The token the observed upload Secret of ``session`` carries (None when absent or unreadable).

    ``lib.credentials.upload_token`` keeps it while it still verifies, so a
    signing key rotation does not change the token of a running upload server.
    """
    items = (children or {}).get("Secret.v1")
    name = m.upload_secret(session)
    found = (items.get(f"{m.child_namespace}/{name}") or items.get(name)) if isinstance(items, dict) else None
    data = found.get("data") if isinstance(found, dict) else None
    raw = data.get("token") if isinstance(data, dict) else None
    if not isinstance(raw, str):
        return None
    try:
        return base64.b64decode(raw, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def upload_reader_role(m: ModelRef, *, session: int) -> Obj:
    """``get`` on the upload Secret only: what a user binds to read the URL and token."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(m, m.upload_reader_role),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [m.upload_secret(session)],
                "verbs": ["get"],
            }
        ],
    }


def upload_service(m: ModelRef, config: Config) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(m, m.upload_service),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_MODEL_UID: m.uid, LABEL_WORKER: "upload-server"},
            "ports": [
                {"name": "upload", "port": config.upload_port, "targetPort": "upload", "protocol": "TCP"}
            ],
        },
    }


def upload_ingress(m: ModelRef, config: Config) -> Obj:
    """External access for multi-GB uploads: no body limit, no request buffering, long timeouts."""
    from urllib.parse import urlsplit

    host = urlsplit(config.upload_external_base).hostname or ""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            **_meta(m, m.upload_service),
            "annotations": {
                "nginx.ingress.kubernetes.io/proxy-body-size": "0",
                "nginx.ingress.kubernetes.io/proxy-request-buffering": "off",
                "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
                "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
                "nginx.ingress.kubernetes.io/use-regex": "true",
                "nginx.ingress.kubernetes.io/rewrite-target": "/upload",
            },
        },
        "spec": {
            "rules": [
                {
                    **({"host": host} if host else {}),
                    "http": {
                        "paths": [
                            {
                                "path": upload_path_pattern(m),
                                "pathType": "ImplementationSpecific",
                                "backend": {
                                    "service": {"name": m.upload_service, "port": {"name": "upload"}}
                                },
                            }
                        ]
                    },
                }
            ]
        },
    }
