"""A real ``docker-registry`` in token mode enforces what the token service grants.

Everything through raw HTTP with ``requests``: ask the registry, follow its
Bearer challenge to the real hook app's ``/registry/token`` with a scoped
credential, then push / pull / delete. Each credential kind can do exactly
its job; made-up, tampered, anonymous and expired get nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import time
import uuid

import pytest
import requests

from lib import credentials, registry_token
from tests.support.dmcr import DmcrServer, dmcr_fixture  # noqa: F401  (the dmcr fixture)

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def repo(kind: str = "ns") -> str:
    u = uuid.uuid4().hex[:12]
    if kind == "cluster":
        return f"ai-models/catalog/cluster/m-{u}/{u}"
    return f"ai-models/catalog/namespaced/{kind}/m-{u}/{u}"


class Client:
    """A minimal Docker-token-flow client: challenge → token → retry with Bearer."""

    def __init__(self, dmcr: DmcrServer, cred: tuple[str, str] | None):
        self.dmcr, self.cred = dmcr, cred
        self.tokens: list[str] = []

    def _token(self, challenge: str) -> str | None:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        assert params["realm"] == self.dmcr.token_url and params["service"] == "dmcr"
        r = requests.get(
            params["realm"],
            params={"service": params["service"], "scope": params.get("scope", "")},
            auth=self.cred,
            timeout=10,
        )
        if r.status_code != 200:
            return None
        self.tokens.append(r.json()["token"])
        return r.json()["token"]

    def request(self, method: str, path: str, **kw) -> requests.Response:
        url = path if path.startswith("http") else f"{self.dmcr.url}{path}"
        r = requests.request(method, url, timeout=10, **kw)
        if r.status_code == 401 and r.headers.get("WWW-Authenticate", "").startswith("Bearer "):
            tok = self._token(r.headers["WWW-Authenticate"])
            if tok:
                headers = {**kw.pop("headers", {}), "Authorization": f"Bearer {tok}"}
                r = requests.request(method, url, timeout=10, headers=headers, **kw)
        return r

    # operations
    def push_blob(self, name: str, data: bytes) -> tuple[int, str]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = self.request("POST", f"/v2/{name}/blobs/uploads/")
        if r.status_code != 202:
            return r.status_code, digest
        loc = r.headers["Location"]
        sep = "&" if "?" in loc else "?"
        r = self.request("PUT", f"{loc}{sep}digest={digest}", data=data,
                         headers={"Content-Type": "application/octet-stream"})
        return r.status_code, digest

    def get_blob(self, name: str, digest: str) -> requests.Response:
        return self.request("GET", f"/v2/{name}/blobs/{digest}")

    def put_manifest(self, name: str, ref: str, body: bytes) -> requests.Response:
        return self.request("PUT", f"/v2/{name}/manifests/{ref}", data=body, headers={"Content-Type": MANIFEST})

    def get_manifest(self, name: str, ref: str) -> requests.Response:
        return self.request("GET", f"/v2/{name}/manifests/{ref}", headers={"Accept": MANIFEST})

    def delete_manifest(self, name: str, digest: str) -> requests.Response:
        return self.request("DELETE", f"/v2/{name}/manifests/{digest}")


def publish_artifact(dmcr: DmcrServer, name: str, tag: str = "v1") -> tuple[str, str]:
    """Push a small artifact with the repo's publish credential; ``(blob digest, manifest digest)``."""
    c = Client(dmcr, dmcr.publish_credential(name))
    config = b"{}"
    status, cfg_digest = c.push_blob(name, config)
    assert status == 201
    layer = uuid.uuid4().bytes * 64
    status, layer_digest = c.push_blob(name, layer)
    assert status == 201
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": cfg_digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": layer_digest,
                    "size": len(layer)}],
    }).encode()
    r = c.put_manifest(name, tag, manifest)
    assert r.status_code == 201, r.text
    return layer_digest, r.headers["Docker-Content-Digest"]


# --- the registry really is in token mode against our service ----------------------------


def test_registry_challenges_with_our_realm(dmcr):
    r = requests.get(f"{dmcr.url}/v2/", timeout=5)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="{dmcr.token_url}",service="dmcr"'


def test_any_valid_credential_passes_the_base_check(dmcr):
    """``/v2/`` needs a valid token, not any access: an empty-access token is enough."""
    c = Client(dmcr, dmcr.pull_credential([repo()]))
    assert c.request("GET", "/v2/").status_code == 200
    assert registry_token.decode_unverified(c.tokens[-1])[1]["access"] == []


# --- publish credential ------------------------------------------------------------------


def test_publish_credential_pushes_and_pulls_its_repository_only(dmcr):
    mine, theirs = repo(), repo()
    blob, _ = publish_artifact(dmcr, theirs)
    c = Client(dmcr, dmcr.publish_credential(mine))
    status, digest = c.push_blob(mine, b"weights")
    assert status == 201
    assert c.get_blob(mine, digest).content == b"weights"
    # someone else's repository: no push, no pull
    assert c.push_blob(theirs, b"evil")[0] == 401
    r = c.get_blob(theirs, blob)
    assert r.status_code == 401 and "insufficient_scope" in r.headers["WWW-Authenticate"]
    # and no delete even in its own repository
    _, manifest = publish_artifact(dmcr, mine, tag="v2")
    assert c.delete_manifest(mine, manifest).status_code == 401
    assert c.get_manifest(mine, manifest).status_code == 200


# --- cleanup credential ------------------------------------------------------------------


def test_cleanup_credential_deletes_in_its_repository_only(dmcr):
    mine, theirs = repo(), repo()
    _, mine_digest = publish_artifact(dmcr, mine)
    _, their_digest = publish_artifact(dmcr, theirs)
    c = Client(dmcr, dmcr.cleanup_credential(mine))
    assert c.delete_manifest(theirs, their_digest).status_code == 401
    assert c.push_blob(mine, b"no pushing")[0] == 401
    assert c.delete_manifest(mine, mine_digest).status_code == 202
    assert c.get_manifest(mine, mine_digest).status_code == 404
    owner = Client(dmcr, dmcr.publish_credential(theirs))
    assert owner.get_manifest(theirs, their_digest).status_code == 200


# --- workload pull credential ------------------------------------------------------------


def test_pull_credential_pulls_exactly_its_models(dmcr):
    own_ns, cluster = repo("team-a"), repo("cluster")
    other_ns, other_cluster = repo("team-b"), repo("cluster")
    blobs = {name: publish_artifact(dmcr, name) for name in (own_ns, cluster, other_ns, other_cluster)}
    c = Client(dmcr, dmcr.pull_credential([own_ns, cluster]))
    for name in (own_ns, cluster):
        layer, manifest = blobs[name]
        assert c.get_manifest(name, manifest).status_code == 200
        assert c.get_blob(name, layer).status_code == 200
    for name in (other_ns, other_cluster):
        layer, manifest = blobs[name]
        assert c.get_manifest(name, manifest).status_code == 401
        assert c.get_blob(name, layer).status_code == 401
    assert c.push_blob(own_ns, b"no")[0] == 401
    assert c.delete_manifest(own_ns, blobs[own_ns][1]).status_code == 401


# --- nothing for the rest ----------------------------------------------------------------


def _nothing(dmcr: DmcrServer, cred: tuple[str, str] | None, name: str, layer: str) -> None:
    c = Client(dmcr, cred)
    assert c.get_blob(name, layer).status_code == 401
    assert c.push_blob(name, b"x")[0] == 401
    assert c.request("GET", "/v2/").status_code == 401
    assert c.tokens == []  # the token service never handed out a token
    r = dmcr.token(*(cred or (None, None)), [f"repository:{name}:pull"])
    assert r.status_code == 401 and "token" not in r.json()


def test_anonymous_gets_nothing(dmcr):
    name = repo()
    layer, _ = publish_artifact(dmcr, name)
    _nothing(dmcr, None, name, layer)


def test_made_up_credential_gets_nothing(dmcr):
    name = repo()
    layer, _ = publish_artifact(dmcr, name)
    _nothing(dmcr, (f"push;{name}", "f" * 64), name, layer)
    _nothing(dmcr, ("admin", "admin"), name, layer)


def test_tampered_credential_gets_nothing(dmcr):
    """Keep a real password, widen the username: the HMAC no longer matches."""
    mine, theirs = repo(), repo()
    layer, _ = publish_artifact(dmcr, theirs)
    _, pw = dmcr.pull_credential([mine])
    _nothing(dmcr, (credentials.Grant("pull", tuple(sorted([mine, theirs]))).username, pw), theirs, layer)
    _nothing(dmcr, (f"push;{theirs}", pw), theirs, layer)


def test_credential_of_another_installation_gets_nothing(dmcr):
    name = repo()
    layer, _ = publish_artifact(dmcr, name)
    _nothing(dmcr, credentials.publish_credential(b"another-signing-key" * 2, name), name, layer)


def test_expired_token_is_refused_by_the_registry(dmcr):
    name = repo()
    layer, _ = publish_artifact(dmcr, name)
    access = [registry_token.Access("repository", name, ("pull",))]
    url = f"{dmcr.url}/v2/{name}/blobs/{layer}"
    fresh = dmcr.mint("pull;" + name, access, now=time.time())
    assert requests.get(url, headers={"Authorization": f"Bearer {fresh}"}, timeout=5).status_code == 200
    # distribution allows 60 s of clock skew; this one ended an hour ago
    expired = dmcr.mint("pull;" + name, access, now=time.time() - 3600, ttl=300)
    r = requests.get(url, headers={"Authorization": f"Bearer {expired}"}, timeout=5)
    assert r.status_code == 401 and "invalid_token" in r.headers["WWW-Authenticate"]


def test_token_signed_by_an_untrusted_key_is_refused(dmcr, tmp_path):
    """Same claims, another key (so another kid): the registry has no such key."""
    name = repo()
    layer, _ = publish_artifact(dmcr, name)
    rogue = registry_token.mint(
        key_pem=registry_token.generate_signing_key(), issuer="ai-models", audience="dmcr",
        subject="x", access=[registry_token.Access("repository", name, ("pull",))], now=time.time(),
    )
    r = requests.get(f"{dmcr.url}/v2/{name}/blobs/{layer}", headers={"Authorization": f"Bearer {rogue}"}, timeout=5)
    assert r.status_code == 401


def test_over_asking_gets_a_narrowed_token(dmcr):
    mine, theirs = repo(), repo()
    publish_artifact(dmcr, mine)
    user, pw = dmcr.publish_credential(mine)
    r = dmcr.token(user, pw, [f"repository:{mine}:pull,push,delete", f"repository:{theirs}:pull,push"])
    assert r.status_code == 200
    claims = registry_token.decode_unverified(r.json()["token"])[1]
    assert claims["access"] == [{"type": "repository", "name": mine, "actions": ["pull", "push"]}]
    assert r.json()["expires_in"] <= 900
    # the narrowed token still works for what it carries, and the registry refuses the rest
    tok = {"Authorization": f"Bearer {r.json()['token']}"}
    assert requests.get(f"{dmcr.url}/v2/{mine}/tags/list", headers=tok, timeout=5).status_code == 200
    assert requests.get(f"{dmcr.url}/v2/{theirs}/tags/list", headers=tok, timeout=5).status_code == 401


def test_rsa_signed_tokens_work_too(tmp_path):
    with DmcrServer(tmp_path, key_pem=registry_token.generate_signing_key("rsa")) as d:
        name = repo()
        layer, manifest = publish_artifact(d, name)
        c = Client(d, d.pull_credential([name]))
        assert c.get_manifest(name, manifest).status_code == 200
        assert registry_token.decode_unverified(c.tokens[-1])[0]["alg"] == "RS256"


def test_rotation_bundle_trusts_old_and_new_keys(tmp_path):
    """During a key rotation the bundle holds both certificates; tokens of either key work."""
    old_key = registry_token.generate_signing_key()
    old_cert = registry_token.self_signed_certificate(old_key, now=dt.datetime.now(dt.UTC))
    with DmcrServer(tmp_path) as d:  # new key in the hook service
        d.registry.token.rootcertbundle.write_bytes(registry_token.bundle([d.cert_pem, old_cert]))
        d.registry.restart()
        name = repo()
        layer, _ = publish_artifact(d, name)  # via the service: new key
        access = [registry_token.Access("repository", name, ("pull",))]
        old = registry_token.mint(
            key_pem=old_key, issuer="ai-models", audience="dmcr", subject="s", access=access, now=time.time()
        )
        url = f"{d.url}/v2/{name}/blobs/{layer}"
        assert requests.get(url, headers={"Authorization": f"Bearer {old}"}, timeout=5).status_code == 200


@pytest.mark.parametrize("claim", ["aud", "iss"])
def test_token_for_another_service_or_issuer_is_refused(dmcr, claim):
    name = repo()
    layer, _ = publish_artifact(dmcr, name)
    kw = {"issuer": "ai-models", "audience": "dmcr"}
    kw["audience" if claim == "aud" else "issuer"] = "someone-else"
    assert dmcr.config.token_key_pem
    bad = registry_token.mint(
        key_pem=dmcr.config.token_key_pem, subject="s",
        access=[registry_token.Access("repository", name, ("pull",))], now=time.time(), **kw,
    )
    r = requests.get(f"{dmcr.url}/v2/{name}/blobs/{layer}", headers={"Authorization": f"Bearer {bad}"}, timeout=5)
    assert r.status_code == 401


def test_token_with_edited_claims_is_refused(dmcr):
    """Widen a real token's access without re-signing it: the signature no longer matches."""
    mine, theirs = repo(), repo()
    layer, _ = publish_artifact(dmcr, theirs)
    r = dmcr.token(*dmcr.pull_credential([mine]), [f"repository:{mine}:pull"])
    header, payload, sig = r.json()["token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["access"] = [{"type": "repository", "name": theirs, "actions": ["pull"]}]
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    forged = f"{header}.{forged_payload}.{sig}"
    r = requests.get(f"{dmcr.url}/v2/{theirs}/blobs/{layer}", headers={"Authorization": f"Bearer {forged}"}, timeout=5)
    assert r.status_code == 401
