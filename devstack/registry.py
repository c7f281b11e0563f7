"""A real OCI registry (Debian's ``docker-registry``, distribution 2.8) for the local stack and the tests.

Each ``RegistryServer`` runs its own process on a free loopback port with its
own storage directory, optionally with TLS, htpasswd or token auth, so tests
can restart or kill it (fault tests) without touching each other.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def htpasswd_line(user: str, password: str) -> str:
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}"


@dataclass
class TokenAuth:
    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass
class RegistryServer:
    workdir: Path
    port: int = field(default_factory=free_port)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    htpasswd: dict[str, str] | None = None
    token: TokenAuth | None = None
    storage: Path | None = None
    # The whole ``storage:`` section instead of a filesystem directory (e.g. ``MotoServer.registry_storage``).
    storage_config: dict | None = None
    # ``http.secret``: replicas behind one address share it, so each accepts the others' upload state.
    http_secret: str = "ai-models-test-secret"
    proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        """``host:port`` as used in references."""
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def config(self) -> dict:
        storage = self.storage or (self.workdir / "storage")
        cfg: dict = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": self.storage_config or {
                "filesystem": {"rootdirectory": str(storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": self.http_secret},
        }
        if self.tls_cert and self.tls_key:
            cfg["http"]["tls"] = {"certificate": str(self.tls_cert), "key": str(self.tls_key)}
        if self.htpasswd is not None:
            path = self.workdir / "htpasswd"
            path.write_text("\n".join(htpasswd_line(u, p) for u, p in self.htpasswd.items()) + "\n")
            cfg["auth"] = {"htpasswd": {"realm": "test-realm", "path": str(path)}}
        elif self.token is not None:
            cfg["auth"] = {
                "token": {
                    "realm": self.token.realm,
                    "service": self.token.service,
                    "issuer": self.token.issuer,
                    "rootcertbundle": str(self.token.rootcertbundle),
                }
            }
        return cfg

    def start(self, timeout: float = 15.0) -> RegistryServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / "config.yml"
        cfg_path.write_text(yaml.safe_dump(self.config()))
        log = open(self.workdir / "registry.log", "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        if "s3" in (self.storage_config or {}):
            # distribution 2.8's s3 driver fails at start-up with AWS_CA_BUNDLE set, and would
            # pick up AWS_* credentials and proxies: give it a clean environment.
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir)}
        self.proc = subprocess.Popen(
            [BINARY, "serve", str(cfg_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        verify = str(self.tls_cert_ca) if self.tls_cert_ca else False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited: {(self.workdir / 'registry.log').read_text()[-2000:]}"
                )
            try:
                requests.get(f"{self.url}/v2/", timeout=1, verify=verify)
                return self
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start in time")

    tls_cert_ca: Path | None = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crashed registry would go."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
