"""Names the module derives: DMCR repositories, child objects, stable secrets.

Everything here is a pure function of its arguments, so two hook replicas (or
a restarted one) derive the same names and tokens for the same object.
"""

from __future__ import annotations

import hashlib
import hmac

REPOSITORY_ROOT = "ai-models/catalog"


def model_repository(*, namespace: str | None, name: str, uid: str) -> str:
    """DMCR repository of a Model (namespace set) or ClusterModel (namespace None)."""
    if namespace:
        return f"{REPOSITORY_ROOT}/namespaced/{namespace}/{name}/{uid}".lower()
    return f"{REPOSITORY_ROOT}/cluster/{name}/{uid}".lower()


def derive_secret(key: bytes, purpose: str, identity: str, length: int = 32) -> str:
    """A stable secret for (purpose, identity): hex HMAC-SHA256 under ``key``.

    ``purpose`` separates domains (an upload token can never be replayed as a
    registry credential for the same UID). The primitive only: credentials and
    upload tokens go through ``lib.credentials.sign``, which picks the current
    key of the set and binds its key id into the MAC.
    """
    mac = hmac.new(key, f"{purpose}\x00{identity}".encode(), hashlib.sha256)
    return mac.hexdigest()[: max(16, min(length * 2, 64))]


def short_hash(*parts: str, length: int = 8) -> str:
    """A short, stable hash used to keep derived object names ≤ 63 chars."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:length]


def dns_label(prefix: str, name: str, *, limit: int = 63) -> str:
    """``prefix-name`` trimmed to a valid DNS-1123 label, stable and unique."""
    full = f"{prefix}-{name}".lower()
    if len(full) <= limit:
        return full
    suffix = short_hash(full)
    return f"{full[: limit - len(suffix) - 1].rstrip('-')}-{suffix}"
