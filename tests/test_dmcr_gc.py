"""``python -m jobs gc`` against real registries (filesystem and S3 via moto): GC
while a publish is half-way keeps everything that publish committed, and the
artifact it then finishes is complete and pullable; a deleted model (cleanup's
``delete_artifact``) loses its blobs and its repository. distribution's own
``garbage-collect`` is shown to break the same half-way publish.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from devstack.registry import BINARY, RegistryServer
from jobs.cleanup import delete_artifact
from jobs.gc import blob_path, manifest_refs, parse_duration, scan_repositories, window_fence
from jobs.gc_storage import Storage, from_registry_config
from lib.oci.client import RegistryClient
from tests.support.publishing import Gate, PublishThread, expected_digest, sha256
from tests.support.s3 import MotoServer, s3_fixture  # noqa: F401  (the s3 fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


def repo(tag: str) -> str:
    u = uuid.uuid4().hex[:12]
    return f"ai-models/catalog/namespaced/gc/{tag}-{u}/{u}"


@pytest.fixture(params=["filesystem", "s3"])
def registry(request, tmp_path, s3: MotoServer):
    storage = None
    if request.param == "s3":
        bucket = f"gc-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(bucket)
        storage = s3.registry_storage(bucket)
    reg = RegistryServer(tmp_path / "registry", storage_config=storage).start()
    yield reg
    reg.stop()


def storage_of(reg: RegistryServer) -> Storage:
    return from_registry_config(yaml.safe_load((reg.workdir / "config.yml").read_text()), env={})


def run_gc(reg: RegistryServer, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / f"gc-{uuid.uuid4().hex[:6]}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AI_MODELS_", "REGISTRY_"))}
    done = subprocess.run(
        [sys.executable, "-m", "jobs", "gc", "--config", str(reg.workdir / "config.yml"), "--window", "",
         "--result-file", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(out.read_text())["gc"]


def publish_whole(client: RegistryClient, name: str) -> tuple[str, bytes, bytes]:
    first, second = os.urandom(300_000), os.urandom(200_000)
    gate = Gate(second, pause_at=len(second))
    gate.resume.set()
    t = PublishThread(client, name, first, gate)
    t.start()
    t.join(60)
    assert t.error is None and t.digest, t.error
    return t.digest, first, second


def materialize(reg: RegistryServer, tmp_path: Path, name: str, digest: str) -> Path:
    into = tmp_path / f"into-{uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        [sys.executable, "-m", "jobs", "materialize", "--artifact", f"{reg.host}/{name}@{digest}",
         "--into", str(into), "--insecure-registry"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return into


def test_gc_during_a_publish_keeps_it_whole_and_reclaims_a_deleted_model(registry, tmp_path):
    client = RegistryClient(registry.host, insecure=True)
    kept, deleted, running = repo("kept"), repo("deleted"), repo("running")
    kept_digest, *_ = publish_whole(client, kept)
    gone_digest, gone_a, gone_b = publish_whole(client, deleted)
    cleanup = delete_artifact(client, deleted, gone_digest)  # what the cleanup Job does
    assert cleanup["deleted"] and cleanup["blobsUnlinked"] == 3  # config + two layers (the config data is shared)

    first, gated = os.urandom(400_000), os.urandom(3 << 20)
    gate = Gate(gated, pause_at=1 << 20)
    publish = PublishThread(client, running, first, gate)
    publish.start()
    assert gate.paused.wait(60) and publish.error is None  # config + a.gguf committed, b.gguf mid-PATCH

    result = run_gc(registry, tmp_path)
    storage = storage_of(registry)
    assert result["complete"] is True and result["blobsDeleted"] >= 3  # two layers + the deleted manifest
    for d in (sha256(gone_a), sha256(gone_b), gone_digest):
        assert storage.read(blob_path(d), 1) is None, d
    assert deleted not in scan_repositories(storage)  # its links, tags, revisions: all gone
    assert storage.read(blob_path(sha256(first)), 1) is not None  # committed, no manifest yet: kept
    assert result["keptByGrace"] >= 1

    gate.resume.set()
    publish.join(120)
    assert publish.error is None, publish.error
    assert publish.digest == expected_digest(first, gated)  # identical to an undisturbed publish
    into = materialize(registry, tmp_path, running, publish.digest)
    assert (into / "a.gguf").read_bytes() == first and (into / "b.gguf").read_bytes() == gated
    materialize(registry, tmp_path, kept, kept_digest)

    again = run_gc(registry, tmp_path)  # nothing left to take: everything is referenced
    assert again["blobsDeleted"] == 0 and again["unreferenced"] == 0 and again["keptByGrace"] == 0


def test_links_older_than_the_grace_no_longer_keep_a_blob(registry, tmp_path):
    """An abandoned publish (blobs committed, no manifest ever) is reclaimed after the grace."""
    client = RegistryClient(registry.host, insecure=True)
    name = repo("abandoned")
    data = os.urandom(50_000)
    client.push_blob(name, [data], digest=sha256(data), size=len(data))
    assert run_gc(registry, tmp_path)["blobsDeleted"] == 0
    result = run_gc(registry, tmp_path, "--grace", "0s")
    assert result["blobsDeleted"] == 1 and result["repositoriesDeleted"] == 1
    assert client.blob_exists(name, sha256(data)) is None


def test_distributions_own_gc_breaks_a_publish_half_way(tmp_path):
    """Why the module has its own GC: ``registry garbage-collect`` removes a blob a
    publish committed a moment before its manifest."""
    with RegistryServer(tmp_path / "registry") as reg:
        client = RegistryClient(reg.host, insecure=True)
        name = repo("victim")
        data = os.urandom(50_000)
        client.push_blob(name, [data], digest=sha256(data), size=len(data))
        done = subprocess.run([BINARY, "garbage-collect", str(reg.workdir / "config.yml")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert storage_of(reg).read(blob_path(sha256(data)), 1) is None


def test_the_window_fence():
    at = lambda hhmm: 1767225600 + int(hhmm[:2]) * 3600 + int(hhmm[3:]) * 60  # 2026-01-01 UTC  # noqa: E731
    assert window_fence("", at("12:00")) == (float("inf"), "")
    assert window_fence("03:00-03:30", at("12:00"))[0] is None  # outside
    budget, why = window_fence("03:00-03:30", at("03:02"))
    assert budget is None and "360 s" in why  # push tokens of 02:59 still valid
    assert window_fence("03:00-03:30", at("03:10")) == (20 * 60 - 60, "")  # stops a minute early
    assert window_fence("23:50-00:20", at("00:00"))[0] == 20 * 60 - 60  # wraps midnight
    with pytest.raises(ValueError):
        window_fence("3am", at("03:10"))


def test_durations_and_manifest_references():
    assert parse_duration("48h") == 172800 and parse_duration("90") == 90 and parse_duration("0s") == 0
    index = json.dumps({"manifests": [{"digest": "sha256:" + "a" * 64}], "subject": {"digest": "sha256:" + "b" * 64}})
    assert manifest_refs(index.encode(), "x") == {"sha256:" + "a" * 64, "sha256:" + "b" * 64}
    with pytest.raises(ValueError, match="refusing to sweep"):
        manifest_refs(b"not json", "sha256:" + "c" * 64)
