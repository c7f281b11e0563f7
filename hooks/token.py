"""``GET /registry/token``: the Docker token flow in front of DMCR.

A client sends Basic auth with a scoped credential (``lib.credentials``), the
registry's ``service`` name and zero or more ``scope`` parameters. The answer
is a short-lived JWT whose ``access`` is each requested scope intersected
with what the credential's grant allows: asking for more is not an error, the
token just carries less and the registry refuses the rest (401
``insufficient_scope``). Anything that does not verify (anonymous, made up,
tampered, or signed by a key no longer in the signing key set) gets the same
401 and no token at all.

In the daily garbage-collection window (``registry_gc_window``) a request
that would be granted ``push`` gets 503 + ``Retry-After`` instead: the
registry must not take uploads while GC marks and sweeps. Pulls and deletes
go on.

Pure: a function of the request, the configuration and ``now`` (the only
hook allowed a clock). Error bodies never echo credentials or key material.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
from dataclasses import dataclass

from lib import credentials, registry_token
from lib.config import Config

CHALLENGE = {"WWW-Authenticate": 'Basic realm="ai-models"'}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Requested as "*": every action the grant allows.
ALL_ACTIONS = "*"

Answer = tuple[int, dict, dict[str, str]]


class ScopeError(ValueError):
    pass


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]


def parse_scopes(values: list[str]) -> list[Scope]:
    """Parse ``type:name:actions`` scopes; one parameter may hold several, space-separated.

    The name may itself contain ``:`` (distribution splits the same way: type
    before the first colon, actions after the last).
    """
    out: list[Scope] = []
    for value in values:
        for item in value.split():
            kind, sep, rest = item.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not (sep and sep2 and kind and name):
                raise ScopeError(f"invalid scope {item[:200]!r}: expected type:name:actions")
            out.append(Scope(kind, name, tuple(a for a in actions.split(",") if a)))
    return out


def narrow(grant: credentials.Grant, scopes: list[Scope]) -> list[registry_token.Access]:
    """Each requested repository scope intersected with the grant; empty ones dropped.

    Repeated scopes for one repository are merged; order follows first mention.
    """
    wanted: dict[str, set[str]] = {}
    catalog = False
    for s in scopes:
        if s.type == "registry" and s.name == "catalog":
            catalog = catalog or grant.catalog  # only the sweep's grant lists repositories
            continue
        if s.type != "repository":
            continue
        allowed = grant.allowed(s.name)
        take = allowed if ALL_ACTIONS in s.actions else tuple(a for a in allowed if a in s.actions)
        wanted.setdefault(s.name, set()).update(take)
    granted = [
        registry_token.Access("repository", name, tuple(sorted(actions)))
        for name, actions in wanted.items()
        if actions
    ]
    if catalog:
        granted.append(registry_token.Access("registry", "catalog", ("*",)))
    return granted


def _basic(authorization: str | None) -> tuple[str, str] | None:
    if not authorization:
        return None
    scheme, _, payload = authorization.strip().partition(" ")
    if not hmac.compare_digest(scheme.lower().encode(), b"basic"):
        return None
    try:
        decoded = base64.b64decode(payload.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep and user else None


def _refuse(message: str) -> Answer:
    return 401, {"error": message}, {**CHALLENGE, **NO_STORE}


def issue(
    *,
    authorization: str | None,
    service: str | None,
    scopes: list[str],
    config: Config,
    now: float,
) -> Answer:
    """Answer one token request: ``(status, JSON body, headers)``."""
    if not config.token_key_pem:
        return 503, {"error": "registry token service is not configured: set AI_MODELS_TOKEN_KEY_FILE"}, {}
    try:
        registry_token.load_signing_key(config.token_key_pem)
    except registry_token.TokenKeyError as e:
        return 503, {"error": f"registry token service is misconfigured: {e}"}, {}

    if config.signing_key is None:
        return 503, {"error": "registry token service is not configured: set AI_MODELS_SIGNING_KEY_FILE"}, {}

    basic = _basic(authorization)
    if basic is None:
        return _refuse("authentication required: use Basic auth with a DMCR credential")
    # Any key of the set verifies (current, previous, next); a removed key's credential is made up.
    grant = credentials.verify(config.signing_keys, *basic)
    if grant is None:
        return _refuse("invalid credential")

    if service is None or not hmac.compare_digest(service.encode(), config.token_service.encode()):
        return 400, {"error": f"unknown service: this token service serves {config.token_service!r}"}, {}
    try:
        parsed = parse_scopes(scopes)
    except ScopeError as e:
        return 400, {"error": str(e)}, {}

    access = narrow(grant, parsed)
    try:
        read_only = registry_token.read_only_remaining(getattr(config, "registry_gc_window", ""), now)
    except ValueError as e:
        return 503, {"error": f"registry token service is misconfigured: {e}"}, {}
    if read_only is not None and any("push" in a.actions for a in access):
        # Garbage collection may be running: an upload now could lose its blobs.
        return (
            503,
            {"error": f"DMCR is read-only for garbage collection; pushes resume in {read_only} s"},
            {"Retry-After": str(read_only), **NO_STORE},
        )
    ttl = registry_token.DEFAULT_TTL_SECONDS
    token = registry_token.mint(
        key_pem=config.token_key_pem,
        issuer=config.token_issuer,
        audience=config.token_service,
        subject=grant.username,
        access=access,
        now=now,
        ttl=ttl,
    )
    issued_at = dt.datetime.fromtimestamp(int(now), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"token": token, "access_token": token, "expires_in": ttl, "issued_at": issued_at}
    return 200, body, NO_STORE
