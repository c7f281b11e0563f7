"""The hook service's configuration, read once from the environment.

A frozen object: nothing in the module writes ``os.environ``; tests build a
``Config`` directly instead of patching the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Config:
    namespace: str = "d8-ai-models"
    registry: str = "dmcr.d8-ai-models.svc:5000"
    worker_image: str = "ghcr.io/ai-models/worker:0.1.0"
    signing_key: bytes = field(default=b"ai-models-development-signing-key", repr=False)
    token_key_pem: bytes | None = field(default=None, repr=False)
    token_service: str = "dmcr"
    token_issuer: str = "ai-models"
    # Registry reached over plain HTTP (local runs and tests only).
    registry_insecure: bool = False
    # PEM CA bundle DMCR's TLS certificate chains to (AI_MODELS_REGISTRY_CA_FILE).
    # It travels with each registry credential Secret as key ``ca.crt``, so a
    # worker pod in any namespace can verify DMCR without another object.
    registry_ca_pem: bytes | None = field(default=None, repr=False)
    # Upload sessions
    upload_ttl_seconds: int = 3600
    upload_port: int = 8080
    upload_external_base: str = ""  # e.g. https://upload.example.com (optional Ingress)
    # Workload delivery mode: "InitContainer" is the one implemented.
    delivery_mode: str = "InitContainer"
    hook_service_url: str = "http://ai-models-hooks.d8-ai-models.svc:8080"
    # "HH:MM-HH:MM" UTC: no push tokens while registry garbage collection may run.
    registry_gc_window: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        d = cls()

        def read(path_var: str) -> bytes | None:
            path = env.get(path_var)
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read().strip()

        return cls(
            namespace=env.get("AI_MODELS_NAMESPACE", d.namespace),
            registry=env.get("AI_MODELS_REGISTRY", d.registry),
            worker_image=env.get("AI_MODELS_WORKER_IMAGE", d.worker_image),
            signing_key=read("AI_MODELS_SIGNING_KEY_FILE") or d.signing_key,
            token_key_pem=read("AI_MODELS_TOKEN_KEY_FILE"),
            token_service=env.get("AI_MODELS_TOKEN_SERVICE", d.token_service),
            token_issuer=env.get("AI_MODELS_TOKEN_ISSUER", d.token_issuer),
            registry_insecure=env.get("AI_MODELS_REGISTRY_INSECURE", "") in ("1", "true", "True"),
            registry_ca_pem=read("AI_MODELS_REGISTRY_CA_FILE"),
            upload_ttl_seconds=int(env.get("AI_MODELS_UPLOAD_TTL_SECONDS", d.upload_ttl_seconds)),
            upload_port=int(env.get("AI_MODELS_UPLOAD_PORT", d.upload_port)),
            upload_external_base=env.get("AI_MODELS_UPLOAD_EXTERNAL_BASE", d.upload_external_base),
            delivery_mode=env.get("AI_MODELS_DELIVERY_MODE", d.delivery_mode),
            hook_service_url=env.get("AI_MODELS_HOOK_SERVICE_URL", d.hook_service_url),
            registry_gc_window=env.get("AI_MODELS_REGISTRY_GC_WINDOW", d.registry_gc_window),
        )
