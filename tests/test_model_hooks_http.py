"""The Model hooks over HTTP: the Flask app in-process and the real app under gunicorn."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hooks.app import create_app
from lib import credentials
from tests.support import hookreq as hr
from tests.test_model_hooks import CFG, check

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def client():
    return create_app(CFG).test_client()


def post(client, path, body):
    r = client.post(path, data=json.dumps(body), content_type="application/json")
    return r.status_code, r.get_json()


def test_customize_then_sync_then_finalize_over_flask(client):
    parent = hr.model()
    code, rel = post(client, "/hooks/model/customize", hr.customize_request(parent))
    # The namespace (finalize must know when it is terminating); never Pods: results are on the Jobs.
    # A URL source not yet Ready also relates its blob mount candidates (hooks/model_mounts.py).
    ns = parent["metadata"]["namespace"]
    assert code == 200 and rel == {"relatedResources": [
        {"apiVersion": "v1", "resource": "namespaces", "names": [ns]},
        {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": "clustermodels"},
        {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": "models", "namespace": ns}]}
    code, a = post(client, "/hooks/model/sync", hr.sync_request(parent))
    assert code == 200 and check(parent, a)["status"]["phase"] == "Pending"
    code, f = post(
        client, "/hooks/model/finalize", hr.sync_request(hr.next_parent(parent, a), finalizing=True)
    )
    assert code == 200 and f["finalized"] is True
    cm = hr.cluster_model()
    code, c = post(client, "/hooks/clustermodel/sync", hr.sync_request(cm))
    assert code == 200 and {x["metadata"]["namespace"] for x in c["children"]} == {CFG.namespace}
    code, rel = post(client, "/hooks/clustermodel/customize", hr.customize_request(cm))
    assert code == 200 and rel == {"relatedResources": [
        {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": "clustermodels"}]}
    code, f = post(client, "/hooks/clustermodel/finalize", hr.sync_request(cm, finalizing=True))
    assert code == 200 and f["finalized"] is True


@pytest.mark.parametrize(
    "path",
    ["/hooks/model/sync", "/hooks/model/finalize", "/hooks/clustermodel/sync", "/hooks/model/customize"],
)
def test_bad_parent_answers_400(client, path):
    parent = hr.cluster_model() if "clustermodel" in path else hr.model()
    parent["metadata"].pop("uid")
    body = hr.customize_request(parent) if path.endswith("customize") else hr.sync_request(parent)
    code, err = post(client, path, body)
    assert code == 400 and "uid" in err["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gunicorn(tmp_path):
    key = tmp_path / "signing.key"
    key.write_bytes(b"gunicorn-test-signing-key-0123456789")
    port = _free_port()
    env = {
        **os.environ,
        "AI_MODELS_LISTEN": f"127.0.0.1:{port}",
        "AI_MODELS_HOOK_WORKERS": "1",
        "AI_MODELS_NAMESPACE": "mod-ns",
        "AI_MODELS_REGISTRY": "dmcr.example:5000",
        "AI_MODELS_SIGNING_KEY_FILE": str(key),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "hooks" / "gunicorn_conf.py"), "hooks.app:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"gunicorn did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
    yield port, b"gunicorn-test-signing-key-0123456789"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


def test_upload_session_through_gunicorn(gunicorn):
    port, key = gunicorn
    parent = hr.cluster_model("shared", source={"upload": {}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST",
        "/hooks/clustermodel/sync",
        body=json.dumps(hr.sync_request(parent)),
        headers={"Content-Type": "application/json"},
    )
    r = conn.getresponse()
    answer = json.loads(r.read())
    assert r.status == 200 and set(answer) == {"status", "children", "resyncAfterSeconds"}
    assert answer["status"]["phase"] == "WaitForUpload"
    assert {c["metadata"]["namespace"] for c in answer["children"]} == {"mod-ns"}
    secret = hr.find_child(answer, "Secret", "ai-clustermodel-upload-")
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert token == credentials.upload_token(key, parent["metadata"]["uid"], 0)  # the service's own key
    job = hr.find_child(answer, "Job")
    assert "dmcr.example:5000/ai-models/catalog/cluster/shared/" in json.dumps(job)
    conn.request(
        "POST", "/hooks/clustermodel/sync", body=b"{not json", headers={"Content-Type": "application/json"}
    )
    r = conn.getresponse()
    assert r.status == 400 and "error" in json.loads(r.read())
    conn.close()
