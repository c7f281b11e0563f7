"""The HMAC signing key set: one current key that signs, older (or next) keys that still verify.

Every derived secret (DMCR credentials, upload tokens) names the key it was
made with by its *key id*, a fingerprint of the key (``key_id``), so rotation
needs no bookkeeping: add a key, make it current, drop the old one. Dropping
a key from the set ends every credential derived from it.

Pure: bytes in, checked values out. Reading the files is ``lib.config``'s job.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field

# 32 bytes: an HMAC-SHA256 key shorter than its output only weakens it.
MIN_KEY_BYTES = 32
# The public key `make run` may use (AI_MODELS_DEV_INSECURE_SIGNING_KEY=1). Anyone can forge
# credentials with it, so it is refused everywhere else.
DEVELOPMENT_KEY = b"ai-models-development-signing-key"
_KID_LABEL = b"ai-models signing key id"
KID_RE = re.compile(r"[0-9a-f]{8}")


class SigningKeyError(ValueError):
    """A key (set) is unusable. Messages never contain key material."""


def key_id(key: bytes) -> str:
    """The key's public id: 8 hex digits of HMAC-SHA256(key, label).

    An HMAC rather than a plain hash so the id says nothing about the key
    (the usual "key check value"). Shell: ``printf %s 'ai-models signing key id' |
    openssl dgst -sha256 -hmac "$(cat KEYFILE)"`` (first 8 hex digits).
    """
    return hmac.new(key, _KID_LABEL, hashlib.sha256).hexdigest()[:8]


def check_key(key: bytes, *, allow_development: bool = False) -> bytes:
    """``key`` if it may sign, else ``SigningKeyError`` saying why."""
    if not key:
        raise SigningKeyError("the signing key is empty")
    if len(key) < MIN_KEY_BYTES:
        raise SigningKeyError(
            f"the signing key has {len(key)} bytes, at least {MIN_KEY_BYTES} are needed "
            "(create one with `openssl rand -hex 32`)"
        )
    if hmac.compare_digest(key, DEVELOPMENT_KEY) and not allow_development:
        raise SigningKeyError(
            "the signing key is the public development key; it is accepted only with "
            "AI_MODELS_DEV_INSECURE_SIGNING_KEY=1 (local runs)"
        )
    return key


@dataclass(frozen=True)
class SigningKeys:
    """``current`` signs; ``current`` and every key of ``verifying`` verify.

    Duplicates (e.g. the current key also found among the verifying files) are
    folded; two different keys with one id are refused (vanishingly unlikely,
    but verification must never be ambiguous).
    """

    current: bytes = field(repr=False)
    verifying: tuple[bytes, ...] = field(default=(), repr=False)
    allow_development: bool = False
    _by_id: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[str, bytes] = {}
        for key in (self.current, *self.verifying):
            check_key(key, allow_development=self.allow_development)
            kid = key_id(key)
            if kid in by_id and not hmac.compare_digest(by_id[kid], key):
                raise SigningKeyError(f"two different signing keys share the id {kid}; replace one")
            by_id[kid] = key
        object.__setattr__(self, "_by_id", by_id)

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    @property
    def ids(self) -> tuple[str, ...]:
        """Every id that verifies, current first."""
        return (self.current_id, *sorted(set(self._by_id) - {self.current_id}))

    def get(self, kid: str) -> bytes | None:
        """The key with this id, or None when it is not (or no longer) in the set."""
        return self._by_id.get(kid)

    def describe(self) -> str:
        """For the startup log: ids only."""
        others = [k for k in self.ids if k != self.current_id]
        return f"current {self.current_id}" + (f", also verifying {', '.join(others)}" if others else "")


def main(argv: list[str] | None = None) -> int:
    """``python -m lib.signing_keys FILE...``: print each key file's id (for rotation checks)."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m lib.signing_keys KEYFILE...", file=sys.stderr)
        return 2
    for path in paths:
        with open(path, "rb") as f:
            print(f"{key_id(f.read().strip())}  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
