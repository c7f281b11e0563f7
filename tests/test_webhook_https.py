"""The webhook and the decorator over real HTTPS, served by gunicorn as in the cluster.

The API server only calls webhooks over TLS; this drives the real WSGI app
under gunicorn with a serving certificate and checks the answers the same way
``test_webhook_mutate`` does.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jsonpatch
import pytest
import requests

from devstack.registry import free_port
from devstack.tls import make_ca_and_cert
from tests.test_webhook_mutate import review
from tests.test_workload_hooks import CONTROLLER, model, related, workload

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hook_service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hooks")
    certs = make_ca_and_cert(tmp / "certs")
    key = tmp / "signing.key"
    key.write_text("test-signing-key-0123456789abcdef\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_MODELS_")}
    env.update({
        "AI_MODELS_LISTEN": f"127.0.0.1:{port}",
        "AI_MODELS_HOOK_WORKERS": "1",
        "AI_MODELS_REGISTRY": "dmcr.test:5000",
        "AI_MODELS_SIGNING_KEY_FILE": str(key),
        "AI_MODELS_WORKER_IMAGE": "registry.example.com/ai-models/worker:test",
    })
    log = tmp / "gunicorn.log"
    # A log file, not a pipe: nobody reads gunicorn's stderr while it serves. Popen's and the
    # Session's context managers close the file, the process and the pooled connections.
    with log.open("wb") as err, subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "hooks/gunicorn_conf.py",
         "--certfile", str(certs.cert), "--keyfile", str(certs.key), "hooks.app:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
    ) as proc, requests.Session() as session:
        session.verify = str(certs.ca_cert)
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                session.get(f"{url}/healthz", timeout=1, verify=session.verify).close()
                break
            except requests.RequestException:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError(f"gunicorn did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        try:
            yield url, session
        finally:
            proc.terminate()
            proc.wait(10)


def post(hook_service, path: str, body: dict) -> dict:
    url, session = hook_service
    r = session.post(url + path, json=body, timeout=5, verify=session.verify)
    assert r.status_code == 200, r.text
    return r.json()


def test_decorator_then_webhook_over_https(hook_service):
    obj = workload(model_names="bge-m3")
    m = model("bge-m3")
    resp = post(hook_service, "/hooks/workload/sync",
                {"controller": CONTROLLER, "object": obj, "attachments": {"Secret.v1": {}},
                 "related": related(m), "finalizing": False})
    obj["metadata"]["annotations"].update(resp["annotations"])
    rv = review(obj, old=obj)
    out = post(hook_service, "/webhooks/workload/mutate", rv)["response"]
    assert out["uid"] == rv["request"]["uid"] and out["allowed"] and out["patchType"] == "JSONPatch"
    mutated = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(out["patch"])))
    [init] = mutated["spec"]["template"]["spec"]["initContainers"]
    assert init["image"] == "registry.example.com/ai-models/worker:test"  # config from the environment
    assert m["status"]["artifact"]["uri"] in init["args"]


def test_bad_review_is_400_over_https(hook_service):
    url, session = hook_service
    r = session.post(url + "/webhooks/workload/mutate", data=b"{", timeout=5, verify=session.verify)
    assert r.status_code == 400 and r.json()["error"]
