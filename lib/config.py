"""The hook service's configuration, read once from the environment.

A frozen object: nothing in the module writes ``os.environ``; tests build a
``Config`` directly instead of patching the environment (and pass
``signing_key=`` when they derive credentials: there is no default key).

The signing key fails closed: a key file that is named but missing, empty or
shorter than 32 bytes, or the public development key without its switch, is
a ``ConfigError`` when the configuration is read, so the service does not
start. No key at all is allowed only for a listener that derives nothing
(the webhook); ``hooks.app.create_app`` refuses it for the others.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lib.capacity import parse_quantity
from lib.signing_keys import DEVELOPMENT_KEY, SigningKeyError, SigningKeys

SIGNING_KEY_ENV = "AI_MODELS_SIGNING_KEY_FILE"
SIGNING_KEYS_DIR_ENV = "AI_MODELS_SIGNING_KEYS_DIR"
DEV_KEY_ENV = "AI_MODELS_DEV_INSECURE_SIGNING_KEY"
CAPACITY_ENV = "AI_MODELS_REGISTRY_CAPACITY_BYTES"  # lib.capacity.SETTING
QUOTA_ENV = "AI_MODELS_NAMESPACE_QUOTA_BYTES"  # lib.capacity.QUOTA_SETTING
_TRUE = ("1", "true", "True")


class ConfigError(ValueError):
    """The environment does not describe a usable service; the message says which setting to fix."""


@dataclass(frozen=True)
class Config:
    namespace: str = "d8-ai-models"
    registry: str = "dmcr.d8-ai-models.svc:5000"
    worker_image: str = "ghcr.io/ai-models/worker:0.1.0"
    # The HMAC key that signs new credentials and upload tokens (AI_MODELS_SIGNING_KEY_FILE).
    signing_key: bytes | None = field(default=None, repr=False)
    # Keys that still verify besides it: the previous key during a rotation, or the next one
    # before it becomes current (every file of AI_MODELS_SIGNING_KEYS_DIR).
    verifying_keys: tuple[bytes, ...] = field(default=(), repr=False)
    # Accept the public development key (AI_MODELS_DEV_INSECURE_SIGNING_KEY=1): local runs only.
    dev_insecure_signing_key: bool = False
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
    upload_max_bytes: int = 1 << 40  # upload-server --max-upload-bytes; 0: no limit
    # Workload delivery mode (AI_MODELS_DELIVERY_MODE): "InitContainer" or "NodeCache"
    # (lib/delivery/modes.py); a workload may override it with ai.deckhouse.io/delivery-mode.
    delivery_mode: str = "InitContainer"
    hook_service_url: str = "http://ai-models-hooks.d8-ai-models.svc:8080"
    # "HH:MM-HH:MM" UTC: no push tokens while registry garbage collection may run.
    registry_gc_window: str = ""
    # DMCR's capacity in bytes (AI_MODELS_REGISTRY_CAPACITY_BYTES, plain or 500Gi): workers refuse a
    # model whose known size does not fit (lib/capacity.py); 0: no check.
    registry_capacity_bytes: int = 0
    # What one namespace's Models may hold in DMCR (AI_MODELS_NAMESPACE_QUOTA_BYTES); 0: no quota.
    namespace_quota_bytes: int = 0
    _signing_keys: SigningKeys | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.signing_key is None:
            if self.verifying_keys:
                raise ConfigError(f"verifying keys without a current one: set {SIGNING_KEY_ENV}")
            return
        try:
            keys = SigningKeys(self.signing_key, self.verifying_keys, self.dev_insecure_signing_key)
        except SigningKeyError as e:
            raise ConfigError(str(e)) from None
        object.__setattr__(self, "_signing_keys", keys)

    @property
    def signing_keys(self) -> SigningKeys:
        """The key set; ``ConfigError`` when none is configured (a listener that should not derive)."""
        if self._signing_keys is None:
            raise ConfigError(f"no signing key: set {SIGNING_KEY_ENV} to a file of at least 32 random bytes")
        return self._signing_keys

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """The configuration the environment describes; ``ConfigError`` names the setting to fix."""
        env = os.environ if env is None else env
        d = cls()

        def read(path_var: str) -> bytes | None:
            path = env.get(path_var)
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read().strip()

        dev = env.get(DEV_KEY_ENV, "") in _TRUE
        current, verifying = _read_signing_keys(env, dev)
        if current is None and dev:
            current = DEVELOPMENT_KEY
        return cls(
            namespace=env.get("AI_MODELS_NAMESPACE", d.namespace),
            registry=env.get("AI_MODELS_REGISTRY", d.registry),
            worker_image=env.get("AI_MODELS_WORKER_IMAGE", d.worker_image),
            signing_key=current,
            verifying_keys=verifying,
            dev_insecure_signing_key=dev,
            token_key_pem=read("AI_MODELS_TOKEN_KEY_FILE"),
            token_service=env.get("AI_MODELS_TOKEN_SERVICE", d.token_service),
            token_issuer=env.get("AI_MODELS_TOKEN_ISSUER", d.token_issuer),
            registry_insecure=env.get("AI_MODELS_REGISTRY_INSECURE", "") in _TRUE,
            registry_ca_pem=read("AI_MODELS_REGISTRY_CA_FILE"),
            upload_ttl_seconds=int(env.get("AI_MODELS_UPLOAD_TTL_SECONDS", d.upload_ttl_seconds)),
            upload_port=int(env.get("AI_MODELS_UPLOAD_PORT", d.upload_port)),
            upload_external_base=env.get("AI_MODELS_UPLOAD_EXTERNAL_BASE", d.upload_external_base),
            upload_max_bytes=int(env.get("AI_MODELS_UPLOAD_MAX_BYTES", d.upload_max_bytes)),
            delivery_mode=env.get("AI_MODELS_DELIVERY_MODE", d.delivery_mode),
            hook_service_url=env.get("AI_MODELS_HOOK_SERVICE_URL", d.hook_service_url),
            registry_gc_window=env.get("AI_MODELS_REGISTRY_GC_WINDOW", d.registry_gc_window),
            registry_capacity_bytes=_capacity(env.get(CAPACITY_ENV, "")),
            namespace_quota_bytes=_capacity(env.get(QUOTA_ENV, ""), QUOTA_ENV),
        )


def _capacity(text: str, setting: str = CAPACITY_ENV) -> int:
    """A byte-count setting (empty: 0, no check); ``ConfigError`` names the setting."""
    try:
        return parse_quantity(text) if text.strip() else 0
    except ValueError as e:
        raise ConfigError(f"{setting}: {e}") from None


def _read_key(var: str, path: Path, dev: bool) -> bytes:
    """One key file, stripped of surrounding whitespace; errors name the setting and the file."""
    try:
        key = path.read_bytes().strip()
    except OSError as e:
        raise ConfigError(f"{var}: cannot read signing key file {path}: {e.strerror or e}") from None
    if not key:
        raise ConfigError(f"{var}: signing key file {path} is empty")
    try:
        SigningKeys(key, allow_development=dev)
    except SigningKeyError as e:
        raise ConfigError(f"{var}: signing key file {path}: {e}") from None
    return key


def _read_signing_keys(env: Mapping[str, str], dev: bool) -> tuple[bytes | None, tuple[bytes, ...]]:
    """(current key, keys that also verify) from AI_MODELS_SIGNING_KEY_FILE and AI_MODELS_SIGNING_KEYS_DIR.

    The directory is a mounted Secret: every file in it is a key (names are
    free-form labels such as ``key``, ``previous``, ``next``); Kubernetes'
    own ``..data`` entries and other dot files are skipped. It may hold the
    current key too.
    """
    file, directory = env.get(SIGNING_KEY_ENV, ""), env.get(SIGNING_KEYS_DIR_ENV, "")
    current = _read_key(SIGNING_KEY_ENV, Path(file), dev) if file else None
    if not directory:
        return current, ()
    if current is None:
        raise ConfigError(f"{SIGNING_KEYS_DIR_ENV} is set but {SIGNING_KEY_ENV} is not: name the current key")
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{SIGNING_KEYS_DIR_ENV}: {root} is not a directory")
    names = sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and p.is_file())
    return current, tuple(_read_key(SIGNING_KEYS_DIR_ENV, root / n, dev) for n in names)
