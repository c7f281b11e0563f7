"""Registry bearer tokens (Docker token auth) as pure functions.

The hook service's ``/registry/token`` endpoint mints these; tests mint them
directly (e.g. an already expired one). A distribution registry verifies a
token with the public key of a certificate in its ``auth.token.rootcertbundle``
and finds that key through the JWT header's ``kid``: the *libtrust key ID*,
i.e. base32 (no padding) of the first 240 bits of SHA-256 over the DER
SubjectPublicKeyInfo, in 12 colon-separated groups of 4 characters.

Nothing here reads a clock, the network or random state except the key and
certificate generators, which exist for installs, ``make run`` and tests.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

# Upper bound of a token's lifetime (the issue caps it at 15 minutes).
MAX_TTL_SECONDS = 900
# What the token service hands out: short, clients re-ask on expiry / 401.
DEFAULT_TTL_SECONDS = 300

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class TokenKeyError(ValueError):
    """The configured signing key is unusable (message never contains key material)."""


@dataclass(frozen=True)
class Access:
    """One ``access`` entry of a registry token."""

    type: str
    name: str
    actions: tuple[str, ...]

    def claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


@lru_cache(maxsize=8)
def load_signing_key(pem: bytes) -> PrivateKey:
    """Parse an unencrypted PEM private key (EC P-256/384/521 or RSA ≥ 2048 bits)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise TokenKeyError("the token signing key is not an unencrypted PEM private key") from e
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _EC_ALGORITHMS:
            raise TokenKeyError(f"unsupported EC curve {key.curve.name} (use P-256, P-384 or P-521)")
        return key
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise TokenKeyError(f"RSA key of {key.key_size} bits is too small (need ≥ 2048)")
        return key
    raise TokenKeyError(f"unsupported key type {type(key).__name__} (use EC or RSA)")


def algorithm(key: PrivateKey | PublicKey) -> str:
    """JWS algorithm for a key: ES256/384/512 by curve, RS256 for RSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return _EC_ALGORITHMS[key.curve.name]
    return "RS256"


def key_id(public_key: PublicKey) -> str:
    """libtrust key ID of a public key (what distribution matches ``kid`` against)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def certificate_key_ids(bundle_pem: bytes) -> list[str]:
    """Key IDs of every certificate in a PEM bundle (the registry's trusted keys)."""
    return [key_id(c.public_key()) for c in x509.load_pem_x509_certificates(bundle_pem)]  # type: ignore[arg-type]


def _jti(claims: dict[str, Any]) -> str:
    # Deterministic: the same inputs at the same second give the same token.
    # Distribution does not track jti, so uniqueness buys nothing; determinism
    # keeps the hook a pure function of (request, config, now).
    return hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).hexdigest()[:32]


def mint(
    *,
    key_pem: bytes,
    issuer: str,
    audience: str,
    subject: str,
    access: Sequence[Access],
    now: float,
    ttl: int = DEFAULT_TTL_SECONDS,
) -> str:
    """A signed registry token valid from ``now`` for ``ttl`` seconds (≤ 900)."""
    if not 0 < ttl <= MAX_TTL_SECONDS:
        raise ValueError(f"token ttl must be in 1..{MAX_TTL_SECONDS} seconds, got {ttl}")
    key = load_signing_key(key_pem)
    issued = int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,  # a string: distribution 2.8 does not accept a list here
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "access": [a.claim() for a in access],
    }
    claims["jti"] = _jti(claims)
    headers = {"typ": "JWT", "kid": key_id(key.public_key())}
    return jwt.encode(claims, key, algorithm=algorithm(key), headers=headers)


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(header, claims)`` of a token without checking it (for tests and debugging)."""
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def verify(token: str, *, cert_pem: bytes, audience: str, issuer: str, now: float) -> dict[str, Any]:
    """Check a token as the registry does (kid, signature, iss, aud, nbf/exp at ``now``).

    Returns the claims; raises ``jwt.InvalidTokenError`` (or a subclass) otherwise.
    """
    kid = jwt.get_unverified_header(token).get("kid")
    for cert in x509.load_pem_x509_certificates(cert_pem):
        pub = cert.public_key()
        if key_id(pub) != kid:  # type: ignore[arg-type]
            continue
        claims = jwt.decode(
            token,
            pub,  # type: ignore[arg-type]
            algorithms=[algorithm(pub)],  # type: ignore[arg-type]
            audience=audience,
            issuer=issuer,
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
        if not claims["nbf"] <= now < claims["exp"]:
            raise jwt.ExpiredSignatureError("token is not valid at this time")
        return claims
    raise jwt.InvalidKeyError("no certificate in the bundle matches the token's kid")


def read_only_remaining(window: str, now: float) -> int | None:
    """Seconds left in the daily UTC read-only window ``"HH:MM-HH:MM"``, or None outside it.

    The window (``AI_MODELS_REGISTRY_GC_WINDOW``) is when the garbage-collection
    CronJob runs: no push tokens are issued in it, so no upload can land
    between GC's mark and sweep. It may wrap midnight (``"23:30-00:30"``);
    empty means no window. Raises ``ValueError`` for a malformed window.
    """
    if not window.strip():
        return None
    try:
        start_s, end_s = window.strip().split("-")
        start, end = (_minute_of_day(x) for x in (start_s, end_s))
    except ValueError as e:
        raise ValueError(f"read-only window {window!r} is not HH:MM-HH:MM (UTC)") from e
    if start == end:
        raise ValueError(f"read-only window {window!r} is empty")
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    second = t.hour * 3600 + t.minute * 60 + t.second
    begin, finish = start * 60, end * 60
    if begin < finish:
        return finish - second if begin <= second < finish else None
    if second >= begin:  # wraps midnight, before 24:00
        return 86400 - second + finish
    return finish - second if second < finish else None


def _minute_of_day(hhmm: str) -> int:
    h, m = hhmm.strip().split(":")
    hour, minute = int(h), int(m)
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ValueError(hhmm)
    return hour * 60 + minute


# --- key material (installs, `make run`, tests) ------------------------------------------


def generate_signing_key(kind: str = "ec") -> bytes:
    """A fresh unencrypted PKCS#8 PEM private key: ``ec`` (P-256) or ``rsa`` (3072 bits)."""
    key: PrivateKey
    if kind == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        raise ValueError(f"unknown key kind {kind!r} (ec or rsa)")
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def self_signed_certificate(
    key_pem: bytes,
    *,
    now: dt.datetime,
    common_name: str = "ai-models registry token signer",
    days: int = 3650,
) -> bytes:
    """The certificate the registry's ``rootcertbundle`` holds for ``key_pem``.

    Distribution only takes the public key from it (the ``kid`` path does not
    check dates), so a long-lived self-signed certificate is enough.
    """
    key = load_signing_key(key_pem)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def bundle(certificates: Iterable[bytes]) -> bytes:
    """Concatenate PEM certificates (old + new during a key rotation)."""
    return b"".join(c if c.endswith(b"\n") else c + b"\n" for c in certificates)
