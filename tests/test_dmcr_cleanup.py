"""``python -m jobs cleanup`` against a real token-auth DMCR and the real hook app.

The cleanup Job's credential may delete in its own repository only; the
command deletes the manifest by digest and every tag pointing to it, leaves
other tags alone, and is idempotent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from jobs import cleanup
from jobs.cli import main
from lib.oci.client import RegistryClient, RetryPolicy
from tests.support.dmcr import OCI_MANIFEST, DmcrServer, dmcr_fixture  # noqa: F401  (the dmcr fixture)

ROOT = Path(__file__).resolve().parents[1]


def repo() -> str:
    u = uuid.uuid4().hex[:12]
    return f"ai-models/catalog/namespaced/team-a/m-{u}/{u}"


def run_cli(dmcr: DmcrServer, tmp_path: Path, artifact: str, cred: tuple[str, str] | None) -> tuple[int, dict]:
    """The real command line in a child process, as the cleanup Job runs it."""
    result = tmp_path / f"result-{uuid.uuid4().hex[:6]}.json"
    args = [sys.executable, "-m", "jobs", "cleanup", "--artifact", artifact, "--insecure-registry",
            "--result-file", str(result)]
    if cred:
        args += ["--auth-file", str(dmcr.auth_file(tmp_path / f"auth-{uuid.uuid4().hex[:6]}.json", *cred))]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    doc = json.loads(result.read_text())
    assert json.loads(done.stdout.strip().splitlines()[-1]) == doc  # also echoed for kubectl logs
    return done.returncode, doc


def run_inprocess(dmcr: DmcrServer, tmp_path: Path, artifact: str, cred: tuple[str, str] | None) -> tuple[int, dict]:
    result = tmp_path / f"result-{uuid.uuid4().hex[:6]}.json"
    argv = ["cleanup", "--artifact", artifact, "--insecure-registry", "--result-file", str(result)]
    if cred:
        argv += ["--auth-file", str(dmcr.auth_file(tmp_path / f"auth-{uuid.uuid4().hex[:6]}.json", *cred))]
    code = main(argv)
    return code, json.loads(result.read_text())


def manifest_status(dmcr: DmcrServer, name: str, ref: str) -> int:
    tok = dmcr.token(*dmcr.pull_credential([name]), [f"repository:{name}:pull"]).json()["token"]
    r = requests.get(f"{dmcr.url}/v2/{name}/manifests/{ref}", timeout=5,
                     headers={"Authorization": f"Bearer {tok}", "Accept": OCI_MANIFEST})
    return r.status_code


def tags(dmcr: DmcrServer, name: str) -> list[str]:
    tok = dmcr.token(*dmcr.pull_credential([name]), [f"repository:{name}:pull"]).json()["token"]
    r = requests.get(f"{dmcr.url}/v2/{name}/tags/list", headers={"Authorization": f"Bearer {tok}"}, timeout=5)
    return sorted(r.json().get("tags") or []) if r.status_code == 200 else []


def test_cleanup_deletes_manifest_and_its_tags_only(dmcr, tmp_path):
    name = repo()
    digest, _ = dmcr.push_artifact(name, ("v1", "latest"))
    other, _ = dmcr.push_artifact(name, ("other",))
    artifact = f"{dmcr.host}/{name}@{digest}"

    code, result = run_cli(dmcr, tmp_path, artifact, dmcr.cleanup_credential(name))
    assert code == 0, result
    assert result == {
        "artifact": {"uri": artifact, "digest": digest},
        "cleanup": {"deleted": True, "alreadyAbsent": False, "tags": ["latest", "v1"], "blobsUnlinked": 1},
    }
    assert manifest_status(dmcr, name, digest) == 404
    assert manifest_status(dmcr, name, "v1") == 404
    assert tags(dmcr, name) == ["other"]
    assert manifest_status(dmcr, name, other) == 200


def test_cleanup_is_idempotent(dmcr, tmp_path):
    name = repo()
    digest, _ = dmcr.push_artifact(name, ())  # pushed by digest only, as publish may
    artifact = f"{dmcr.host}/{name}@{digest}"
    cred = dmcr.cleanup_credential(name)
    first = run_inprocess(dmcr, tmp_path, artifact, cred)
    assert first[0] == 0 and first[1]["cleanup"] == {"deleted": True, "alreadyAbsent": False, "tags": [], "blobsUnlinked": 2}
    again = run_inprocess(dmcr, tmp_path, artifact, cred)
    assert again[0] == 0 and again[1]["cleanup"] == {"deleted": False, "alreadyAbsent": True, "tags": [], "blobsUnlinked": 0}
    assert manifest_status(dmcr, name, digest) == 404


def test_cleanup_of_a_repository_that_never_existed_succeeds(dmcr, tmp_path):
    name = repo()
    digest = "sha256:" + "ab" * 32
    code, result = run_inprocess(dmcr, tmp_path, f"{dmcr.host}/{name}@{digest}", dmcr.cleanup_credential(name))
    assert code == 0 and result["cleanup"]["alreadyAbsent"] is True


@pytest.mark.parametrize("which", ["other-repo-cleanup", "publish", "pull", "made-up", "tampered", "anonymous"])
def test_cleanup_with_the_wrong_credential_fails_clearly_and_deletes_nothing(dmcr, tmp_path, which):
    name = repo()
    digest, _ = dmcr.push_artifact(name, ("v1",))
    cleanup_user, cleanup_pw = dmcr.cleanup_credential(repo())
    cred = {
        "other-repo-cleanup": (cleanup_user, cleanup_pw),
        "publish": dmcr.publish_credential(name),
        "pull": dmcr.pull_credential([name]),
        "made-up": (f"delete;{name}", "0" * 64),
        "tampered": (f"delete;{name}", cleanup_pw),
        "anonymous": None,
    }[which]
    runner = run_cli if which == "tampered" else run_inprocess
    code, result = runner(dmcr, tmp_path, f"{dmcr.host}/{name}@{digest}", cred)
    assert code == 2, result
    assert result["error"]["reason"] == "CleanupFailed"
    assert result["registryError"]["type"] == "AuthError"
    assert result["error"]["message"].startswith("AuthError:")
    assert cleanup_pw not in json.dumps(result)
    assert manifest_status(dmcr, name, digest) == 200
    assert tags(dmcr, name) == ["v1"]


def test_artifact_without_digest_is_refused(dmcr, tmp_path):
    name = repo()
    dmcr.push_artifact(name, ("v1",))
    for artifact in (f"{dmcr.host}/{name}:v1", "not a reference"):
        code, result = run_inprocess(dmcr, tmp_path, artifact, dmcr.cleanup_credential(name))
        assert code == 2 and result["error"]["reason"] == "CleanupFailed"
        assert "--artifact" in result["error"]["message"]
    assert tags(dmcr, name) == ["v1"]


def test_unreachable_registry_is_transient(tmp_path, monkeypatch):
    from devstack.registry import free_port

    def fast(registry, **kw):
        return RegistryClient(registry, insecure=kw["insecure"], retry=RetryPolicy(attempts=2, base_delay=0.01))

    monkeypatch.setattr(cleanup, "registry_client", fast)
    result = tmp_path / "r.json"
    code = main(["cleanup", "--artifact", f"127.0.0.1:{free_port()}/x/y@sha256:{'cd' * 32}",
                 "--insecure-registry", "--result-file", str(result)])
    doc = json.loads(result.read_text())
    assert code == 1 and doc["error"]["reason"] == "RegistryUnavailable"
    assert doc["registryError"]["type"] == "Unreachable"
