"""DMCR as tests see it: a real ``docker-registry`` in token-auth mode whose
realm is the real hook app's ``/registry/token``, served on a free port.

``DmcrServer`` generates a fresh token signing key and certificate, runs
``create_app(Config(...))`` under werkzeug in a thread, and starts the
registry trusting that certificate. Tests mint credentials with the exposed
``config.signing_key`` (``lib.credentials``) and hand them to the worker as a
Docker config file (``auth_file``).

    with DmcrServer(tmp_path) as dmcr:
        user, pw = dmcr.publish_credential("ai-models/catalog/x")
        auth = dmcr.auth_file(tmp_path / "auth.json", user, pw)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from devstack.registry import RegistryServer, TokenAuth, free_port
from hooks.app import create_app
from lib import credentials, registry_token
from lib.config import Config

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: object, **kwargs: object) -> None:  # no access log in test output
        pass


@dataclass
class DmcrServer:
    workdir: Path
    key_pem: bytes | None = None  # default: a fresh EC P-256 key
    signing_key: bytes = b"dmcr-test-signing-key-0123456789"
    service: str = "dmcr"
    issuer: str = "ai-models"
    registry: RegistryServer | None = None
    config: Config = field(init=False)
    _server: BaseWSGIServer | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> DmcrServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        key_pem = self.key_pem or registry_token.generate_signing_key("ec")
        cert = registry_token.self_signed_certificate(key_pem, now=dt.datetime.now(dt.UTC))
        (self.workdir / "token.key").write_bytes(key_pem)
        bundle = self.workdir / "token.crt"
        bundle.write_bytes(cert)

        reg_port = free_port()
        self.config = Config(
            registry=f"127.0.0.1:{reg_port}",
            signing_key=self.signing_key,
            token_key_pem=key_pem,
            token_service=self.service,
            token_issuer=self.issuer,
            registry_insecure=True,
        )
        self._server = make_server(
            "127.0.0.1", 0, create_app(self.config), threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

        self.registry = RegistryServer(
            self.workdir / "registry",
            port=reg_port,
            token=TokenAuth(self.token_url, self.service, self.issuer, bundle),
        )
        try:
            self.registry.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.registry:
            self.registry.stop()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> DmcrServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses ---------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}/registry/token"

    @property
    def host(self) -> str:
        """Registry ``host:port`` (plain HTTP: pass ``--insecure-registry``)."""
        assert self.registry is not None
        return self.registry.host

    @property
    def url(self) -> str:
        assert self.registry is not None
        return self.registry.url

    @property
    def cert_pem(self) -> bytes:
        return (self.workdir / "token.crt").read_bytes()

    # --- credentials -------------------------------------------------------------------

    def publish_credential(self, repository: str) -> tuple[str, str]:
        return credentials.publish_credential(self.config.signing_key, repository)

    def cleanup_credential(self, repository: str) -> tuple[str, str]:
        return credentials.cleanup_credential(self.config.signing_key, repository)

    def pull_credential(self, repositories: list[str]) -> tuple[str, str]:
        return credentials.pull_credential(self.config.signing_key, repositories)

    def auth_file(self, path: Path, username: str, password: str) -> Path:
        """Write a Docker config JSON (a dockerconfigjson Secret's value) for this registry."""
        path.write_text(credentials.dockerconfigjson(self.host, username, password))
        return path

    def token(
        self, username: str | None, password: str | None, scopes: list[str] | tuple[str, ...] = ()
    ) -> requests.Response:
        """Ask the token service as a registry client would."""
        auth = (username, password) if username is not None and password is not None else None
        return requests.get(
            self.token_url,
            params={"service": self.service, "scope": list(scopes)},
            auth=auth,
            timeout=10,
        )

    def push_artifact(self, repository: str, tags: tuple[str, ...] = ("v1",), *, data: bytes | None = None,
                      ) -> tuple[str, str]:
        """Push a small ModelPack-shaped artifact over raw HTTP with the repository's publish
        credential, under each tag (or by digest only when ``tags`` is empty).

        Returns ``(manifest digest, weight layer digest)``.
        """
        auth = {"Authorization": "Bearer " + self.token(
            *self.publish_credential(repository), [f"repository:{repository}:pull,push"]
        ).json()["token"]}

        def blob(content: bytes) -> str:
            digest = "sha256:" + hashlib.sha256(content).hexdigest()
            r = requests.post(f"{self.url}/v2/{repository}/blobs/uploads/", headers=auth, timeout=10)
            r.raise_for_status()
            r = requests.put(r.headers["Location"], params={"digest": digest}, data=content, headers=auth,
                             timeout=10)
            r.raise_for_status()
            return digest

        layer = data if data is not None else os.urandom(256)
        config, weights = blob(b"{}"), blob(layer)
        body = json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.cncf.model.manifest.v1+json",
            "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": weights,
                        "size": len(layer), "annotations": {"org.cncf.model.filepath": "model.gguf"}}],
        }).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        for ref in tags or (digest,):
            r = requests.put(f"{self.url}/v2/{repository}/manifests/{ref}", data=body, timeout=10,
                             headers={**auth, "Content-Type": OCI_MANIFEST})
            r.raise_for_status()
        return digest, weights

    def mint(self, subject: str, access: list[registry_token.Access], *, now: float, ttl: int = 300) -> str:
        """A token signed with this DMCR's key, bypassing the service (e.g. expired ones)."""
        assert self.config.token_key_pem is not None
        return registry_token.mint(
            key_pem=self.config.token_key_pem,
            issuer=self.issuer,
            audience=self.service,
            subject=subject,
            access=access,
            now=now,
            ttl=ttl,
        )


@pytest.fixture(scope="module", name="dmcr")
def dmcr_fixture(tmp_path_factory: pytest.TempPathFactory):
    """A token-auth DMCR shared by a test module (use unique repository names).

    Import ``dmcr_fixture`` into a test module to use the ``dmcr`` fixture.
    """
    with DmcrServer(tmp_path_factory.mktemp("dmcr")) as d:
        yield d
