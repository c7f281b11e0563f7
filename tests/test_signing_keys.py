"""The HMAC signing key set: fail-closed startup, key ids in credentials, rotation and revocation.

Keys: ``A`` the old key, ``B`` the new one. A rotation goes
{A} → {A signs, B verifies} → {B signs, A verifies} → {B}; see docs/dmcr.md.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack.registry import free_port
from hooks import model as hooks_model
from hooks import token
from hooks import workload as workload_hooks
from hooks.app import create_app
from lib import credentials, registry_token
from lib.api.naming import derive_secret
from lib.config import Config, ConfigError
from lib.signing_keys import DEVELOPMENT_KEY, MIN_KEY_BYTES, SigningKeyError, SigningKeys, key_id
from tests.support import hookreq as hr
from tests.test_workload_hooks import model as ready_model
from tests.test_workload_hooks import related, workload

ROOT = Path(__file__).resolve().parent.parent
A = b"a" * 32
B = os.urandom(32).hex().encode()
REPO = "ai-models/catalog/namespaced/ai-demo/m/uid-1"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TOKEN_KEY = registry_token.generate_signing_key("ec")


def cfg(current: bytes | None, *verifying: bytes, **kw) -> Config:
    return Config(signing_key=current, verifying_keys=verifying, token_key_pem=TOKEN_KEY, **kw)


def ask(config: Config, cred: tuple[str, str]) -> tuple[int, dict, dict]:
    auth = "Basic " + base64.b64encode(f"{cred[0]}:{cred[1]}".encode()).decode()
    return token.issue(authorization=auth, service="dmcr", scopes=[f"repository:{REPO}:push"], config=config, now=NOW)


# ---------------------------------------------------------------- startup fails closed


def env_with(tmp_path: Path, content: bytes | None, **extra: str) -> dict[str, str]:
    env = dict(extra)
    if content is not None:
        (tmp_path / "key").write_bytes(content)
    env["AI_MODELS_SIGNING_KEY_FILE"] = str(tmp_path / "key")
    return env


@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read signing key file"),
    (b"", "is empty"),
    (b"  \n\t\n", "is empty"),
    (b"k" * (MIN_KEY_BYTES - 1), f"has {MIN_KEY_BYTES - 1} bytes, at least {MIN_KEY_BYTES}"),
])
def test_missing_empty_or_short_key_file_fails_with_the_setting_and_the_file(tmp_path, content, says):
    env = env_with(tmp_path, content)
    with pytest.raises(ConfigError) as e:
        Config.from_env(env)
    message = str(e.value)
    assert "AI_MODELS_SIGNING_KEY_FILE" in message and str(tmp_path / "key") in message and says in message
    assert "k" * 8 not in message  # no key material in the message


def test_a_key_of_32_bytes_loads_stripped(tmp_path):
    c = Config.from_env(env_with(tmp_path, b"  " + A + b"\n"))
    assert c.signing_key == A and c.signing_keys.current_id == key_id(A)


def test_no_key_at_all_stops_every_listener_that_signs_or_verifies():
    c = Config.from_env({})
    assert c.signing_key is None
    for routes in (["metacontroller"], ["token"], None):
        with pytest.raises(ConfigError, match="AI_MODELS_SIGNING_KEY_FILE"):
            create_app(c, routes=routes or ["metacontroller", "token", "webhook"])
    create_app(c, routes=["webhook"])  # the admission webhook derives nothing


def test_direct_config_without_key_derives_nothing():
    with pytest.raises(ConfigError, match="AI_MODELS_SIGNING_KEY_FILE"):
        Config().signing_keys  # noqa: B018
    with pytest.raises(ConfigError, match="at least 32"):
        Config(signing_key=b"short")
    with pytest.raises(ConfigError, match="without a current one"):
        Config(verifying_keys=(A,))


def test_the_development_key_needs_its_switch(tmp_path):
    with pytest.raises(ConfigError, match="AI_MODELS_DEV_INSECURE_SIGNING_KEY"):
        Config(signing_key=DEVELOPMENT_KEY)
    with pytest.raises(ConfigError, match="AI_MODELS_DEV_INSECURE_SIGNING_KEY"):
        Config(signing_key=A, verifying_keys=(DEVELOPMENT_KEY,))
    with pytest.raises(ConfigError, match="public development key") as e:
        Config.from_env(env_with(tmp_path, DEVELOPMENT_KEY))
    assert str(tmp_path / "key") in str(e.value)
    # Only the switch brings it back: unset file → the development key, for local runs.
    dev = Config.from_env({"AI_MODELS_DEV_INSECURE_SIGNING_KEY": "1"})
    assert dev.signing_key == DEVELOPMENT_KEY and dev.dev_insecure_signing_key
    create_app(dev, routes=["metacontroller", "token"])
    # A named key file still wins over the switch.
    assert Config.from_env(env_with(tmp_path, A, AI_MODELS_DEV_INSECURE_SIGNING_KEY="1")).signing_key == A


def test_a_credential_forged_with_the_development_key_is_refused():
    """The finding: a push credential made with the public key got a push token."""
    forged = credentials.publish_credential(SigningKeys(DEVELOPMENT_KEY, allow_development=True), REPO)
    status, body, headers = ask(cfg(A), forged)
    assert status == 401 and "token" not in body and "WWW-Authenticate" in headers


@pytest.mark.parametrize("content", [b"", b"short"])
def test_gunicorn_refuses_to_start_not_on_the_first_request(tmp_path, content):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_MODELS_")}
    env.update(env_with(tmp_path, content), AI_MODELS_LISTEN=f"127.0.0.1:{free_port()}", AI_MODELS_HOOK_WORKERS="1")
    started = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "hooks" / "gunicorn_conf.py"), "hooks.app:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert p.returncode != 0 and time.monotonic() - started < 60
    assert "AI_MODELS_SIGNING_KEY_FILE" in p.stderr and str(tmp_path / "key") in p.stderr, p.stderr[-2000:]


# ---------------------------------------------------------------- the key set from a mounted Secret


def mounted_secret(root: Path, keys: dict[str, bytes]) -> Path:
    """A Secret volume as the kubelet writes it: files are symlinks into ``..data``."""
    data = root / "..2026_01_01_00_00_00.000000001"
    data.mkdir(parents=True)
    for name, value in keys.items():
        (data / name).write_bytes(value + b"\n")
    (root / "..data").symlink_to(data.name)
    for name in keys:
        (root / name).symlink_to(f"..data/{name}")
    return root


def test_keys_dir_loads_every_key_of_the_secret(tmp_path):
    d = mounted_secret(tmp_path / "signing", {"key": B, "previous": A})
    c = Config.from_env({"AI_MODELS_SIGNING_KEY_FILE": str(d / "key"), "AI_MODELS_SIGNING_KEYS_DIR": str(d)})
    assert c.signing_key == B and set(c.verifying_keys) == {A, B}
    assert c.signing_keys.ids == (key_id(B), key_id(A))
    assert c.signing_keys.describe() == f"current {key_id(B)}, also verifying {key_id(A)}"


def test_a_bad_key_in_the_dir_fails_startup_naming_it(tmp_path):
    d = mounted_secret(tmp_path / "signing", {"key": B, "previous": b"too-short"})
    with pytest.raises(ConfigError) as e:
        Config.from_env({"AI_MODELS_SIGNING_KEY_FILE": str(d / "key"), "AI_MODELS_SIGNING_KEYS_DIR": str(d)})
    assert "AI_MODELS_SIGNING_KEYS_DIR" in str(e.value) and str(d / "previous") in str(e.value)
    with pytest.raises(ConfigError, match="AI_MODELS_SIGNING_KEY_FILE is not"):
        Config.from_env({"AI_MODELS_SIGNING_KEYS_DIR": str(d)})
    with pytest.raises(ConfigError, match="not a directory"):
        Config.from_env({"AI_MODELS_SIGNING_KEY_FILE": str(d / "key"), "AI_MODELS_SIGNING_KEYS_DIR": str(d / "x")})


def test_two_keys_with_one_id_are_refused(monkeypatch):
    monkeypatch.setattr("lib.signing_keys.key_id", lambda key: "00000000")
    with pytest.raises(SigningKeyError, match="share the id"):
        SigningKeys(A, (B,))


# ---------------------------------------------------------------- credentials name their key


def test_password_is_kid_dot_mac_and_deterministic():
    user, pw = credentials.publish_credential(cfg(A).signing_keys, REPO)
    assert user == f"push;{REPO}"
    assert re.fullmatch(rf"{key_id(A)}\.[0-9a-f]{{64}}", pw)
    assert credentials.publish_credential(cfg(A, B).signing_keys, REPO) == (user, pw)  # verifying keys never sign
    assert credentials.key_id_of(pw) == key_id(A)


def test_a_previous_key_verifies_until_it_is_removed():
    old = credentials.publish_credential(A, REPO)
    assert credentials.verify(cfg(B, A).signing_keys, *old) is not None
    assert credentials.verify(cfg(B).signing_keys, *old) is None
    # and the next key (phase 1) verifies before it signs
    new = credentials.publish_credential(B, REPO)
    assert credentials.verify(cfg(A, B).signing_keys, *new) is not None
    assert credentials.verify(cfg(A).signing_keys, *new) is None


def test_a_tampered_kid_or_grant_is_refused():
    keys = cfg(B, A).signing_keys
    user, pw = credentials.publish_credential(A, REPO)
    mac = pw.split(".", 1)[1]
    for bad in (
        f"{key_id(B)}.{mac}",  # another key of the set
        f"ffffffff.{mac}",  # an unknown key
        mac,  # no kid
        f".{mac}",
        f"{key_id(A)}.{mac[:-1]}0" if mac[-1] != "0" else f"{key_id(A)}.{mac[:-1]}1",
    ):
        assert credentials.verify(keys, user, bad) is None, bad
    assert credentials.verify(keys, f"push;{REPO};ai-models/other", pw) is None
    assert credentials.verify(keys, f"pull;{REPO}", pw) is None


# ---------------------------------------------------------------- the token endpoint


def test_token_endpoint_honours_every_key_in_the_set_and_nothing_else():
    old, new = credentials.publish_credential(A, REPO), credentials.publish_credential(B, REPO)
    rotated = cfg(B, A)
    for cred in (old, new):
        status, body, _ = ask(rotated, cred)
        assert status == 200, body
        _, claims = registry_token.decode_unverified(body["token"])
        assert claims["access"] == [{"type": "repository", "name": REPO, "actions": ["push"]}]
    made_up = (old[0], f"{key_id(A)}." + "0" * 64)
    refusals = [ask(cfg(B), old), ask(cfg(B), made_up), ask(rotated, made_up)]
    assert {(s, json.dumps(b, sort_keys=True), tuple(sorted(h.items()))) for s, b, h in refusals} == {
        (401, json.dumps({"error": "invalid credential"}), tuple(sorted(refusals[0][2].items())))
    }


def test_token_endpoint_without_signing_key_is_503():
    status, body, _ = ask(cfg(None), credentials.publish_credential(A, REPO))
    assert status == 503 and "AI_MODELS_SIGNING_KEY_FILE" in body["error"]


def test_removed_key_gets_401_over_http():
    old = credentials.publish_credential(A, REPO)
    auth = {"Authorization": "Basic " + base64.b64encode(f"{old[0]}:{old[1]}".encode()).decode()}
    query = {"service": "dmcr", "scope": f"repository:{REPO}:pull"}
    assert create_app(cfg(B, A)).test_client().get("/registry/token", query_string=query, headers=auth).status_code == 200
    r = create_app(cfg(B)).test_client().get("/registry/token", query_string=query, headers=auth)
    assert r.status_code == 401 and r.get_json() == {"error": "invalid credential"}


# ---------------------------------------------------------------- the hooks across a rotation


def _dockerconfig_password(secret: dict) -> str:
    raw = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    [entry] = raw["auths"].values()
    return entry["password"]


def test_rotation_keeps_model_hook_answers_deterministic():
    req = hr.sync_request(hr.model())
    phases = [cfg(A), cfg(A, B), cfg(B, A), cfg(B)]
    answers = [hooks_model.model_sync(req, c) for c in phases]
    assert answers == [hooks_model.model_sync(req, c) for c in phases]  # same request, same answer
    kids = [credentials.key_id_of(_dockerconfig_password(hr.find_child(a, "Secret", "ai-model-registry-")))
            for a in answers]
    assert kids == [key_id(A), key_id(A), key_id(B), key_id(B)]  # re-rendered with the current key only


def test_rotation_rerenders_workload_pull_secrets_with_the_new_kid():
    body = {"controller": {}, "object": workload(model_names="m1"), "attachments": {"Secret.v1": {}},
            "related": related(ready_model("m1")), "finalizing": False}
    old_cfg, new_cfg = cfg(A, registry="dmcr.test:5000"), cfg(B, A, registry="dmcr.test:5000")
    before, after = workload_hooks.sync(body, old_cfg), workload_hooks.sync(body, new_cfg)
    assert after == workload_hooks.sync(body, new_cfg)
    [old_secret], [new_secret] = before["attachments"], after["attachments"]
    old_pw, new_pw = _dockerconfig_password(old_secret), _dockerconfig_password(new_secret)
    assert (credentials.key_id_of(old_pw), credentials.key_id_of(new_pw)) == (key_id(A), key_id(B))
    assert before["annotations"] == after["annotations"]  # nothing but the Secret changes


def test_open_upload_session_keeps_its_token_until_its_key_is_removed():
    parent = hr.model("up", source={"upload": {}})

    def upload_secret(config: Config, observed: list[dict]) -> tuple[dict, str]:
        a = hooks_model.model_sync(hr.sync_request(parent, observed), config)
        s = hr.find_child(a, "Secret", "ai-model-upload-")
        return s, base64.b64decode(s["data"]["token"]).decode()

    first, t_a = upload_secret(cfg(A), [])
    assert credentials.key_id_of(t_a) == key_id(A)
    seen = [hr.observe(first)]
    assert upload_secret(cfg(B, A), seen)[1] == t_a  # the running upload server still accepts it
    _, t_b = upload_secret(cfg(B), seen)  # revoked: a token of the current key
    assert credentials.key_id_of(t_b) == key_id(B) and t_b != t_a
    assert upload_secret(cfg(B, A), [])[1] == t_b  # a new session signs with the current key
    # a token of the format before key ids (open across the upgrade) is kept the same way
    legacy = derive_secret(A, "upload", f"{parent['metadata']['uid']}:0")
    old = hr.observe(hr.secret(first["metadata"]["name"], first["metadata"]["namespace"], {"token": legacy}))
    assert upload_secret(cfg(B, A), [old])[1] == legacy
    assert upload_secret(cfg(B), [old])[1] == t_b
    forged = hr.observe(hr.secret(first["metadata"]["name"], first["metadata"]["namespace"], {"token": "x" * 64}))
    assert upload_secret(cfg(B, A), [forged])[1] == t_b  # an observed token proves nothing by itself


# ---------------------------------------------------------------- install: manifests and make-secrets.sh


def test_hooks_and_token_mount_the_whole_key_secret_and_the_webhook_none():
    from tests.test_deploy import CONTAINERS, HOOKS_POD, _container_env

    volumes = {v["name"]: v for v in HOOKS_POD["volumes"]}
    for name, c in CONTAINERS.items():
        env = _container_env(c)
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
        if name == "webhook":
            assert "AI_MODELS_SIGNING_KEY_FILE" not in env and "AI_MODELS_SIGNING_KEYS_DIR" not in env
            continue
        secret = mounts[env["AI_MODELS_SIGNING_KEYS_DIR"]]["secret"]
        assert secret["secretName"] == "ai-models-signing-key" and "items" not in secret  # next/previous too
        assert env["AI_MODELS_SIGNING_KEY_FILE"] == env["AI_MODELS_SIGNING_KEYS_DIR"] + "/key"


def _secret_keys(out: Path) -> dict[str, bytes]:
    import yaml

    [doc] = [d for d in yaml.safe_load_all((out / "secrets.yaml").read_text())
             if d and d["metadata"]["name"] == "ai-models-signing-key"]
    return {k: base64.b64decode(v) for k, v in doc["data"].items()}


def test_make_secrets_rotation_steps_keep_credentials_valid_until_the_drop(tmp_path):
    out = tmp_path / "secrets"

    def step(*args: str) -> tuple[Config, str]:
        p = subprocess.run(["sh", str(ROOT / "deploy" / "dmcr" / "make-secrets.sh"), *args, str(out)],
                           check=True, capture_output=True, text=True)
        n = len(list(tmp_path.glob("mount*")))
        d = mounted_secret(tmp_path / f"mount{n}", _secret_keys(out))
        c = Config.from_env({"AI_MODELS_SIGNING_KEY_FILE": str(d / "key"), "AI_MODELS_SIGNING_KEYS_DIR": str(d)})
        return c, p.stderr

    c0, log0 = step()
    old = credentials.publish_credential(c0.signing_keys, REPO)
    assert f"signing key ids: key={c0.signing_keys.current_id}\n" in log0  # the shell's kid is the service's
    assert len(c0.signing_key or b"") == 64 and set(_secret_keys(out)) == {"key"}

    c1, log1 = step("--add-signing-key")
    assert c1.signing_key == c0.signing_key and set(_secret_keys(out)) == {"key", "next"}
    [new_kid] = [k for k in c1.signing_keys.ids if k != c0.signing_keys.current_id]
    assert f"next={new_kid}" in log1

    c2, _ = step("--promote-signing-key")
    assert c2.signing_keys.current_id == new_kid and set(_secret_keys(out)) == {"key", "previous"}
    new = credentials.publish_credential(c2.signing_keys, REPO)
    for c in (c1, c2):  # every replica, restarted or not yet, accepts both during the rotation
        assert credentials.verify(c.signing_keys, *old) and credentials.verify(c.signing_keys, *new)

    c3, _ = step("--drop-previous-signing-key")
    assert set(_secret_keys(out)) == {"key"}
    assert credentials.verify(c3.signing_keys, *new) is not None
    assert credentials.verify(c3.signing_keys, *old) is None  # revoked
