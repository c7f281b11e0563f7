"""Never fetch the same bytes twice (issue 19 item 5): mount blobs DMCR already holds.

Pure: the publish credential's ``from=`` grant and what the token service
makes of forged ones; the Model hook's candidates (derived from identity,
deterministic) and how they reach the Job and the credential. Real: the
worker against a real token-auth DMCR (tests/support/dmcr.py) and a counting
Hugging Face stand-in (devstack/hf_hub.py records every request), with a TCP
proxy in front of the registry recording every byte the worker sends it.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from devstack.hf_hub import HubStandIn
from devstack.models import make_safetensors_file
from hooks import model as hooks_model
from hooks import model_mounts
from hooks.model_parent import parse_parent
from hooks.token import issue
from lib import credentials, registry_token
from lib.api import worker_cli as wc
from lib.api.naming import model_repository
from lib.config import Config
from tests.support import hookreq as hr
from tests.support.dmcr import DmcrServer, dmcr_fixture  # noqa: F401  (the dmcr fixture)
from tests.support.tcpproxy import TcpProxy

ROOT = Path(__file__).resolve().parents[1]
KEY = b"blob-mounts-test-signing-key-0123456789"
URL = "https://huggingface.co/acme/tiny-bert"
API = "ai.deckhouse.io/v1alpha1"
OWN = "ai-models/catalog/namespaced/team-b/bert/u-b"
CLUSTER = "ai-models/catalog/cluster/bert/u-c"
SAME_NS = "ai-models/catalog/namespaced/team-b/bert-2/u-b2"
VICTIM = "ai-models/catalog/namespaced/team-a/secret/u-a"


# --- credential and token service ----------------------------------------------------------


def _token_access(cfg: Config, user: str, pw: str, scopes: list[str]) -> tuple[int, list[dict]]:
    auth = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
    status, body, _ = issue(authorization=auth, service=cfg.token_service, scopes=scopes, config=cfg, now=1e9)
    if status != 200:
        return status, []
    return status, registry_token.decode_unverified(body["token"])[1]["access"]


@pytest.fixture(scope="module")
def cfg() -> Config:
    return Config(registry="dmcr:5000", signing_key=KEY, token_key_pem=registry_token.generate_signing_key())


def test_publish_grant_pulls_exactly_its_mount_sources(cfg):
    user, pw = credentials.publish_credential(KEY, OWN, (CLUSTER, SAME_NS))
    assert user == f"push;{OWN};from={CLUSTER};from={SAME_NS}"
    grant = credentials.verify(KEY, user, pw)
    assert grant is not None
    assert grant.allowed(OWN) == ("pull", "push")
    assert grant.allowed(CLUSTER) == grant.allowed(SAME_NS) == ("pull",)
    assert grant.allowed(VICTIM) == grant.allowed(CLUSTER + "/x") == grant.allowed("ai-models/catalog/cluster/bert") == ()
    scopes = [f"repository:{r}:pull,push,delete" for r in (OWN, CLUSTER, SAME_NS, VICTIM)]
    status, access = _token_access(cfg, user, pw, scopes)
    assert status == 200
    assert access == [
        {"type": "repository", "name": OWN, "actions": ["pull", "push"]},
        {"type": "repository", "name": CLUSTER, "actions": ["pull"]},
        {"type": "repository", "name": SAME_NS, "actions": ["pull"]},
    ]
    # Without candidates the credential is the one it always was.
    assert credentials.publish_credential(KEY, OWN)[0] == f"push;{OWN}"


@pytest.mark.parametrize("forged", ["unsigned", "widened", "signed-other-namespace", "signed-on-pull",
                                    "signed-traversal", "signed-cluster-to-namespaced"])
def test_forged_mount_sources_are_refused_by_the_token_service(cfg, forged):
    """Another namespace's Model repository is never readable through a publish credential:
    not when made up, not when added to a real one, and not even when signed with our key
    (a hook bug): ``verify`` itself refuses any from= outside ClusterModels and the own namespace."""
    real_user, real_pw = credentials.publish_credential(KEY, OWN, (CLUSTER,))

    def signed(user: str) -> tuple[str, str]:
        return user, credentials.sign(KEY, credentials.PURPOSE, user)

    user, pw = {
        "unsigned": (f"push;{OWN};from={VICTIM}", "0" * 8 + "." + "0" * 64),
        "widened": (f"{real_user};from={VICTIM}", real_pw),
        "signed-other-namespace": signed(f"push;{OWN};from={VICTIM}"),
        "signed-on-pull": signed(f"pull;{OWN};from={CLUSTER}"),
        "signed-traversal": signed(f"push;{OWN};from=ai-models/catalog/namespaced/team-b/../team-a/secret/u-a"),
        "signed-cluster-to-namespaced": signed(f"push;{CLUSTER};from={SAME_NS}"),
    }[forged]
    status, access = _token_access(cfg, user, pw, [f"repository:{VICTIM}:pull", f"repository:{SAME_NS}:pull"])
    assert status == 401 and access == []


def test_a_forged_candidate_in_the_worker_arguments_gets_no_pull(cfg):
    """The worker asks for pull on whatever --mount-from names; the token carries only the grant's."""
    user, pw = credentials.publish_credential(KEY, OWN, (CLUSTER,))
    status, access = _token_access(cfg, user, pw, [f"repository:{OWN}:pull,push", f"repository:{VICTIM}:pull"])
    assert status == 200 and [a["name"] for a in access] == [OWN]


# --- the Model hook: candidates ------------------------------------------------------------


def _published(kind: str, name: str, namespace: str = "", url: str = URL, phase: str = "Ready", **status) -> dict:
    uid = hr.uid_for(kind, namespace, name)
    md = {"name": name, "uid": uid, **({"namespace": namespace} if namespace else {})}
    st = {"phase": phase, **status}
    if phase == "Ready":
        st.setdefault("artifact", {"digest": "sha256:" + "a" * 64})
    return {"apiVersion": API, "kind": kind, "metadata": md, "spec": {"source": {"url": url}}, "status": st}


def _related(objs: list[dict]) -> dict:
    out: dict = {}
    for o in objs:
        key = f"{o['kind']}.{API}"
        md = o["metadata"]
        out.setdefault(key, {})[f"{md.get('namespace', '')}/{md['name']}".lstrip("/")] = o
    return out


def _repo(o: dict) -> str:
    md = o["metadata"]
    return model_repository(namespace=md.get("namespace"), name=md["name"], uid=md["uid"])


def test_candidates_are_derived_from_identity_and_deterministic():
    cfg = Config(registry="dmcr:5000", signing_key=KEY)
    parent = hr.model("bert", namespace="team-b", source={"url": URL})
    m = parse_parent(hr.sync_request(parent), cfg, cluster=False)
    victim_uri = f"dmcr:5000/{VICTIM}@sha256:" + "b" * 64
    good = [
        _published("ClusterModel", "bert-z"),
        _published("ClusterModel", "bert-a"),
        # A Ready Model of the namespace with a forged-looking status URI: its repository comes
        # from its identity, never from status.
        _published("Model", "bert-2", "team-b", url=URL + "/", artifact={"digest": "sha256:" + "c" * 64,
                                                                         "uri": victim_uri}),
    ]
    bad = [
        _published("ClusterModel", "other", url="https://huggingface.co/acme/other"),
        _published("ClusterModel", "pending", phase="Publishing"),
        _published("ClusterModel", "upload", url=None),
        _published("Model", "theirs", "team-a"),  # another namespace, even if Metacontroller sent it
        {**_published("ClusterModel", "going"), "metadata": {"name": "going", "uid": "u-g",
                                                             "deletionTimestamp": "2026-01-01T00:00:00Z"}},
        {**parent, "status": {"phase": "Ready", "artifact": {"digest": "sha256:" + "d" * 64}}},  # itself
    ]
    expected = tuple(sorted(_repo(o) for o in good[:2])) + (_repo(good[2]),)
    for seed in range(5):
        objs = good + bad
        random.Random(seed).shuffle(objs)
        assert model_mounts.candidates(m, _related(objs)) == expected
    assert not any(VICTIM in c or "team-a" in c for c in expected)
    # Capped, ClusterModels first.
    many = [_published("ClusterModel", f"c{i}") for i in range(10)]
    capped = model_mounts.candidates(m, _related(many + good))
    assert len(capped) == model_mounts.MAX_CANDIDATES and all("/cluster/" in c for c in capped)


def test_the_publish_job_and_its_credential_name_the_same_candidates():
    cfg = Config(registry="dmcr:5000", signing_key=KEY, registry_insecure=True)
    parent = hr.model("bert", namespace="team-b", source={"url": URL})
    cm, peer = _published("ClusterModel", "bert"), _published("Model", "bert-2", "team-b")
    req = hr.sync_request(parent)
    req["related"] = _related([peer, cm])
    answer = hooks_model.model_sync(req, cfg)
    job = hr.find_child(answer, "Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    cmd = wc.Publish.parse(container["args"])
    assert cmd.mount_from == (_repo(cm), _repo(peer))
    secret = hr.find_child(answer, "Secret", "ai-model-registry-")
    doc = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    [entry] = doc["auths"].values()
    grant = credentials.verify(KEY, entry["username"], entry["password"])
    assert grant is not None and grant.mount_from == cmd.mount_from
    assert hooks_model.model_sync(req, cfg) == answer  # stable: the Job template cannot change
    # No candidates: the arguments and the credential are exactly what they were before.
    plain = hooks_model.model_sync(hr.sync_request(parent), cfg)
    assert "--mount-from" not in hr.find_child(plain, "Job")["spec"]["template"]["spec"]["containers"][0]["args"]


# --- the worker against a real DMCR: zero bytes the second time ----------------------------


def _worker(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, env={**os.environ, **env})


def _model_files(tmp: Path) -> dict[str, bytes | Path]:
    rng = np.random.default_rng(7)
    weights = make_safetensors_file(tmp / "model.safetensors",
                                    {"w": rng.standard_normal((512, 512)).astype(np.float32)})  # 1 MiB
    config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 512}
    return {
        "model.safetensors": weights,
        "config.json": json.dumps(config).encode(),
        "tokenizer.json": json.dumps({"model": {"vocab": {f"t{i}": i for i in range(2000)}}}).encode(),
        "README.md": b"# tiny bert\n",
    }


def _file_requests(hub: HubStandIn, since: int) -> list[str]:
    """File downloads (``/resolve/`` and the LFS CDN) after the first ``since`` requests."""
    return [r.path for r in hub.log[since:] if "/resolve/" in r.path or r.path.startswith("/cdn/")]


def _blob_writes(sent: bytes) -> tuple[int, list[str]]:
    """Bytes of PATCH bodies and the request lines of every PATCH/PUT/POST the worker sent."""
    lines = [m.group(0).decode() for m in re.finditer(rb"(PATCH|PUT|POST) /v2/\S+", sent)]
    patched = sum(int(m.group(1)) for m in re.finditer(rb"PATCH /v2/[^\r\n]*\r\n(?:[^\r\n]+\r\n)*?"
                                                       rb"Content-Length: (\d+)", sent, re.I))
    return patched, lines


def _publish(dmcr: DmcrServer, tmp: Path, host: str, repo: str, cred: tuple[str, str], hub: HubStandIn,
             mount_from: tuple[str, ...] = ()) -> tuple[int, dict]:
    auth = dmcr.auth_file(tmp / f"auth-{uuid.uuid4().hex[:6]}.json", *cred)
    auth.write_text(credentials.dockerconfigjson(host, *cred))  # the worker reaches DMCR through `host`
    result = tmp / f"result-{uuid.uuid4().hex[:6]}.json"
    cmd = wc.Publish(source=URL, destination=f"{host}/{repo}", registry_auth_file=str(auth),
                     result_file=str(result), insecure_registry=True, mount_from=mount_from)
    done = _worker(cmd.argv(), {"HF_ENDPOINT": hub.endpoint, "AI_MODELS_CACHE_DIR": str(tmp / "cache")})
    assert result.exists(), done.stderr[-3000:]
    return done.returncode, json.loads(result.read_text())


@pytest.fixture
def hub(tmp_path):
    with HubStandIn() as h:
        h.add_repo("acme/tiny-bert", _model_files(tmp_path), library_name="transformers")
        yield h


def test_a_second_model_of_the_same_source_costs_zero_file_bytes_and_zero_blob_bytes(dmcr, tmp_path, hub):
    """A ClusterModel publishes; then a Model of the same URL in a namespace, mounting from it:
    no file is requested from the Hub, no blob byte is PATCHed or PUT into DMCR, same digest."""
    cm_repo = f"ai-models/catalog/cluster/tiny-bert/{uuid.uuid4().hex[:8]}"
    own = f"ai-models/catalog/namespaced/team-b/tiny-bert/{uuid.uuid4().hex[:8]}"
    code, first = _publish(dmcr, tmp_path, dmcr.host, cm_repo, dmcr.publish_credential(cm_repo), hub)
    assert code == 0, first
    first_files = _file_requests(hub, 0)
    assert any(p.startswith("/cdn/") for p in first_files)  # the weights came from the Hub once

    before = len(hub.log)
    with TcpProxy(("127.0.0.1", int(dmcr.host.rsplit(":", 1)[1])), capture=True) as proxy:
        cred = credentials.publish_credential(dmcr.config.signing_key, own, (cm_repo,))
        code, second = _publish(dmcr, tmp_path, proxy.host, own, cred, hub, mount_from=(cm_repo,))
    assert code == 0, second
    assert _file_requests(hub, before) == []  # zero file bytes from the source (model info only)
    patched, writes = _blob_writes(bytes(proxy.received))
    assert patched == 0
    assert [w.split()[0] for w in writes if "/manifests/" not in w] == ["POST"] * len(
        [w for w in writes if "mount=" in w])  # only mounts: no upload session, no blob PUT
    # (the manifest PUT may be sent twice: the first one meets the token challenge)
    assert {w for w in writes if "/manifests/" in w} == {f"PUT /v2/{own}/manifests/latest"}
    assert second["artifact"]["digest"] == first["artifact"]["digest"]
    total = first["artifact"]["sizeBytes"]
    assert second["mounted"]["bytes"] == total and second["mounted"]["blobs"] == 5  # 4 files + config
    print(f"\nsecond Model: Hub file requests 0 (first: {len(first_files)}), blob bytes PATCHed 0, "
          f"{total} bytes mounted, {len(writes)} write requests: {writes}")


def test_a_candidate_the_credential_does_not_grant_is_fetched_instead(dmcr, tmp_path, hub):
    """--mount-from naming another namespace's repository (forged arguments): the token carries no
    pull on it, the mount is refused, the worker fetches the file itself; nothing of the victim's."""
    victim = f"ai-models/catalog/namespaced/team-a/tiny-bert/{uuid.uuid4().hex[:8]}"
    code, first = _publish(dmcr, tmp_path, dmcr.host, victim, dmcr.publish_credential(victim), hub)
    assert code == 0, first
    before = len(hub.log)
    own = f"ai-models/catalog/namespaced/team-b/tiny-bert/{uuid.uuid4().hex[:8]}"
    code, second = _publish(dmcr, tmp_path, dmcr.host, own, dmcr.publish_credential(own), hub,
                            mount_from=(victim,))
    assert code == 0, second
    assert second["mounted"] == {"blobs": 0, "bytes": 0}
    assert any(p.startswith("/cdn/") for p in _file_requests(hub, before))
