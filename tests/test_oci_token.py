"""Docker token flow against the real registry and tests/support/token_realm.py."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid

import pytest

from devstack.registry import TokenAuth
from lib.oci.client import RegistryClient, RetryPolicy
from lib.oci.errors import AuthError
from tests.support.token_realm import TokenRealm, libtrust_key_id
from tests.test_oci_registry import Recorder

MIB = 1 << 20
FAST = RetryPolicy(attempts=6, base_delay=0.1, max_delay=1.0, total=30.0)


@pytest.fixture
def token_setup(tmp_path, registry_factory):
    def make(**realm_kwargs):
        realm = TokenRealm(
            tmp_path / f"realm-{uuid.uuid4().hex[:6]}", users={"bob": "builder"}, **realm_kwargs
        )
        realm.start()
        started.append(realm)
        reg = registry_factory(
            token=TokenAuth(
                realm=realm.url, service=realm.service, issuer=realm.issuer, rootcertbundle=realm.cert_path
            )
        )
        return realm, reg

    started: list[TokenRealm] = []
    yield make
    for r in started:
        r.stop()


def test_libtrust_key_id_shape():
    from cryptography.hazmat.primitives.asymmetric import ec

    kid = libtrust_key_id(ec.generate_private_key(ec.SECP256R1()).public_key())
    groups = kid.split(":")
    assert len(groups) == 12 and all(
        len(g) == 4 and g.isalnum() and g.isupper() or g.isdigit() for g in groups
    )


def test_token_flow_push_pull_and_scope_cache(token_setup):
    realm, reg = token_setup()
    c = RegistryClient(
        reg.host, username="bob", password="builder", insecure=True, segment_size=MIB, retry=FAST
    )
    data = os.urandom(MIB + 77)
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    c.push_blob("tok/a", [data], digest=d, size=len(data))
    with c.open_blob("tok/a", d) as it:
        assert b"".join(it) == data
    assert c.blob_exists("tok/a", d) == len(data)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/octet-stream", "digest": d, "size": len(data)},
            "layers": [],
        }
    ).encode()
    md = c.put_manifest("tok/a", "v1", body, "application/vnd.oci.image.manifest.v1+json")
    assert c.get_manifest("tok/a", "v1").digest == md and c.list_tags("tok/a") == ["v1"]
    scopes = [tuple(r["scope"]) for r in realm.requests]
    # One token per scope, reused: pull (HEAD), pull+push (upload); cached afterwards.
    assert scopes == [("repository:tok/a:pull",), ("repository:tok/a:pull,push",)]
    assert all(r["user"] == "bob" and r["service"] == [realm.service] for r in realm.requests)


def test_token_flow_mount_asks_for_both_repositories(token_setup):
    realm, reg = token_setup()
    c = RegistryClient(reg.host, username="bob", password="builder", insecure=True, retry=FAST)
    desc = c.push_bytes("tok/src", b"shared", "text/plain")
    assert c.mount_blob("tok/dst", desc.digest, "tok/src") is True
    assert sorted(realm.requests[-1]["scope"]) == ["repository:tok/dst:pull,push", "repository:tok/src:pull"]


def test_token_realm_refuses_wrong_credentials(token_setup):
    realm, reg = token_setup()
    for user, pw in (("bob", "wrong"), (None, None)):
        c = RegistryClient(reg.host, username=user, password=pw, insecure=True, retry=FAST)
        with pytest.raises(AuthError, match="refused the credentials"):
            c.list_tags("tok/a")


def test_reauthenticates_on_401_mid_upload(token_setup):
    """Tokens die after ~3 s (exp 57 s ago + 60 s leeway) while the realm claims 300 s."""
    realm, reg = token_setup(lifetime=-57, expires_in=300)
    c = RegistryClient(
        reg.host, username="bob", password="builder", insecure=True, segment_size=MIB, retry=FAST
    )
    rec = Recorder(c)
    data = os.urandom(2 * MIB + 5)

    def source():
        for i in range(0, len(data), 256 * 1024):
            if i == MIB - 256 * 1024:
                time.sleep(4)  # inside the first PATCH: the token expires before the second one starts
            yield data[i : i + 256 * 1024]

    desc = c.push_blob("tok/slow", source(), size=len(data))
    assert desc.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    with c.open_blob("tok/slow", desc.digest) as it:
        assert b"".join(it) == data
    first_patch = next(i for i, (m, _, _) in enumerate(rec.calls) if m == "PATCH")
    assert any(s == 401 for _, s, _ in rec.calls[first_patch:])  # the registry refused the stale token
    push_tokens = [r for r in realm.requests if r["scope"] == ["repository:tok/slow:pull,push"]]
    assert len(push_tokens) >= 2


def test_expires_in_is_honoured_before_the_registry_refuses(token_setup):
    realm, reg = token_setup(lifetime=300, expires_in=1)
    c = RegistryClient(reg.host, username="bob", password="builder", insecure=True, retry=FAST)
    c.list_tags  # noqa: B018
    d = c.push_bytes("tok/e", b"one", "text/plain")
    n = len(realm.requests)
    rec = Recorder(c)
    time.sleep(1.1)
    assert c.blob_exists("tok/e", d.digest) == 3
    assert len(realm.requests) == n + 1  # refreshed because expires_in passed...
    registry_calls = [c for c, u in zip(rec.calls, rec.urls, strict=True) if not u.startswith(realm.url)]
    assert [(m, s) for m, s, _ in registry_calls] == [("HEAD", 200)]  # ...without a 401 first
