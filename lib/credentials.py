"""Scoped DMCR credentials, derived statelessly from the signing key.

A credential is ``username:password`` where the username *is* the grant
(``<action-set>;<repository>[;<repository>...]``) and the password is an HMAC
of the username under ``AI_MODELS_SIGNING_KEY_FILE``. The token service
(``hooks.token``) recomputes the HMAC, so no credential is stored anywhere
and a tampered username (a wider grant) no longer matches its password.

Grants:
- ``push``: push and pull one model's repository (its publish Job);
- ``delete``: delete in one repository (its cleanup Job), plus pull to read it;
- ``pull``: pull of exactly the listed repositories (a workload's models).
"""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass

from lib.api.naming import derive_secret

PURPOSE = "dmcr-credential"
ACTIONS = {
    "push": ("pull", "push"),
    "delete": ("pull", "delete"),
    "pull": ("pull",),
}


@dataclass(frozen=True)
class Grant:
    kind: str  # push | delete | pull
    repositories: tuple[str, ...]

    @property
    def username(self) -> str:
        return ";".join((self.kind, *self.repositories))

    def allowed(self, repository: str) -> tuple[str, ...]:
        """Actions this grant allows on ``repository`` (empty when none)."""
        return ACTIONS[self.kind] if repository in self.repositories else ()


def credential(signing_key: bytes, grant: Grant) -> tuple[str, str]:
    """``(username, password)`` for a grant."""
    return grant.username, derive_secret(signing_key, PURPOSE, grant.username)


def publish_credential(signing_key: bytes, repository: str) -> tuple[str, str]:
    return credential(signing_key, Grant("push", (repository,)))


def cleanup_credential(signing_key: bytes, repository: str) -> tuple[str, str]:
    return credential(signing_key, Grant("delete", (repository,)))


def pull_credential(signing_key: bytes, repositories: list[str]) -> tuple[str, str]:
    return credential(signing_key, Grant("pull", tuple(sorted(set(repositories)))))


def verify(signing_key: bytes, username: str, password: str) -> Grant | None:
    """The grant a credential carries, or None when it is made up or tampered."""
    expected = derive_secret(signing_key, PURPOSE, username)
    if not hmac.compare_digest(expected.encode(), password.encode()):
        return None
    kind, _, rest = username.partition(";")
    repos = tuple(r for r in rest.split(";") if r)
    if kind not in ACTIONS or not repos:
        return None
    return Grant(kind, repos)


def dockerconfigjson(registry: str, username: str, password: str) -> str:
    """The ``.dockerconfigjson`` value of a ``kubernetes.io/dockerconfigjson`` Secret."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps(
        {"auths": {registry: {"username": username, "password": password, "auth": auth}}},
        sort_keys=True,
        separators=(",", ":"),
    )
