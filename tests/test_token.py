"""The registry token service as a pure function and through the Flask route.

The real-registry behaviour (that distribution accepts and enforces these
tokens) is in ``test_dmcr.py``; here: the token's shape, narrowing, refusals,
configuration errors and the key helpers.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hooks import token
from hooks.app import create_app
from lib import credentials, registry_token
from lib.config import Config

NOW = 1_800_000_000.0
REPO = "ai-models/catalog/namespaced/team-a/llama/uid-1"
OTHER = "ai-models/catalog/namespaced/team-b/llama/uid-2"
CLUSTER = "ai-models/catalog/cluster/shared/uid-3"


@pytest.fixture(scope="module")
def key_pem() -> bytes:
    return registry_token.generate_signing_key("ec")


@pytest.fixture(scope="module")
def cert_pem(key_pem: bytes) -> bytes:
    return registry_token.self_signed_certificate(key_pem, now=dt.datetime.now(dt.UTC))


@pytest.fixture(scope="module")
def config(key_pem: bytes) -> Config:
    return Config(signing_key=b"unit-signing-key-0123456789abcdef", token_key_pem=key_pem)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def ask(config: Config, cred: tuple[str, str] | None, scopes: list[str], *, service="dmcr", now=NOW):
    return token.issue(
        authorization=basic(*cred) if cred else None, service=service, scopes=scopes, config=config, now=now
    )


def access_of(body: dict) -> list[dict]:
    return registry_token.decode_unverified(body["token"])[1]["access"]


# --- a good request ---------------------------------------------------------------------


def test_publish_credential_gets_a_verifiable_token(config, cert_pem):
    cred = credentials.publish_credential(config.signing_key, REPO)
    status, body, headers = ask(config, cred, [f"repository:{REPO}:pull,push"])
    assert status == 200, body
    assert body["token"] == body["access_token"]
    assert 0 < body["expires_in"] <= 900
    assert body["issued_at"] == dt.datetime.fromtimestamp(NOW, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert headers["Cache-Control"] == "no-store"

    claims = registry_token.verify(body["token"], cert_pem=cert_pem, audience="dmcr", issuer="ai-models", now=NOW)
    assert claims["sub"] == cred[0]
    assert claims["iat"] == claims["nbf"] == int(NOW)
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert claims["access"] == [{"type": "repository", "name": REPO, "actions": ["pull", "push"]}]
    assert claims["jti"]


def test_header_carries_libtrust_kid_and_algorithm(config, key_pem):
    cred = credentials.publish_credential(config.signing_key, REPO)
    _, body, _ = ask(config, cred, [])
    header, _ = registry_token.decode_unverified(body["token"])
    pub = serialization.load_pem_private_key(key_pem, None).public_key()
    assert header["alg"] == "ES256"
    assert header["kid"] == registry_token.key_id(pub)


def test_key_id_is_libtrust_format():
    """Independent recomputation: base32 of SHA-256(DER SPKI)[:30], 12 groups of 4."""
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    kid = registry_token.key_id(pub)
    groups = kid.split(":")
    assert len(groups) == 12 and all(len(g) == 4 for g in groups)
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = base64.b32decode("".join(groups))
    assert raw == hashlib.sha256(der).digest()[:30]
    # different keys, different ids
    assert kid != registry_token.key_id(ec.generate_private_key(ec.SECP256R1()).public_key())


def test_certificate_key_ids_lists_every_certificate_in_a_bundle(key_pem, cert_pem):
    other = registry_token.generate_signing_key("ec")
    other_cert = registry_token.self_signed_certificate(other, now=dt.datetime.now(dt.UTC))
    ids = registry_token.certificate_key_ids(registry_token.bundle([cert_pem, other_cert]))
    expected = [
        registry_token.key_id(serialization.load_pem_private_key(k, None).public_key())
        for k in (key_pem, other)
    ]
    assert ids == expected


def test_rsa_key_signs_rs256():
    key = registry_token.generate_signing_key("rsa")
    cfg = Config(signing_key=b"k" * 32, token_key_pem=key)
    cert = registry_token.self_signed_certificate(key, now=dt.datetime.now(dt.UTC))
    status, body, _ = ask(cfg, credentials.pull_credential(b"k" * 32, [REPO]), [f"repository:{REPO}:pull"])
    assert status == 200
    assert registry_token.decode_unverified(body["token"])[0]["alg"] == "RS256"
    claims = registry_token.verify(body["token"], cert_pem=cert, audience="dmcr", issuer="ai-models", now=NOW)
    assert claims["access"][0]["actions"] == ["pull"]


def test_issuer_and_service_come_from_config(key_pem):
    cfg = Config(signing_key=b"k" * 32, token_key_pem=key_pem, token_service="reg-x", token_issuer="iss-y")
    cred = credentials.pull_credential(b"k" * 32, [REPO])
    assert ask(cfg, cred, [], service="dmcr")[0] == 400
    status, body, _ = ask(cfg, cred, [], service="reg-x")
    claims = registry_token.decode_unverified(body["token"])[1]
    assert status == 200 and claims["aud"] == "reg-x" and claims["iss"] == "iss-y"


def test_token_is_deterministic_in_inputs_and_now(config):
    cred = credentials.publish_credential(config.signing_key, REPO)
    a = ask(config, cred, [f"repository:{REPO}:pull"])[1]["token"]
    b = ask(config, cred, [f"repository:{REPO}:pull"])[1]["token"]
    later = ask(config, cred, [f"repository:{REPO}:pull"], now=NOW + 1)[1]["token"]
    # ECDSA signatures are randomised, so compare the claims, jti included
    claims = [registry_token.decode_unverified(t)[1] for t in (a, b, later)]
    assert claims[0] == claims[1]
    assert claims[0]["jti"] != claims[2]["jti"]


# --- narrowing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grant", "scopes", "expected"),
    [
        # publish: push+pull own repo only
        ("push", [f"repository:{REPO}:pull,push,delete"], [(REPO, ["pull", "push"])]),
        ("push", [f"repository:{OTHER}:pull,push"], []),
        ("push", [f"repository:{REPO}:*"], [(REPO, ["pull", "push"])]),
        # cleanup: delete (and read) in own repo only
        ("delete", [f"repository:{REPO}:delete"], [(REPO, ["delete"])]),
        ("delete", [f"repository:{REPO}:push"], []),
        ("delete", [f"repository:{OTHER}:delete"], []),
        # workload: pull of exactly the listed repositories
        ("pull", [f"repository:{REPO}:pull,push", f"repository:{CLUSTER}:pull"], [(REPO, ["pull"]), (CLUSTER, ["pull"])]),
        ("pull", [f"repository:{OTHER}:pull"], []),
        # several scopes in one parameter, repeated repository merged, other types dropped
        ("pull", [f"repository:{REPO}:pull repository:{OTHER}:pull"], [(REPO, ["pull"])]),
        ("push", [f"repository:{REPO}:pull", f"repository:{REPO}:push"], [(REPO, ["pull", "push"])]),
        ("push", ["registry:catalog:*"], []),
        ("push", [], []),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_scope_is_intersected_with_the_grant(config, grant, scopes, expected):
    repos = [REPO, CLUSTER] if grant == "pull" else [REPO]
    cred = credentials.credential(config.signing_key, credentials.Grant(grant, tuple(repos)))
    status, body, _ = ask(config, cred, scopes)
    assert status == 200, body
    assert access_of(body) == [{"type": "repository", "name": n, "actions": a} for n, a in expected]


def test_repository_prefix_is_not_a_grant(config):
    """Exact names only: a grant on a repo says nothing about a longer or shorter name."""
    cred = credentials.publish_credential(config.signing_key, REPO)
    for name in (REPO + "/x", REPO.rsplit("/", 1)[0], REPO.upper(), REPO + "-2"):
        _, body, _ = ask(config, cred, [f"repository:{name}:pull,push"])
        assert access_of(body) == [], name


# --- refusals ---------------------------------------------------------------------------


def _assert_refused(status, body, headers, password: str | None = None):
    assert status == 401
    assert "token" not in body and "access_token" not in body
    assert headers["WWW-Authenticate"] == 'Basic realm="ai-models"'
    assert isinstance(body["error"], str) and body["error"]
    if password:
        assert password not in body["error"]


def test_anonymous_gets_401(config):
    _assert_refused(*ask(config, None, [f"repository:{REPO}:pull"]))


def test_made_up_credential_gets_401(config):
    _assert_refused(*ask(config, ("push;" + REPO, "0" * 64), [f"repository:{REPO}:pull"]), password="0" * 64)


def test_tampered_username_gets_401(config):
    """Widening the grant in the username breaks the HMAC that is the password."""
    user, pw = credentials.pull_credential(config.signing_key, [REPO])
    for wider in (f"pull;{REPO};{OTHER}", f"push;{REPO}", f"delete;{REPO}", f"pull;{OTHER}"):
        _assert_refused(*ask(config, (wider, pw), [f"repository:{OTHER}:pull"]), password=pw)


def test_credential_from_another_signing_key_gets_401(config):
    cred = credentials.publish_credential(b"some-other-key" * 3, REPO)
    _assert_refused(*ask(config, cred, [f"repository:{REPO}:pull"]), password=cred[1])


@pytest.mark.parametrize(
    "authorization",
    ["Bearer abc", "Basic !!!not-base64", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic ", ""],
)
def test_malformed_authorization_gets_401(config, authorization):
    _assert_refused(*token.issue(authorization=authorization, service="dmcr", scopes=[], config=config, now=NOW))


def test_wrong_or_missing_service_is_400(config):
    cred = credentials.publish_credential(config.signing_key, REPO)
    for service in ("other", None, ""):
        status, body, _ = ask(config, cred, [], service=service)
        assert status == 400 and "service" in body["error"] and "token" not in body


@pytest.mark.parametrize("scope", ["repository", f"repository:{REPO}", ":x:pull", f"repository::{REPO}"])
def test_malformed_scope_is_400(config, scope):
    cred = credentials.publish_credential(config.signing_key, REPO)
    status, body, _ = ask(config, cred, [scope])
    assert status == 400 and "scope" in body["error"]


def test_missing_token_key_is_503(config):
    cfg = Config(signing_key=config.signing_key, token_key_pem=None)
    status, body, _ = ask(cfg, credentials.publish_credential(cfg.signing_key, REPO), [])
    assert status == 503 and "AI_MODELS_TOKEN_KEY_FILE" in body["error"]


@pytest.mark.parametrize("kind", ["garbage", "small-rsa", "k1-curve"])
def test_unusable_token_key_is_503_without_key_material(config, kind):
    if kind == "garbage":
        pem = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXZhbHVl\n-----END PRIVATE KEY-----\n"
    else:
        key = (
            rsa.generate_private_key(public_exponent=65537, key_size=1024)
            if kind == "small-rsa"
            else ec.generate_private_key(ec.SECP256K1())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    cfg = Config(signing_key=config.signing_key, token_key_pem=pem)
    status, body, _ = ask(cfg, credentials.publish_credential(cfg.signing_key, REPO), [])
    assert status == 503 and "token" not in body
    assert "PRIVATE" not in body["error"] and "c2VjcmV0" not in body["error"]


def test_mint_caps_ttl_at_fifteen_minutes(key_pem):
    with pytest.raises(ValueError, match="ttl"):
        registry_token.mint(
            key_pem=key_pem, issuer="i", audience="a", subject="s", access=[], now=NOW, ttl=901
        )


def test_verify_refuses_expired_and_foreign_tokens(key_pem, cert_pem):
    t = registry_token.mint(key_pem=key_pem, issuer="ai-models", audience="dmcr", subject="s", access=[], now=NOW)
    with pytest.raises(jwt.ExpiredSignatureError):
        registry_token.verify(t, cert_pem=cert_pem, audience="dmcr", issuer="ai-models", now=NOW + 301)
    other = registry_token.self_signed_certificate(
        registry_token.generate_signing_key(), now=dt.datetime.now(dt.UTC)
    )
    with pytest.raises(jwt.InvalidKeyError):
        registry_token.verify(t, cert_pem=other, audience="dmcr", issuer="ai-models", now=NOW)


# --- through the Flask route ------------------------------------------------------------


def test_route_passes_repeated_scopes_and_auth(config):
    client = create_app(config).test_client()
    cred = credentials.pull_credential(config.signing_key, [REPO, CLUSTER])
    r = client.get(
        "/registry/token",
        query_string=[("service", "dmcr"), ("scope", f"repository:{REPO}:pull"), ("scope", f"repository:{CLUSTER}:pull")],
        headers={"Authorization": basic(*cred)},
    )
    assert r.status_code == 200
    assert [a["name"] for a in access_of(r.get_json())] == [REPO, CLUSTER]
    r = client.get("/registry/token", query_string={"service": "dmcr"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic ")


# --- the garbage-collection read-only window --------------------------------------------


@dataclasses.dataclass(frozen=True)
class WindowConfig(Config):
    # ``registry_gc_window`` (AI_MODELS_REGISTRY_GC_WINDOW) is read with getattr by the hook
    registry_gc_window: str = ""


def at(hhmmss: str) -> float:
    return dt.datetime.fromisoformat(f"2026-11-27T{hhmmss}+00:00").timestamp()


@pytest.mark.parametrize(
    ("window", "time", "remaining"),
    [
        ("03:00-03:30", "02:59:59", None),
        ("03:00-03:30", "03:00:00", 1800),
        ("03:00-03:30", "03:29:59", 1),
        ("03:00-03:30", "03:30:00", None),
        ("23:30-00:30", "23:45:00", 2700),
        ("23:30-00:30", "00:10:00", 1200),
        ("23:30-00:30", "12:00:00", None),
        ("", "03:10:00", None),
    ],
)
def test_read_only_window(window, time, remaining):
    assert registry_token.read_only_remaining(window, at(time)) == remaining


@pytest.mark.parametrize("window", ["3-4", "03:00", "25:00-26:00", "03:00-03:00", "aa:bb-cc:dd"])
def test_malformed_read_only_window_is_refused(window):
    with pytest.raises(ValueError, match="window"):
        registry_token.read_only_remaining(window, NOW)


def test_no_push_tokens_in_the_gc_window(key_pem):
    cfg = WindowConfig(signing_key=b"k" * 32, token_key_pem=key_pem, registry_gc_window="03:00-03:30")
    push = credentials.publish_credential(b"k" * 32, REPO)
    status, body, headers = ask(cfg, push, [f"repository:{REPO}:pull,push"], now=at("03:10:00"))
    assert status == 503 and "token" not in body and "garbage collection" in body["error"]
    assert headers["Retry-After"] == "1200"
    # outside the window the same request is served
    assert ask(cfg, push, [f"repository:{REPO}:pull,push"], now=at("03:30:00"))[0] == 200
    # pulls and deletes go on inside the window
    for cred, scope in [
        (credentials.pull_credential(b"k" * 32, [REPO]), f"repository:{REPO}:pull"),
        (credentials.cleanup_credential(b"k" * 32, REPO), f"repository:{REPO}:delete"),
        (push, f"repository:{REPO}:pull"),
    ]:
        status, body, _ = ask(cfg, cred, [scope], now=at("03:10:00"))
        assert status == 200 and access_of(body), scope


def test_malformed_window_is_503(key_pem):
    cfg = WindowConfig(signing_key=b"k" * 32, token_key_pem=key_pem, registry_gc_window="nightly")
    status, body, _ = ask(cfg, credentials.pull_credential(b"k" * 32, [REPO]), [], now=NOW)
    assert status == 503 and "window" in body["error"]
