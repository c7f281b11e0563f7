"""Value types shared by the client and its callers: descriptors and manifests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (``mediaType``, ``digest``, ``size``, ``annotations``)."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The descriptor as it appears in a manifest (annotations only when present)."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Descriptor:
        return cls(
            media_type=str(obj["mediaType"]),
            digest=str(obj["digest"]),
            size=int(obj["size"]),
            annotations=dict(obj.get("annotations") or {}),
        )


@dataclass(frozen=True)
class Manifest:
    """A manifest as fetched: exact bytes, media type, and the digest of those bytes."""

    body: bytes
    media_type: str
    digest: str
