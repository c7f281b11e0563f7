"""Scoped DMCR credentials and upload tokens, derived statelessly from the signing keys.

A credential is ``username:password``. The username *is* the grant
(``<action-set>;<repository>[;<repository>...]``); the password is
``<kid>.<mac>``: the id of the signing key it was made with and
HMAC-SHA256(key, purpose, kid, username). The token service (``hooks.token``)
looks the key up by ``kid`` in the configured set (``lib.signing_keys``) and
recomputes the MAC, so no credential is stored anywhere, a tampered username
(a wider grant) or kid no longer matches, and a credential of a key that was
removed from the set is refused like a made-up one.

Derivation is deterministic (the same grant and key set give the same
password), which keeps the hooks pure functions of their request.

Grants:
- ``push``: push and pull one model's repository (its publish Job), plus
  pull on the ``from=<repository>`` items: repositories it may mount blobs
  from instead of fetching them again. Only a ClusterModel's repository or,
  for a Model, one of its own namespace ever verifies there (``may_mount``):
  a ClusterModel is readable by everyone, a namespace's Models by the
  namespace, so tenancy holds even if a hook named a wrong candidate;
- ``delete``: delete in one repository (its cleanup Job), plus pull to read it;
- ``pull``: pull of exactly the listed repositories (a workload's models);
- ``sweep``: list the registry's repositories and pull/delete in every one
  under ``ai-models/catalog/`` (the module's sweep of repositories whose
  Model or ClusterModel is gone, ``jobs sweep``). Its only holder is the
  sweep CronJob of the module namespace, which derives it itself from the
  mounted signing keys: no tenant ever sees it.
"""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass

from lib.api.naming import REPOSITORY_ROOT, derive_secret
from lib.signing_keys import KID_RE, SigningKeys

PURPOSE = "dmcr-credential"
UPLOAD_PURPOSE = "upload"
ACTIONS = {
    "push": ("pull", "push"),
    "delete": ("pull", "delete"),
    "pull": ("pull",),
    "sweep": ("pull", "delete"),
}
SWEEP_PREFIX = REPOSITORY_ROOT + "/"
MOUNT_FROM = "from="  # a push grant's item naming a repository it may only pull (mount) from
CLUSTER_PREFIX = f"{REPOSITORY_ROOT}/cluster/"
NAMESPACED_PREFIX = f"{REPOSITORY_ROOT}/namespaced/"
# Compared against when the presented kid is unknown, so every refusal takes the same path.
_NO_KEY = b"\0" * 32

Keys = SigningKeys | bytes  # bytes: a set of that one key (tests, tools)


def _keys(keys: Keys) -> SigningKeys:
    return keys if isinstance(keys, SigningKeys) else SigningKeys(keys)


def _mac(key: bytes, purpose: str, kid: str, identity: str) -> str:
    return derive_secret(key, purpose, f"{kid}\x00{identity}")


def sign(keys: Keys, purpose: str, identity: str) -> str:
    """``<kid>.<mac>`` of (purpose, identity) under the current key."""
    ks = _keys(keys)
    kid = ks.current_id
    return f"{kid}.{_mac(ks.current, purpose, kid, identity)}"


def check(keys: Keys, purpose: str, identity: str, presented: str) -> bool:
    """Whether ``presented`` was signed for (purpose, identity) by a key still in the set."""
    ks = _keys(keys)
    kid, _, _ = presented.partition(".")
    key = ks.get(kid) if KID_RE.fullmatch(kid) else None
    expected = f"{kid}.{_mac(key or _NO_KEY, purpose, kid, identity)}"
    same = hmac.compare_digest(expected.encode(), presented.encode())
    return same and key is not None


def key_id_of(presented: str) -> str:
    """The kid a credential password or upload token names (for operators' checks; not verified)."""
    kid, sep, _ = presented.partition(".")
    return kid if sep and KID_RE.fullmatch(kid) else ""


def may_mount(own: str, other: str) -> bool:
    """Whether the publish of ``own`` may read ``other``: any ClusterModel's repository, or a
    Model repository of ``own``'s namespace (a ClusterModel's publish: ClusterModels only)."""
    if other == own or ".." in other.split("/"):
        return False
    if other.startswith(CLUSTER_PREFIX):
        return True
    parts = own.split("/")
    if not own.startswith(NAMESPACED_PREFIX) or len(parts) < 5:
        return False
    return other.startswith(f"{NAMESPACED_PREFIX}{parts[3]}/")


@dataclass(frozen=True)
class Grant:
    kind: str  # push | delete | pull | sweep
    repositories: tuple[str, ...]
    mount_from: tuple[str, ...] = ()  # push only: pull on these (blob mounts), nothing else

    @property
    def username(self) -> str:
        return ";".join((self.kind, *self.repositories, *(MOUNT_FROM + r for r in self.mount_from)))

    def allowed(self, repository: str) -> tuple[str, ...]:
        """Actions this grant allows on ``repository`` (empty when none)."""
        if self.kind == "sweep":
            under = repository.startswith(SWEEP_PREFIX) and ".." not in repository.split("/")
            return ACTIONS["sweep"] if under and self.repositories == (SWEEP_PREFIX,) else ()
        if repository in self.repositories:
            return ACTIONS[self.kind]
        return ("pull",) if repository in self.mount_from else ()

    @property
    def catalog(self) -> bool:
        """May list the registry's repositories (``registry:catalog:*``)."""
        return self.kind == "sweep" and self.repositories == (SWEEP_PREFIX,)


def credential(keys: Keys, grant: Grant) -> tuple[str, str]:
    """``(username, password)`` for a grant, signed by the current key."""
    return grant.username, sign(keys, PURPOSE, grant.username)


def publish_credential(keys: Keys, repository: str, mount_from: tuple[str, ...] = ()) -> tuple[str, str]:
    """Push + pull on ``repository``; pull on ``mount_from`` (the hook's mount candidates)."""
    return credential(keys, Grant("push", (repository,), mount_from))


def cleanup_credential(keys: Keys, repository: str) -> tuple[str, str]:
    return credential(keys, Grant("delete", (repository,)))


def sweep_credential(keys: Keys) -> tuple[str, str]:
    return credential(keys, Grant("sweep", (SWEEP_PREFIX,)))


def pull_credential(keys: Keys, repositories: list[str]) -> tuple[str, str]:
    return credential(keys, Grant("pull", tuple(sorted(set(repositories)))))


def verify(keys: Keys, username: str, password: str) -> Grant | None:
    """The grant a credential carries, or None when it is made up, tampered or of a removed key."""
    if not check(keys, PURPOSE, username, password):
        return None
    kind, _, rest = username.partition(";")
    items = [r for r in rest.split(";") if r]
    repos = tuple(r for r in items if not r.startswith(MOUNT_FROM))
    mount_from = tuple(r[len(MOUNT_FROM) :] for r in items if r.startswith(MOUNT_FROM))
    if kind not in ACTIONS or not repos:
        return None
    if mount_from and (kind != "push" or len(repos) != 1):
        return None
    if not all(may_mount(repos[0], r) for r in mount_from):
        return None  # signed or not: never pull on another namespace's Model
    return Grant(kind, repos, mount_from)


def upload_token(keys: Keys, uid: str, session: int, observed: str | None = None) -> str:
    """The bearer token of one upload session.

    A running upload server read its token once, at start. So the token an
    observed Secret already carries is kept while it still verifies (its key
    is current or previous): a rotation does not change an open session's
    token. A new session, or one whose key was removed, gets a token of the
    current key.
    """
    ks, identity = _keys(keys), f"{uid}:{session}"
    if observed and (
        check(ks, UPLOAD_PURPOSE, identity, observed) or _legacy_upload_token(ks, identity, observed)
    ):
        return observed
    return sign(ks, UPLOAD_PURPOSE, identity)


def _legacy_upload_token(keys: SigningKeys, identity: str, observed: str) -> bool:
    """A token of the format before key ids (a bare MAC) under a key of the set.

    Kept so that upgrading the hook service does not break upload sessions
    that are open; such a token, too, is replaced once its key is removed.
    """
    found = False
    for kid in keys.ids:
        key = keys.get(kid) or b""
        found |= hmac.compare_digest(derive_secret(key, UPLOAD_PURPOSE, identity).encode(), observed.encode())
    return found


def dockerconfigjson(registry: str, username: str, password: str) -> str:
    """The ``.dockerconfigjson`` value of a ``kubernetes.io/dockerconfigjson`` Secret."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps(
        {"auths": {registry: {"username": username, "password": password, "auth": auth}}},
        sort_keys=True,
        separators=(",", ":"),
    )
