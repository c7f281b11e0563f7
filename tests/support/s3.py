"""A real S3 server for tests: ``moto`` in server mode, on a free loopback port.

moto lives in its own virtualenv (``.venv/s3server``, ``requirements-s3server.txt``,
installed by ``make deps``): its botocore pins ``python-dateutil<3`` while the
``kubernetes`` client needs ``>=3``, so the two cannot share ``.venv``. It runs
as a separate process anyway. ``MotoServer`` starts it, makes buckets and lists
keys (plain HTTP; moto does not check signatures), so tests can see what the
registry and the GC wrote.

    with MotoServer(tmp_path) as s3:
        s3.create_bucket("dmcr")
        cfg = s3.registry_storage("dmcr")   # storage: section for docker-registry
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.registry import free_port

ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY, SECRET_KEY, REGION = "ai-models-test", "ai-models-test-secret", "us-east-1"


def moto_binary() -> str | None:
    """``moto_server`` of the project's S3 virtualenv, else one on PATH."""
    local = ROOT / ".venv" / "s3server" / "bin" / "moto_server"
    return str(local) if local.exists() else shutil.which("moto_server")


@dataclass
class MotoServer:
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoServer:
        binary = moto_binary()
        if binary is None:
            raise RuntimeError("moto_server not installed: run `make deps` (requirements-s3server.txt)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "moto.log", "ab")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir)}
        self.proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited: {(self.workdir / 'moto.log').read_text()[-2000:]}")
            try:
                requests.get(self.endpoint + "/", timeout=1)
                return self
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def create_bucket(self, bucket: str) -> None:
        requests.put(f"{self.endpoint}/{bucket}", timeout=10).raise_for_status()

    def keys(self, bucket: str, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix`` (ListObjectsV2, paginated)."""
        token = ""
        while True:
            params = {"list-type": "2", "prefix": prefix, **({"continuation-token": token} if token else {})}
            r = requests.get(f"{self.endpoint}/{bucket}", params=params, timeout=30)
            r.raise_for_status()
            yield from re.findall(r"<Key>(.*?)</Key>", r.text)
            m = re.search(r"<NextContinuationToken>(.*?)</NextContinuationToken>", r.text)
            if not m:
                return
            token = m.group(1)

    def registry_storage(
        self, bucket: str, *, endpoint: str | None = None, rootdirectory: str = "/dmcr", redirect: bool = False
    ) -> dict[str, Any]:
        """The ``storage:`` section of a docker-registry config on this server (``s3aws`` driver).

        ``endpoint`` replaces the server's address (e.g. a recording proxy in front of it);
        distribution 2.8 uses path-style URLs whenever ``regionendpoint`` is set.
        """
        return {
            "s3": {
                "region": REGION,
                "regionendpoint": endpoint or self.endpoint,
                "bucket": bucket,
                "rootdirectory": rootdirectory,
                "secure": False,
                "accesskey": ACCESS_KEY,
                "secretkey": SECRET_KEY,
            },
            "delete": {"enabled": True},
            "redirect": {"disable": not redirect},
            "maintenance": {"uploadpurging": {"enabled": False}},
        }


@pytest.fixture(scope="module", name="s3")
def s3_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto S3 server shared by a test module (use a bucket per test).

    Import ``s3_fixture`` into a test module to use the ``s3`` fixture.
    """
    if moto_binary() is None:
        pytest.fail("moto_server is not installed: run `make deps` (requirements-s3server.txt)")
    with MotoServer(tmp_path_factory.mktemp("s3")) as server:
        yield server
