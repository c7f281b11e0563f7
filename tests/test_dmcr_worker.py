"""The worker's own commands against a real token-auth DMCR: publish with the
publish credential, materialize with a workload's pull credential, each
refused with any other credential. (Cleanup: ``test_dmcr_cleanup.py``.)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from devstack.models import make_gguf
from tests.support.dmcr import OCI_MANIFEST, DmcrServer, dmcr_fixture  # noqa: F401  (the dmcr fixture)

ROOT = Path(__file__).resolve().parents[1]


def repo(ns: str = "team-a") -> str:
    u = uuid.uuid4().hex[:12]
    return f"ai-models/catalog/namespaced/{ns}/m-{u}/{u}"


def worker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def auth(dmcr: DmcrServer, tmp_path: Path, cred: tuple[str, str]) -> str:
    return str(dmcr.auth_file(tmp_path / f"auth-{uuid.uuid4().hex[:8]}.json", *cred))


def materialize(dmcr: DmcrServer, tmp_path: Path, uri: str, cred: tuple[str, str]) -> tuple[subprocess.CompletedProcess, Path]:
    into = tmp_path / f"models-{uuid.uuid4().hex[:8]}"
    done = worker("materialize", "--artifact", uri, "--into", str(into), "--auth-file", auth(dmcr, tmp_path, cred),
                  "--insecure-registry")
    return done, into


def manifest_exists(dmcr: DmcrServer, name: str) -> bool:
    tok = dmcr.token(*dmcr.pull_credential([name]), [f"repository:{name}:pull"]).json()["token"]
    r = requests.get(f"{dmcr.url}/v2/{name}/tags/list", headers={"Authorization": f"Bearer {tok}"}, timeout=5)
    return r.status_code == 200 and bool(r.json().get("tags"))


# --- materialize: the workload's pull credential ----------------------------------------


def test_materialize_with_the_workloads_pull_credential(dmcr, tmp_path):
    own, cluster = repo(), f"ai-models/catalog/cluster/c-{uuid.uuid4().hex[:8]}/u"
    data = os.urandom(4096)
    digest, _ = dmcr.push_artifact(own, (), data=data)
    cdigest, _ = dmcr.push_artifact(cluster, (), data=b"cluster weights")
    cred = dmcr.pull_credential([own, cluster])
    for name, d, expected in ((own, digest, data), (cluster, cdigest, b"cluster weights")):
        done, into = materialize(dmcr, tmp_path, f"{dmcr.host}/{name}@{d}", cred)
        assert done.returncode == 0, done.stderr
        assert (into / "model.gguf").read_bytes() == expected


@pytest.mark.parametrize("which", ["other-models-pull", "other-repo-publish", "made-up", "tampered"])
def test_materialize_is_refused_with_any_other_credential(dmcr, tmp_path, which):
    mine, other = repo(), repo("team-b")
    digest, _ = dmcr.push_artifact(mine, ())
    _, pw = dmcr.pull_credential([other])
    cred = {
        "other-models-pull": dmcr.pull_credential([other]),
        "other-repo-publish": dmcr.publish_credential(other),
        "made-up": (f"pull;{mine}", hashlib.sha256(b"guess").hexdigest()),
        "tampered": (f"pull;{mine}", pw),
    }[which]
    done, into = materialize(dmcr, tmp_path, f"{dmcr.host}/{mine}@{digest}", cred)
    assert done.returncode != 0
    assert "denied" in done.stderr.lower() or "refused the credentials" in done.stderr.lower(), done.stderr
    assert not (into / "model.gguf").exists()


# --- publish: the Model's publish credential --------------------------------------------


def publish(dmcr: DmcrServer, tmp_path: Path, source: Path, name: str, cred: tuple[str, str]) -> tuple[int, dict]:
    result = tmp_path / f"result-{uuid.uuid4().hex[:8]}.json"
    done = worker("publish", "--source", str(source), "--destination", f"{dmcr.host}/{name}",
                  "--registry-auth-file", auth(dmcr, tmp_path, cred), "--insecure-registry",
                  "--result-file", str(result))
    assert result.exists(), done.stderr[-3000:]
    return done.returncode, json.loads(result.read_text())


def test_publish_with_its_credential_then_pull_it(dmcr, tmp_path):
    name = repo()
    source = make_gguf(tmp_path / "tiny.gguf")
    code, result = publish(dmcr, tmp_path, source, name, dmcr.publish_credential(name))
    assert code == 0, result
    uri = result["artifact"]["uri"]
    assert uri.startswith(f"{dmcr.host}/{name}@sha256:")
    done, into = materialize(dmcr, tmp_path, uri, dmcr.pull_credential([name]))
    assert done.returncode == 0, done.stderr
    assert (into / "tiny.gguf").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("which", ["other-repo-publish", "pull", "cleanup", "made-up"])
def test_publish_is_refused_with_any_other_credential(dmcr, tmp_path, which):
    name, other = repo(), repo("team-b")
    cred = {
        "other-repo-publish": dmcr.publish_credential(other),
        "pull": dmcr.pull_credential([name]),
        "cleanup": dmcr.cleanup_credential(name),
        "made-up": (f"push;{name}", "1" * 64),
    }[which]
    code, result = publish(dmcr, tmp_path, make_gguf(tmp_path / "tiny.gguf"), name, cred)
    assert code != 0 and "error" in result and "artifact" not in result
    message = result["error"]["message"].lower()
    assert "denied" in message or "refused the credentials" in message, result
    assert not manifest_exists(dmcr, name)
