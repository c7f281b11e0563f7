"""The three listeners under slow clients, each started as deploy/hooks/deployment.yaml starts it.

The token listener serves every pod and the webhook fails closed, so a few
clients that connect and send slowly must not stop either (docs/security.md,
"Listeners"). Each container's command and environment are read from the
manifest (ConfigMap from its generator, files from its volumes, made here;
the serving certificate too), only the bind address becomes loopback. While
HOLD idle or slow-sending connections are open against a listener, /healthz
and a real request must answer within a second; the server must then close
the idle ones after its header timeout and the slow ones after its request
deadline; a body over the route's limit is a 413 whatever its framing.

``HOOKS_GUNICORN_CONF=/path/to/conf.py`` swaps the config file, to show that
this fails on another one (the old sync-worker config stops at the first check).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from devstack.registry import free_port
from devstack.tls import CertFiles, make_ca_and_cert
from hooks import gunicorn_conf
from hooks.app import body_limit
from lib import credentials
from tests.support import hookreq as hr
from tests.test_webhook_mutate import review
from tests.test_workload_hooks import workload

ROOT = Path(__file__).resolve().parent.parent
HOOKS_DIR = ROOT / "deploy" / "hooks"
POLICY = ROOT / "deploy" / "networkpolicies" / "hooks.yaml"
IMAGE_WORKDIR = "/app"  # the Dockerfile's WORKDIR: where the image has hooks/ and lib/
HOLD = 200
ANSWER_WITHIN = 1.0
HEADER_TIMEOUT = getattr(gunicorn_conf, "HEADER_TIMEOUT", 5)
REQUEST_TIMEOUT = getattr(gunicorn_conf, "REQUEST_TIMEOUT", 9)
SLACK = 3.0  # scheduling on two shared cores
REPO = "ai-models/catalog/namespaced/team-a/llama/uid-1"
Obj = dict[str, Any]

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]  # slow clients against gunicorn (~40 s)


# ---------------------------------------------------------------- the manifest, made local


def _deployment() -> Obj:
    return yaml.safe_load((HOOKS_DIR / "deployment.yaml").read_text())


def _configmap() -> dict[str, str]:
    """What the generated ConfigMap holds (deploy/hooks/kustomization.yaml)."""
    kust = yaml.safe_load((HOOKS_DIR / "kustomization.yaml").read_text())
    data: dict[str, str] = {}
    for gen in kust["configMapGenerator"]:
        for env_file in gen["envs"]:
            for line in (HOOKS_DIR / env_file).read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    data[key] = value
    return data


def _file_content(key: str, certs: CertFiles, signing_key: bytes) -> bytes:
    """Stand-in for a Secret or ConfigMap key the pod mounts, by key name."""
    return {
        "tls.crt": certs.cert.read_bytes(),
        "tls.key": certs.key.read_bytes(),  # an EC key: serves TLS, or signs registry tokens
        "ca.crt": certs.ca_cert.read_bytes(),
        "key": signing_key,
    }[key]


@dataclass
class Listener:
    name: str
    port: int
    url: str
    ca: Path | None
    signing_key: bytes
    proc: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def tls(self) -> bool:
        return self.ca is not None


@dataclass
class Material:
    """The pod's files for one container, under a local directory."""

    root: Path
    certs: CertFiles
    signing_key: bytes
    mounts: dict[str, Path] = field(default_factory=dict)

    def local(self, path: str) -> str:
        for mount, where in sorted(self.mounts.items(), key=lambda m: -len(m[0])):
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                return str(where / path[len(mount):].lstrip("/"))
        if path.startswith(IMAGE_WORKDIR + "/"):
            return str(ROOT / path[len(IMAGE_WORKDIR) + 1:])
        return path


def _paths_named(container: Obj) -> list[str]:
    """Absolute paths in the container's command and env values: the files it reads."""
    values = list(container["command"]) + [e.get("value", "") for e in container.get("env", [])]
    return [v for v in values if v.startswith("/")]


def _materialize(container: Obj, volumes: dict[str, Obj], m: Material) -> None:
    for mount in container.get("volumeMounts", []):
        where = m.root / container["name"] / mount["name"]
        where.mkdir(parents=True, exist_ok=True)
        m.mounts[mount["mountPath"]] = where
        source = volumes[mount["name"]].get("secret") or volumes[mount["name"]].get("configMap") or {}
        items = {i["path"]: i["key"] for i in source.get("items", [])}
        if not items and source:  # the whole Secret: the keys the container names
            prefix = mount["mountPath"].rstrip("/") + "/"
            items = {p[len(prefix):]: p[len(prefix):] for p in _paths_named(container) if p.startswith(prefix)}
        for path, key in items.items():
            (where / path).write_bytes(_file_content(key, m.certs, m.signing_key))


def _command(container: Obj, m: Material) -> list[str]:
    command = list(container["command"])
    assert command[0] == "gunicorn", command
    override = os.environ.get("HOOKS_GUNICORN_CONF")
    args = [m.local(a) if a.startswith("/") else a for a in command[1:]]
    if override:
        args[args.index("--config") + 1] = override
    return [sys.executable, "-m", "gunicorn", *args]


def _environment(container: Obj, m: Material, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_MODELS_")}
    env.update(_configmap())
    env.update({e["name"]: m.local(e["value"]) if e["value"].startswith("/") else e["value"]
                for e in container.get("env", [])})
    host, _, _ = env["AI_MODELS_LISTEN"].rpartition(":")
    assert host == "0.0.0.0", "the manifest binds every address; the test binds loopback only"
    env["AI_MODELS_LISTEN"] = f"127.0.0.1:{port}"
    return env


def _start(container: Obj, m: Material) -> Listener:
    port = free_port()
    tls = "--certfile" in container["command"]
    scheme = "https" if tls else "http"
    lst = Listener(container["name"], port, f"{scheme}://127.0.0.1:{port}", m.certs.ca_cert if tls else None,
                   m.signing_key, log=m.root / f"{container['name']}.log")
    with open(lst.log, "wb") as log:
        lst.proc = subprocess.Popen(_command(container, m), cwd=ROOT, env=_environment(container, m, port),
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return lst


def _wait_ready(lst: Listener) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert lst.proc and lst.proc.poll() is None, _log_tail(lst)
        try:
            if requests.get(lst.url + "/healthz", timeout=1, verify=_verify(lst)).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{lst.name} did not start:\n{_log_tail(lst)}")


def _log_tail(lst: Listener) -> str:
    return lst.log.read_text(errors="replace")[-3000:] if lst.log and lst.log.exists() else ""


def _verify(lst: Listener) -> str | bool:
    return str(lst.ca) if lst.ca else True


@pytest.fixture(scope="module")
def listeners(tmp_path_factory) -> Iterator[dict[str, Listener]]:
    root = tmp_path_factory.mktemp("listeners")
    pod = _deployment()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    certs = make_ca_and_cert(root / "certs")
    signing_key = secrets.token_hex(32).encode()
    started: dict[str, Listener] = {}
    try:
        for c in pod["containers"]:
            m = Material(root, certs, signing_key)
            _materialize(c, volumes, m)
            started[c["name"]] = _start(c, m)
        for lst in started.values():
            _wait_ready(lst)
        yield started
    finally:
        for lst in started.values():
            if lst.proc and lst.proc.poll() is None:
                lst.proc.terminate()
                try:
                    lst.proc.wait(10)
                except subprocess.TimeoutExpired:
                    lst.proc.kill()
                    lst.proc.wait(5)


def test_the_manifest_has_the_three_listeners():
    names = {c["name"] for c in _deployment()["spec"]["template"]["spec"]["containers"]}
    assert names == {"hooks", "token", "webhook"}


# ---------------------------------------------------------------- real requests


def _route(lst: Listener) -> str:
    return {"hooks": "/hooks/model/sync", "token": "/registry/token",
            "webhook": "/webhooks/workload/mutate"}[lst.name]


def _real_request(lst: Listener) -> requests.Response:
    """The request the listener exists for, answered for real (200)."""
    if lst.name == "hooks":
        return requests.post(lst.url + "/hooks/model/sync", json=hr.sync_request(hr.model()), timeout=5)
    if lst.name == "webhook":
        obj = workload(model_names="bge-m3")
        return requests.post(lst.url + "/webhooks/workload/mutate", json=review(obj, old=obj), timeout=5,
                             verify=_verify(lst))
    user, password = credentials.pull_credential(lst.signing_key, [REPO])
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return requests.get(lst.url + "/registry/token", params={"service": "dmcr", "scope": f"repository:{REPO}:pull"},
                        headers={"Authorization": auth}, timeout=5)


def _check_answer(lst: Listener, r: requests.Response) -> None:
    assert r.status_code == 200, (lst.name, r.status_code, r.text[:300])
    body = r.json()
    assert {"hooks": "status", "token": "token", "webhook": "response"}[lst.name] in body, body


def _timed(fn: Any) -> tuple[float, Any]:
    started = time.monotonic()
    try:
        out = fn()
    except (requests.RequestException, OSError) as e:
        out = e
    return time.monotonic() - started, out


@pytest.mark.parametrize("name", ["hooks", "token", "webhook"])
def test_real_requests_are_answered(listeners, name):
    lst = listeners[name]
    _check_answer(lst, _real_request(lst))


# ---------------------------------------------------------------- slow clients


def _connect(lst: Listener, handshake: bool) -> socket.socket:
    """A connection; TLS-wrapped on the webhook listener when ``handshake`` (raises if it cannot be)."""
    sock = socket.create_connection(("127.0.0.1", lst.port), timeout=2)
    if lst.tls and handshake:
        ctx = ssl.create_default_context(cafile=str(lst.ca))
        try:
            return ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        except OSError:
            sock.close()
            raise
    return sock


@dataclass
class Held:
    sock: socket.socket
    kind: str  # idle | tls-idle | partial-head | slow-body
    opened: float
    closed: float | None = None
    # The trickler writes while the test reads: an SSL object is not safe to use from two threads.
    lock: threading.Lock = field(default_factory=threading.Lock)


def _open_slow(lst: Listener, n: int) -> list[Held]:
    """n connections: idle, (TLS) handshaken and idle, a trickled request head, a head then a trickled body."""
    kinds = ["idle", "partial-head", "slow-body"] + (["tls-idle"] if lst.tls else [])
    held: list[Held] = []
    handshakes = True  # until one fails (a server that is stuck): then plain connections, held all the same
    for i in range(n):
        kind = kinds[i % len(kinds)]
        opened = time.monotonic()
        try:
            sock = _connect(lst, handshake=handshakes and kind != "idle")
        except OSError:
            handshakes = False
            sock = _connect(lst, handshake=False)
        if lst.tls and not isinstance(sock, ssl.SSLSocket) and kind != "idle":
            # Plain bytes to a TLS listener are a failed handshake, which it may drop at once:
            # without a handshake this connection is an idle one (it sends nothing).
            kind = "idle"
        try:
            if kind == "partial-head":
                sock.sendall(f"POST {_route(lst)} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
            elif kind == "slow-body":
                sock.sendall(f"POST {_route(lst)} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "Content-Length: 1000000\r\n\r\n{".encode())
        except OSError:
            pass
        held.append(Held(sock, kind, opened))
    return held


def _trickle(held: list[Held], stop: threading.Event) -> None:
    """A byte of header value or of body every half second on each slow connection, for at most a minute."""
    for _ in range(120):
        if stop.wait(0.5):
            return
        for h in held:
            if h.kind in ("partial-head", "slow-body") and h.closed is None:
                with h.lock:
                    try:
                        h.sock.sendall(b"a" if h.kind == "partial-head" else b" ")
                    except OSError:
                        pass


def _closed_by_server(h: Held) -> bool:
    """Whether the server has closed (EOF or reset) the connection; answers are read and dropped."""
    with h.lock:
        h.sock.settimeout(0.01)  # never a blocked trickler (sendall waits for the socket's timeout)
        try:
            while True:
                data = h.sock.recv(65536)
                if not data:
                    return True
        except (ssl.SSLWantReadError, BlockingIOError, TimeoutError):
            return False
        except OSError:
            return True


def _wait_closed(held: list[Held], until: float) -> None:
    while time.monotonic() < until and any(h.closed is None for h in held):
        for h in held:
            if h.closed is None and _closed_by_server(h):
                h.closed = time.monotonic()
        time.sleep(0.05)


@pytest.mark.parametrize("name", ["hooks", "token", "webhook"])
def test_slow_clients_do_not_stop_a_listener(listeners, name):
    lst = listeners[name]
    held = _open_slow(lst, HOLD)
    stop = threading.Event()
    trickler = threading.Thread(target=_trickle, args=(held, stop), daemon=True)
    trickler.start()
    try:
        health = [_timed(lambda: requests.get(lst.url + "/healthz", timeout=5, verify=_verify(lst)))
                  for _ in range(5)]
        real = [_timed(lambda: _real_request(lst)) for _ in range(3)]
        print(f"\n{name}: {HOLD} held; /healthz {max(t for t, _ in health):.3f}s max, "
              f"{_route(lst)} {max(t for t, _ in real):.3f}s max")
        for took, r in health + real:
            assert not isinstance(r, Exception), f"{name}: {r!r} after {took:.1f}s with {HOLD} slow clients"
            assert took < ANSWER_WITHIN, f"{name}: answered in {took:.2f}s with {HOLD} slow clients"
        for _, r in health:
            assert r.status_code == 200
        for _, r in real:
            _check_answer(lst, r)

        # The server drops them: the idle ones after the header timeout, the rest by the request deadline.
        _wait_closed(held, time.monotonic() + REQUEST_TIMEOUT + HEADER_TIMEOUT + SLACK)
        for h in held:
            assert h.closed is not None, f"{name}: a {h.kind} connection is still open"
            lasted = h.closed - h.opened
            if h.kind in ("idle", "tls-idle", "partial-head"):
                assert HEADER_TIMEOUT - 0.5 <= lasted <= HEADER_TIMEOUT + SLACK, (name, h.kind, lasted)
            else:
                assert lasted <= REQUEST_TIMEOUT + HEADER_TIMEOUT + SLACK, (name, h.kind, lasted)
        assert lst.proc and lst.proc.poll() is None
    finally:
        stop.set()
        trickler.join(5)
        for h in held:
            h.sock.close()


# ---------------------------------------------------------------- body limits


def _raw(lst: Listener, head: bytes, body: Iterator[bytes] = iter(())) -> tuple[int, bytes]:
    """Send a request byte for byte; the status and body of the answer."""
    sock = _connect(lst, handshake=True)
    sock.settimeout(15)
    with sock:
        sock.sendall(head)
        try:
            for chunk in body:
                sock.sendall(chunk)
        except OSError:  # the server answered and stopped reading: the answer is still there
            pass
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            assert more, f"closed without an answer: {data[:200]!r}"
            data += more
        raw_head, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", raw_head).group(1))  # type: ignore[union-attr]
        while len(rest) < length:
            more = sock.recv(65536)
            if not more:
                break
            rest += more
    return int(raw_head.split()[1]), rest[:length]


def _method(lst: Listener) -> str:
    return "GET" if lst.name == "token" else "POST"


@pytest.mark.parametrize("name", ["hooks", "token", "webhook"])
def test_a_body_over_the_limit_is_413(listeners, name):
    lst = listeners[name]
    route, limit = _route(lst), body_limit(_route(lst))
    head = f"{_method(lst)} {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    # Announced: refused before any of it is read.
    status, body = _raw(lst, f"{head}Content-Length: {limit + 1}\r\nConnection: close\r\n\r\n".encode())
    assert status == 413 and str(limit) in json.loads(body)["error"], (status, body)

    # Chunked, so only counting tells: refused once the count passes the limit.
    def chunks() -> Iterator[bytes]:
        left = limit + 1
        while left:
            n = min(left, 1 << 20)
            yield f"{n:x}\r\n".encode() + b" " * n + b"\r\n"
            left -= n
        yield b"0\r\n\r\n"

    # (No `Connection: close`: the server reads the rest, so no reset can overtake its answer.)
    status, body = _raw(lst, f"{head}Transfer-Encoding: chunked\r\n\r\n".encode(), chunks())
    assert status == 413 and str(limit) in json.loads(body)["error"], (status, body)
    assert lst.proc and lst.proc.poll() is None


def test_a_stalled_body_is_408_not_500(listeners):
    """A body that stops arriving ends in the app's JSON 408 after the per-read timeout, never in a 500."""
    lst = listeners["hooks"]
    read_timeout = getattr(gunicorn_conf, "READ_TIMEOUT", 6)
    started = time.monotonic()
    status, body = _raw(lst, b"POST /hooks/model/sync HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100\r\n\r\n{\"parent\": ")
    assert status == 408 and json.loads(body)["error"], (status, body)
    assert read_timeout - 0.5 <= time.monotonic() - started <= read_timeout + SLACK


@pytest.mark.parametrize("name", ["hooks", "token", "webhook"])
def test_oversized_request_heads_are_refused(listeners, name):
    lst = listeners[name]
    route = _route(lst)
    status, _ = _raw(lst, f"GET {route}?q={'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 414
    many = "".join(f"X-H{i}: v\r\n" for i in range(40))
    status, _ = _raw(lst, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
    assert status == 431
    status, _ = _raw(lst, f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 9000}\r\n\r\n".encode())
    assert status == 431


def test_body_limits_leave_room_for_real_requests():
    """A sync request with a few hundred children is a few MB; an AdmissionReview two objects of <= 3 MiB."""
    assert body_limit("/hooks/model/sync") >= 16 << 20
    assert body_limit("/webhooks/workload/mutate") >= 2 * (3 << 20)
    assert body_limit("/registry/token") <= 64 << 10  # the listener every pod reaches takes no body


# ---------------------------------------------------------------- who reaches the webhook


def _webhook_rules() -> tuple[list[Obj], list[int]]:
    policy = yaml.safe_load(POLICY.read_text())
    rules = policy["spec"]["ingress"]
    return rules, [i for i, r in enumerate(rules) if "ports" not in r or
                   any(p["port"] in ("webhook", 8443) for p in r["ports"])]


def test_the_webhook_port_admits_only_the_configured_addresses():
    rules, webhook = _webhook_rules()
    assert len(webhook) == 1, "exactly one rule opens the webhook port, and no rule opens every port"
    rule = rules[webhook[0]]
    assert [p["port"] for p in rule["ports"]] == ["webhook"]
    assert rule.get("from"), "a rule without `from` admits every source"
    for peer in rule["from"]:
        assert set(peer) == {"ipBlock"}, f"only addresses, no pod or namespace selectors: {peer}"
        net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        assert net.prefixlen > 0, "0.0.0.0/0 is no restriction"


def test_the_documented_patch_point_is_the_webhook_rule():
    """docs/install.md's overlay replaces /spec/ingress/<i>/from; i must be the webhook rule, default as shipped."""
    rules, [index] = _webhook_rules()
    install = (ROOT / "docs" / "install.md").read_text()
    assert f"path: /spec/ingress/{index}/from" in install
    assert f"/spec/ingress/{index}/from" in POLICY.read_text()
    for peer in rules[index]["from"]:
        assert f"`{peer['ipBlock']['cidr']}`" in install, "docs/install.md states the default"
