"""No secret value leaves a Secret: not in status, conditions, other children, results or logs.

Secret values in play: the user's Hugging Face token, upload tokens, DMCR
credentials (push, delete, pull), a catalog's pull password, the signing key.
Each is collected from where it legitimately lives (the request's Secrets,
the Secrets the hooks emit) and then searched for, verbatim and base64- or
URL-encoded, everywhere else: the hook answers minus their Secret children,
the webhook's patch, the hook service's HTTP answers and its logs (the real
Flask app, ``caplog`` at DEBUG), the token endpoint's answers, the worker's
result file, stdout and stderr, and the upload server's answers and log.

The last part guards the constant-time comparisons: every check of a
presented secret uses ``hmac.compare_digest`` (an AST scan forbids ``==``
on secret-named operands) and the checks really go through it at run time.
"""

from __future__ import annotations

import ast
import base64
import copy
import dataclasses
import hmac
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from devstack.registry import RegistryServer
from hooks.app import create_app
from lib import credentials
from lib.api.naming import model_repository
from lib.registry_token import generate_signing_key
from tests.test_security_pods import CFG, HF_TOKEN, SCENARIOS, _children
from tests.test_upload_server import TOKEN as UPLOAD_TOKEN
from tests.test_upload_server import start  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
Obj = dict[str, Any]
CATALOG_PASSWORD = "s3cret"  # tests.test_catalog_hooks.pull_secret's default


def _decode(b64: str) -> str:
    return base64.b64decode(b64).decode()


def _passwords_in_dockerconfig(raw: str) -> set[str]:
    out = set()
    for entry in json.loads(raw).get("auths", {}).values():
        if "auth" in entry:
            out.add(_decode(entry["auth"]).split(":", 1)[1])
        if "password" in entry:
            out.add(entry["password"])
    return out


def _secret_values(obj: Obj) -> set[str]:
    """The sensitive values of one Secret (dockerconfigjson passwords; other keys but url/namespaces)."""
    values = set()
    for key, b64 in (obj.get("data") or {}).items():
        raw = _decode(b64)
        if key == ".dockerconfigjson":
            values |= _passwords_in_dockerconfig(raw)
        elif key not in ("url", "inClusterURL", "ca.crt"):
            values.add(raw)
    return values


def secrets_in_play() -> set[str]:
    values = {HF_TOKEN, CFG.signing_key.decode(), CATALOG_PASSWORD}
    for s in SCENARIOS:
        for c in _children(s.answer):
            if c["kind"] == "Secret":
                values |= _secret_values(c)
        for att in (s.answer.get("attachments") or []):
            if att["kind"] == "Secret":
                values |= _secret_values(att)
    return {v for v in values if len(v) >= 6}


SECRETS = secrets_in_play()


def leaks(text: str, secrets: set[str] = SECRETS) -> list[str]:
    """Secrets found in ``text`` verbatim, base64-encoded (any alignment) or URL-encoded."""
    found = []
    for s in secrets:
        forms = {s, quote(s, safe=""), base64.b64encode(s.encode()).decode()[:-4] or s}
        for shift in (1, 2):
            forms.add(base64.b64encode(b"\0" * shift + s.encode()).decode()[4:-4])
        if any(len(f) >= 8 and f in text for f in forms if f != s) or s in text:
            found.append(s[:4] + "…")
    return found


def test_the_secrets_in_play_are_collected():
    assert HF_TOKEN in SECRETS and CFG.signing_key.decode() in SECRETS
    assert len(SECRETS) >= 8, "upload tokens and push/delete/pull passwords are all collected"
    repo = model_repository(namespace="ai-demo", name="public", uid="u")
    _, pw = credentials.publish_credential(CFG.signing_key, repo)
    assert leaks(f"x{pw}y", {pw}) and leaks(base64.b64encode(f"user:{pw}".encode()).decode(), {pw})


def _without_secrets(answer: Obj) -> Obj:
    out = copy.deepcopy(answer)
    if "children" in out:
        out["children"] = [c for c in out["children"] if c["kind"] != "Secret"]
    if "attachments" in out:
        out["attachments"] = [c for c in out["attachments"] if c["kind"] != "Secret"]
    return out


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_no_secret_outside_secrets_in_hook_answers(scenario):
    """Status, conditions, Jobs (args, env), Roles, Services, the webhook patch: no secret value."""
    answer = _without_secrets(scenario.answer)
    text = json.dumps(answer)
    if "response" in answer and answer["response"].get("patch"):
        text += _decode(answer["response"]["patch"])
    assert leaks(text) == []


def test_secret_files_are_mounted_never_passed_in_env_or_args():
    for s in SCENARIOS:
        for c in _children(s.answer):
            if c["kind"] != "Job":
                continue
            spec = c["spec"]["template"]["spec"]
            for ctr in spec["containers"] + spec.get("initContainers", []):
                for e in ctr.get("env", []):
                    assert "secretKeyRef" not in e.get("valueFrom", {}), (c["metadata"]["name"], e["name"])
                assert not ctr.get("envFrom"), c["metadata"]["name"]
            for v in spec.get("volumes", []):
                if "secret" in v:
                    assert v["secret"]["defaultMode"] & 0o007 == 0, "secret files are not world-readable"


# ---------------------------------------------------------------- the hook service over HTTP


TOKEN_CFG = dataclasses.replace(CFG, token_key_pem=generate_signing_key())


@pytest.fixture
def app_client():
    return create_app(TOKEN_CFG).test_client()


def test_hook_service_logs_and_answers_carry_no_secret(app_client, caplog):
    caplog.set_level(logging.DEBUG)
    for s in SCENARIOS:
        r = app_client.post(s.path, json=s.request)
        assert r.status_code == 200, (s.name, r.get_data(as_text=True)[:300])
        assert leaks(json.dumps(_without_secrets(r.get_json()))) == [], s.name
    # Malformed requests that carry secrets: the 400 names the problem, not the value.
    [private] = [s for s in SCENARIOS if s.name == "hf-private:fresh"]
    broken = copy.deepcopy(private.request)
    broken["parent"]["metadata"]["name"] = 12345
    r = app_client.post(private.path, json=broken)
    assert r.status_code == 400 and leaks(r.get_data(as_text=True)) == []
    broken = copy.deepcopy(private.request)
    for secret in broken["related"]["Secret.v1"].values():
        secret["data"] = {"token": HF_TOKEN}  # not base64: the hook must not echo it
    r = app_client.post(private.path, json=broken)
    assert leaks(json.dumps(_without_secrets(r.get_json()))) == [], r.get_data(as_text=True)[:300]
    broken = copy.deepcopy(private.request)
    for secret in broken["related"]["Secret.v1"].values():
        secret["data"] = HF_TOKEN  # not even an object
    r = app_client.post(private.path, json=broken)
    assert leaks(json.dumps(_without_secrets(r.get_json()))) == []
    assert leaks(caplog.text) == []


def test_token_endpoint_never_echoes_credentials(app_client, caplog):
    caplog.set_level(logging.DEBUG)
    repo = model_repository(namespace="ai-demo", name="public", uid="u")
    user, pw = credentials.publish_credential(CFG.signing_key, repo)
    near_miss = pw[:-1] + ("0" if pw[-1] != "0" else "1")
    seen = {pw, near_miss, CFG.signing_key.decode()}
    for password in (near_miss, "", pw):
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        r = app_client.get("/registry/token", query_string={"service": "dmcr", "scope": f"repository:{repo}:push"},
                           headers={"Authorization": f"Basic {auth}"})
        body = r.get_data(as_text=True)
        assert leaks(body, seen) == [], (r.status_code, body[:200])
        if password == pw:
            assert r.status_code == 200 and r.get_json()["token"]
            assert leaks(caplog.text, {r.get_json()["token"]}) == []
        else:
            assert r.status_code == 401
    assert leaks(caplog.text, seen) == []


# ---------------------------------------------------------------- the worker


def _publish(tmp_path: Path, hub_endpoint: str, registry: RegistryServer, token: str, repo: str):
    auth = tmp_path / "run" / "hf-token"
    auth.parent.mkdir(exist_ok=True)
    auth.write_text(token + "\n")
    result = tmp_path / "run" / f"result-{repo.rsplit('-', 1)[1]}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "AI_MODELS_"))}
    env["HF_ENDPOINT"] = hub_endpoint
    proc = subprocess.run(
        [sys.executable, "-m", "jobs", "publish", "--source", "https://huggingface.co/acme/private-llm",
         "--destination", f"{registry.host}/{repo}", "--auth-file", str(auth), "--insecure-registry",
         "--result-file", str(result)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    return proc, result.read_text() if result.exists() else ""


def test_worker_result_and_output_never_carry_the_source_token(tmp_path, registry):
    from devstack.hf_hub import HubStandIn
    from devstack.models import make_safetensors_model

    granted, other = "hf_GrantedTokenValue0123456789", "hf_NotGrantedTokenValue0123456"
    wrong = "hf_UnknownTokenValue0123456789"
    with HubStandIn(tokens={granted, other}) as hub:
        files = make_safetensors_model(tmp_path / "model")
        hub.add_repo("acme/private-llm", files, private=True, granted={granted})
        outcomes = {}
        for token in (wrong, other, granted):
            proc, result = _publish(tmp_path, hub.endpoint, registry, token, f"security/leak-{len(outcomes)}")
            outcomes[token] = (proc.returncode, result)
            for text in (result, proc.stdout, proc.stderr):
                assert leaks(text, {wrong, other, granted}) == [], text[-500:]
    assert outcomes[granted][0] == 0, outcomes[granted]
    assert json.loads(outcomes[granted][1])["artifact"]["digest"]
    for token in (wrong, other):
        code, result = outcomes[token]
        assert code != 0 and json.loads(result)["error"]["reason"]


def test_upload_server_never_echoes_tokens(start, tmp_path, capfd):  # noqa: F811
    import requests

    from devstack.models import make_gguf

    server = start()
    near_miss = UPLOAD_TOKEN[:-1] + "y"
    gguf = tmp_path / "m.gguf"
    make_gguf(gguf)
    for token in (near_miss, "", "Bearer"):
        r = requests.put(server.url, data=b"GGUF", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 401
        assert leaks(r.text, {UPLOAD_TOKEN, near_miss}) == []
    with gguf.open("rb") as f:
        r = requests.put(server.url + "?filename=m.gguf", data=f,
                         headers={"Authorization": f"Bearer {UPLOAD_TOKEN}"}, timeout=60)
    assert r.status_code in (200, 201), r.text
    assert server.wait() == 0
    out, err = capfd.readouterr()
    for text in (r.text, server.result_file.read_text(), out, err):
        assert leaks(text, {UPLOAD_TOKEN, near_miss}) == [], text[-300:]


# ---------------------------------------------------------------- constant-time checks

CHECKED = {
    "lib/credentials.py": "verify",
    "hooks/token.py": "issue",
    "lib/upload/session.py": None,
    "lib/signing_keys.py": None,
}
SECRET_WORDS = ("token", "password", "passwd", "secret", "signature", "mac", "digest_of", "expected", "key")


def _names(node: ast.AST) -> set[str]:
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            out.add(n.id.lower())
        elif isinstance(n, ast.Attribute):
            out.add(n.attr.lower())
    return out


@pytest.mark.parametrize("path", sorted(CHECKED))
def test_secrets_are_compared_in_constant_time(path):
    tree = ast.parse((ROOT / path).read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "compare_digest"]
    assert calls, f"{path} never calls hmac.compare_digest"
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value in (None, "", 0) for o in operands):
                continue  # emptiness checks reveal nothing
            words = set().union(*(_names(o) for o in operands))
            suspicious = {w for w in words if any(s in w for s in ("token", "password", "signature", "mac"))
                          and w not in ("tokens", "token_file", "token_service", "token_issuer")}
            assert not suspicious, f"{path}:{node.lineno} compares {suspicious} with ==; use hmac.compare_digest"


def test_credential_and_token_checks_go_through_compare_digest(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    repo = model_repository(namespace="ai-demo", name="public", uid="u")
    user, pw = credentials.publish_credential(CFG.signing_key, repo)
    assert credentials.verify(CFG.signing_key, user, pw) is not None
    assert credentials.verify(CFG.signing_key, user, pw[:-1] + "x") is None
    assert len(calls) >= 2
    calls.clear()
    app = create_app(TOKEN_CFG).test_client()
    auth = base64.b64encode(f"{user}:{pw[:-1]}x".encode()).decode()
    r = app.get("/registry/token", query_string={"service": "dmcr"}, headers={"Authorization": f"Basic {auth}"})
    assert r.status_code == 401 and calls


def test_upload_token_check_goes_through_compare_digest(start, monkeypatch):  # noqa: F811
    import requests

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    server = start()
    r = requests.put(server.url, data=b"x", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert r.status_code == 401 and calls
