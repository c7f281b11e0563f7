"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The binaries are built from pinned Go modules by ``devstack/kube/build.sh``
(built on demand when missing). No kubelet, scheduler or Metacontroller run:
what this gives the tests is the API server's own behaviour (schema and CEL
validation, strict field validation, admission incl. webhooks and Pod
Security, RBAC) and the controllers that need no node (garbage collector,
namespace, Job, CronJob, ServiceAccount, token, root CA publisher, RBAC
aggregation, Deployment/ReplicaSet).

Also a CLI for ``devstack/kube/up.sh`` / ``down.sh``::

    python -m devstack.control_plane up   [--state DIR]   # prints KUBECONFIG=<path> last
    python -m devstack.control_plane down [--state DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.registry import free_port

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "devstack" / "kube" / "build.sh"
BIN = Path(os.environ.get("KUBE_CACHE", ROOT / ".cache" / "kube")) / "bin"
DEFAULT_STATE = ROOT / ".cache" / "kube" / "state"
SERVICE_CIDR = "10.96.0.0/24"
# Controllers that work without nodes; RBAC aggregation makes our roles that
# aggregate to view/edit/admin effective, the Deployment/ReplicaSet pair
# makes Pod Security admission judge real pods.
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
)


def ensure_binaries() -> Path:
    """The binaries of the pinned versions; build.sh is a no-op when they are current."""
    subprocess.run(["bash", str(BUILD)], check=True)
    return BIN


# ---------------------------------------------------------------- certificates


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class _CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, cn: str) -> _CA:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(self, cn: str, *, org: str | None = None, hosts: Sequence[str] = ()) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) for a client (``org`` = group) or, with ``hosts``, a server."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if hosts else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, org))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


# ---------------------------------------------------------------- the control plane


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, with their state in ``state``."""

    state: Path
    bin_dir: Path = BIN
    api_port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 120.0) -> ControlPlane:
        """Start all three and wait until the API server is ready and the controllers work."""
        if self.state.exists():
            shutil.rmtree(self.state)
        self.pki.mkdir(parents=True)
        (self.state / "logs").mkdir()
        self.api_port = free_port()
        self._write_pki()
        etcd_url = self._start_etcd()
        self._start_apiserver(etcd_url)
        self._wait_ready(timeout)
        self._start_controller_manager()
        self._wait_controllers(timeout)
        (self.state / "pids.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))
        return self

    def stop(self) -> None:
        """Stop the processes (controllers first, etcd last)."""
        for name in reversed(list(self.procs)):
            _terminate(self.procs.pop(name))

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ pieces

    def _write_pki(self) -> None:
        ca = _CA.create("ai-models devstack CA")
        self._write("ca.crt", ca.cert.public_bytes(serialization.Encoding.PEM))
        hosts = ["127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default",
                 "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
        self._write_pair("apiserver", ca.issue("kube-apiserver", hosts=hosts))
        self._write_pair("admin", ca.issue("kubernetes-admin", org="system:masters"))
        self._write_pair("controller-manager", ca.issue("system:kube-controller-manager"))
        # The aggregation layer's front proxy has its own CA, as in kubeadm clusters.
        proxy_ca = _CA.create("ai-models devstack front-proxy CA")
        self._write("front-proxy-ca.crt", proxy_ca.cert.public_bytes(serialization.Encoding.PEM))
        self._write_pair("front-proxy-client", proxy_ca.issue("front-proxy-client"))
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._write("sa.key", _pem_key(sa))
        self._write("sa.pub", sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self._write_kubeconfig(self.kubeconfig, "admin")
        self._write_kubeconfig(self.state / "controller-manager.kubeconfig", "controller-manager")

    def _write(self, name: str, data: bytes) -> Path:
        path = self.pki / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def _write_pair(self, name: str, pair: tuple[bytes, bytes]) -> None:
        self._write(f"{name}.crt", pair[0])
        self._write(f"{name}.key", pair[1])

    def _write_kubeconfig(self, path: Path, user: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "devstack", "cluster": {
                "server": self.server, "certificate-authority": str(self.pki / "ca.crt")}}],
            "users": [{"name": user, "user": {
                "client-certificate": str(self.pki / f"{user}.crt"),
                "client-key": str(self.pki / f"{user}.key")}}],
            "contexts": [{"name": "devstack", "context": {"cluster": "devstack", "user": user}}],
            "current-context": "devstack",
        }
        path.write_text(json.dumps(config, indent=1))
        path.chmod(0o600)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.state / "logs" / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [str(self.bin_dir / name), *args], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self._spawn("etcd", [
            "--name=devstack", f"--data-dir={self.state / 'etcd'}",
            f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=devstack={peer_url}",
            "--unsafe-no-fsync",  # throwaway test data: no fsync keeps a shared disk quiet
            "--log-level=warn",
        ])
        return url

    def _start_apiserver(self, etcd_url: str) -> None:
        pki = self.pki
        self._spawn("kube-apiserver", [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", f"--secure-port={self.api_port}", "--advertise-address=127.0.0.1",
            # Endpoints may not point at loopback; nothing here routes Services anyway.
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            "--authorization-mode=Node,RBAC",
            # The default plugins are on (NamespaceLifecycle, ServiceAccount, PodSecurity,
            # webhooks, ValidatingAdmissionPolicy, ResourceQuota, ...); kubeadm adds NodeRestriction.
            # OwnerReferencesPermissionEnforcement is not a default but hardened clusters run it:
            # blockOwnerDeletion (set by Metacontroller on every child) then needs update on the
            # owner's finalizers, which deploy/rbac/metacontroller.yaml must grant.
            "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--profiling=false",
            "--v=1",
        ])

    def _start_controller_manager(self) -> None:
        kubeconfig = self.state / "controller-manager.kubeconfig"
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--concurrent-gc-syncs=5",
            "--v=1",
        ])

    # ------------------------------------------------------------ readiness

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """A GET as the admin; (status, body), status 0 when the server does not answer."""
        try:
            with urllib.request.urlopen(self.server + path, context=self._ssl(), timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (OSError, ssl.SSLError):
            return 0, b""

    def _wait(self, what: str, ok: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.log_tail(name)}")
            if ok():
                return
            time.sleep(0.3)
        raise TimeoutError(f"{what} not ready after {timeout}s:\n{self.log_tail('kube-apiserver')}")

    def _wait_ready(self, timeout: float) -> None:
        self._wait("kube-apiserver /readyz", lambda: self.get("/readyz")[0] == 200, timeout)

    def _wait_controllers(self, timeout: float) -> None:
        """The ServiceAccount controller made ``default/default``: the controllers run."""
        self._wait("kube-controller-manager",
                   lambda: self.get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200, timeout)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.state / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # ------------------------------------------------------------ clients

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                as_user: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane (as the admin, or impersonating)."""
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}"]
        if as_user:
            cmd.append(f"--as={as_user}")
        result = subprocess.run([*cmd, *args], input=input, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result

    def api_client(self) -> Any:
        """A new admin ``kubernetes.client.ApiClient`` (the Python client)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    @functools.cached_property
    def client(self) -> Any:
        """The shared admin ``ApiClient`` of this control plane."""
        return self.api_client()


def _terminate(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- CLI for up.sh / down.sh


def _up(state: Path) -> None:
    ensure_binaries()
    plane = ControlPlane(state).start()
    plane.procs.clear()  # they keep running; down reads pids.json
    print(f"kube-apiserver {plane.server} (state and logs in {state})")
    print(f"KUBECONFIG={plane.kubeconfig}")


def _down(state: Path) -> None:
    pids_file = state / "pids.json"
    if pids_file.exists():
        pids = json.loads(pids_file.read_text())
        for name in reversed(list(pids)):  # controllers first, etcd last
            _kill_pid(pids[name])
    shutil.rmtree(state, ignore_errors=True)


def _kill_pid(pid: int, grace: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.control_plane")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE)
    args = parser.parse_args(argv)
    (_up if args.action == "up" else _down)(args.state.resolve())


if __name__ == "__main__":
    main()
