"""Worker commands close the connections they open, on success and on failure.

A ``RegistryClient`` or an ``S3Storage`` owns a ``requests.Session`` (a pool of
sockets); left to the garbage collector, the sockets stay open until it runs.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from devstack.registry import RegistryServer
from jobs import gc_storage
from jobs.cli import main
from lib.api.worker_cli import Publish
from lib.oci.client import RegistryClient

MISSING = "sha256:" + "cd" * 32


def spy_close(monkeypatch: pytest.MonkeyPatch, cls: type) -> list[Any]:
    """Every instance of ``cls`` closed during the test, in order."""
    seen: list[Any] = []
    real = cls.close

    def close(self: Any) -> None:
        seen.append(self)
        real(self)

    monkeypatch.setattr(cls, "close", close)
    return seen


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[RegistryClient]:
    """Every RegistryClient closed during the test."""
    return spy_close(monkeypatch, RegistryClient)


def test_publish_closes_its_client_when_the_source_is_refused(closed, tmp_path: Path):
    argv = Publish(
        source="ftp://example.com/model.gguf",
        destination=f"127.0.0.1:1/closing/{uuid.uuid4().hex[:12]}",
        model_name="x",
        insecure_registry=True,
        result_file=str(tmp_path / "result.json"),
    ).argv()
    assert main(argv) == 2
    assert json.loads((tmp_path / "result.json").read_text())["error"]["reason"] == "UnsupportedSource"
    assert len(closed) == 1


def test_cleanup_closes_its_client(closed, registry: RegistryServer, tmp_path: Path):
    argv = ["cleanup", "--artifact", f"{registry.host}/closing/{uuid.uuid4().hex[:12]}@{MISSING}",
            "--insecure-registry", "--result-file", str(tmp_path / "result.json")]
    main(argv)
    assert len(closed) == 1


def test_materialize_closes_its_client_when_the_artifact_is_missing(closed, registry: RegistryServer,
                                                                     tmp_path: Path):
    artifact = f"{registry.host}/closing/{uuid.uuid4().hex[:12]}@{MISSING}"
    assert main(["materialize", "--artifact", artifact, "--into", str(tmp_path / "m"), "--insecure-registry"]) == 1
    assert len(closed) == 1


class Recording(requests.Session):
    def __init__(self, name: str, calls: list[str]) -> None:
        super().__init__()
        self.name, self.calls = name, calls

    def close(self) -> None:
        self.calls.append(self.name)
        super().close()


def test_s3_storage_closes_the_session_it_created_only(monkeypatch: pytest.MonkeyPatch):
    calls: list[str] = []
    monkeypatch.setattr(gc_storage.requests, "Session", lambda: Recording("own", calls))
    kw = {"bucket": "b", "region": "r", "access_key": "a", "secret_key": "s", "endpoint": "127.0.0.1:1"}
    with Recording("given", calls) as given:
        gc_storage.S3Storage(**kw, session=given).close()
        gc_storage.S3Storage(**kw).close()
        assert calls == ["own"]
    assert calls == ["own", "given"]  # the caller's, when it is done with it


def test_gc_closes_its_storage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    closed: list[gc_storage.Storage] = []
    monkeypatch.setattr(gc_storage.FilesystemStorage, "close", lambda self: closed.append(self))
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"storage": {"filesystem": {"rootdirectory": str(tmp_path / "root")}}}))
    result = tmp_path / "result.json"
    code = main(["gc", "--config", str(config), "--window", "", "--dry-run", "--result-file", str(result)])
    assert code == 0, result.read_text()
    assert len(closed) == 1


def test_publish_closes_its_source_when_the_registry_is_unreachable(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path):
    """The Hub source's session (its pooled sockets to the Hub) is closed when the publish is over,
    not when the process exits: the upload server and the tests run many publishes in one process."""
    from devstack.hf_hub import HubStandIn
    from lib.sources.huggingface import HuggingFaceSource

    closed_sources = spy_close(monkeypatch, HuggingFaceSource)
    with HubStandIn() as hub:
        hub.add_repo("acme/tiny", {"config.json": b"{}", "model.safetensors": b"x" * 64})
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        argv = Publish(
            source="https://huggingface.co/acme/tiny",
            destination=f"127.0.0.1:1/closing/{uuid.uuid4().hex[:12]}",
            model_name="x", insecure_registry=True, result_file=str(tmp_path / "result.json"),
        ).argv()
        assert main(argv) != 0
    assert "error" in json.loads((tmp_path / "result.json").read_text())
    assert len(closed_sources) == 1


def test_a_snapshot_releases_its_source_once():
    from lib.sources.base import SourceSnapshot

    calls: list[str] = []
    snap = SourceSnapshot(resolved_type="HuggingFace", files=[], release=lambda: calls.append("release"))
    snap.close()
    snap.close()
    assert calls == ["release"]


def test_a_source_whose_snapshot_fails_is_closed_at_once():
    from lib.errors import SourceError
    from lib.sources.base import SourceSnapshot, owned_snapshot

    class Refused:
        closed = 0

        def snapshot(self) -> SourceSnapshot:
            raise SourceError("SourceUnavailable", "503")

        def close(self) -> None:
            self.closed += 1

    src = Refused()
    with pytest.raises(SourceError):
        owned_snapshot(src)
    assert src.closed == 1
