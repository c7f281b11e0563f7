"""DMCR on S3 (moto, real HTTP) with two replicas behind one address.

Two ``docker-registry`` processes share a bucket and ``http.secret``, both in
token mode against the real hook app. The worker's client starts a publish on
replica A; A is killed mid-upload and the address moves to replica B (a TCP
proxy plays the Service); the publish finishes on B with the manifest an
undisturbed publish gets, and ``materialize`` reads it from either replica.
With redirects on, blob GETs go to the bucket, and the registry token never
reaches it (a recording proxy sits in front of moto). The shipped S3 config
(deploy/dmcr/s3) runs on moto, and GC reads its bucket with the credentials
the Secret provides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from devstack.registry import RegistryServer, TokenAuth, free_port
from lib import credentials
from lib.oci.client import RegistryClient, RetryPolicy
from tests.support.dmcr import DmcrServer
from tests.support.publishing import Gate, PublishThread, expected_digest
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, MotoServer, s3_fixture  # noqa: F401  (the s3 fixture)
from tests.support.tcpproxy import TcpProxy

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "dmcr"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def hooks(tmp_path_factory):
    """The token service (the real hook app); its own filesystem registry is not used here."""
    with DmcrServer(tmp_path_factory.mktemp("hooks")) as d:
        yield d


def token_auth(hooks: DmcrServer) -> TokenAuth:
    return TokenAuth(hooks.token_url, hooks.service, hooks.issuer, hooks.workdir / "token.crt")


def repo() -> str:
    u = uuid.uuid4().hex[:12]
    return f"ai-models/catalog/namespaced/s3/m-{u}/{u}"


def materialize(hooks: DmcrServer, tmp_path: Path, host: str, name: str, digest: str) -> Path:
    auth = tmp_path / f"auth-{uuid.uuid4().hex[:6]}.json"
    auth.write_text(credentials.dockerconfigjson(host, *hooks.pull_credential([name])))
    into = tmp_path / f"into-{uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        [sys.executable, "-m", "jobs", "materialize", "--artifact", f"{host}/{name}@{digest}", "--into", str(into),
         "--auth-file", str(auth), "--insecure-registry"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return into


def test_two_replicas_on_one_bucket_survive_losing_one_mid_upload(s3, hooks, tmp_path):
    bucket = f"dmcr-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(bucket)
    with TcpProxy(("127.0.0.1", s3.port), capture=True) as bucket_door:
        storage = s3.registry_storage(bucket, endpoint=f"http://{bucket_door.host}", redirect=True)
        a, b = (RegistryServer(tmp_path / n, storage_config=storage, token=token_auth(hooks)) for n in "ab")
        a.start()
        b.start()
        try:
            with TcpProxy(("127.0.0.1", a.port)) as service:
                name = repo()
                user, pw = hooks.publish_credential(name)
                client = RegistryClient(service.host, username=user, password=pw, insecure=True,
                                        retry=RetryPolicy(attempts=8, base_delay=0.2, max_delay=2, total=90))
                first, gated = os.urandom(1 << 20), os.urandom(6 << 20)
                gate = Gate(gated, pause_at=2 << 20)
                publish = PublishThread(client, name, first, gate)
                publish.start()
                assert gate.paused.wait(60) and publish.error is None  # a.gguf on A, b.gguf mid-PATCH on A

                a.kill()  # replica A dies; the Service now only reaches B
                service.switch(("127.0.0.1", b.port))
                service.cut()
                gate.resume.set()
                publish.join(120)
                assert publish.error is None, publish.error
                assert publish.digest == expected_digest(first, gated)

            a.start()  # back: every replica serves every blob, whoever stored it
            for replica in (a, b):
                into = materialize(hooks, tmp_path, replica.host, name, publish.digest)
                assert (into / "a.gguf").read_bytes() == first
                assert (into / "b.gguf").read_bytes() == gated
        finally:
            a.stop()
            b.stop()
        sent = bytes(bucket_door.received)
    # materialize's blob GETs were redirected to the bucket (presigned URLs) ...
    assert b"X-Amz-Signature=" in sent and b"/docker/registry/v2/blobs/sha256/" in sent
    # ... and nothing the worker sent there carried the registry token
    assert b"Bearer " not in sent


def shipped_s3_config() -> dict:
    doc = yaml.safe_load((DEPLOY / "s3" / "registry-config.yaml").read_text())
    return yaml.safe_load(doc["data"]["config.yml"])


def test_shipped_s3_config_differs_from_the_base_only_in_storage():
    base = yaml.safe_load(yaml.safe_load((DEPLOY / "registry-config.yaml").read_text())["data"]["config.yml"])
    s3cfg = shipped_s3_config()
    assert {k: v for k, v in s3cfg.items() if k != "storage"} == {k: v for k, v in base.items() if k != "storage"}
    storage = s3cfg["storage"]
    assert set(storage["s3"]) >= {"region", "regionendpoint", "bucket", "rootdirectory", "secure"}
    assert "accesskey" not in storage["s3"] and "secretkey" not in storage["s3"]  # from the Secret
    assert storage["delete"]["enabled"] is True and "cache" not in storage
    assert storage["redirect"]["disable"] is True
    for key in ("delete", "maintenance"):
        assert storage[key] == base["storage"][key]


class ShippedConfig(RegistryServer):
    rewritten: dict

    def config(self) -> dict:
        return self.rewritten


def test_shipped_s3_config_runs_and_gc_reads_its_bucket(s3, hooks, tmp_path):
    bucket = f"dmcr-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(bucket)
    cfg = shipped_s3_config()
    port, debug = free_port(), free_port()
    cfg["http"].pop("tls")
    cfg["http"]["addr"], cfg["http"]["debug"]["addr"] = f"127.0.0.1:{port}", f"127.0.0.1:{debug}"
    cfg["http"]["secret"] = "shared-by-every-replica"
    cfg["auth"]["token"].update(realm=hooks.token_url, rootcertbundle=str(hooks.workdir / "token.crt"))
    cfg["storage"]["s3"].update(regionendpoint=s3.endpoint, bucket=bucket, secure=False,
                                accesskey=ACCESS_KEY, secretkey=SECRET_KEY)
    reg = ShippedConfig(tmp_path / "registry", port=port, storage_config=cfg["storage"])
    reg.rewritten = cfg
    with reg:
        assert requests.get(f"http://127.0.0.1:{debug}/debug/health", timeout=5).status_code == 200
        name = repo()
        client = RegistryClient(reg.host, username=(c := hooks.publish_credential(name))[0], password=c[1],
                                insecure=True)
        gate = Gate(b"w" * 1000, pause_at=1000)
        gate.resume.set()
        publish = PublishThread(client, name, b"x" * 1000, gate)
        publish.start()
        publish.join(60)
        assert publish.error is None, publish.error
    # GC on the shipped config as its CronJob gets it: credentials from REGISTRY_STORAGE_S3_*
    gc_cfg = shipped_s3_config()
    gc_cfg["storage"]["s3"].update(regionendpoint=s3.endpoint, bucket=bucket, secure=False)
    path = tmp_path / "gc-config.yml"
    path.write_text(yaml.safe_dump(gc_cfg))
    env = {"PATH": os.environ["PATH"], "REGISTRY_STORAGE_S3_ACCESSKEY": ACCESS_KEY,
           "REGISTRY_STORAGE_S3_SECRETKEY": SECRET_KEY}
    done = subprocess.run(
        [sys.executable, "-m", "jobs", "gc", "--config", str(path), "--window", "", "--result-file",
         str(tmp_path / "gc.json")], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "gc.json").read_text())["gc"]
    assert result["repositories"] == 1 and result["manifests"] == 1 and result["blobs"] == 4
    assert result["blobsDeleted"] == 0
