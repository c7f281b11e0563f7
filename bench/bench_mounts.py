"""Bytes fetched for N namespaces creating the same model, with and without a ClusterModel (issue 19 item 6).

In one run, on this machine: a Hugging Face stand-in (devstack/hf_hub.py)
serving one Safetensors model of SIZE_MIB (``model.safetensors`` written with
the ``safetensors`` library, plus ``config.json`` and ``tokenizer.json``);
DMCR = a real ``docker-registry`` in token-auth mode whose realm is the real
hook app's ``/registry/token``, a fresh one per scenario, reached through a
counting proxy that parses every request the workers send it. Then:

(a) no ClusterModel: N Models in N namespaces publish the same URL; each may
    mount only from Models of its own namespace (there are none), so each
    fetches every file and uploads every blob;
(b) a ClusterModel publishes the URL first, then the same N Models, each
    with the ``--mount-from`` candidates and the publish credential the Model
    hook computes (``hooks.model_mounts.candidates`` over the related objects
    Metacontroller would send: the Ready ClusterModel).

Every publish is ``python -m jobs publish`` (the worker's real command line,
``lib.api.worker_cli.Publish``), one after the other, each with its own
cache directory. Counted: bytes the Hub stand-in served for file downloads
(``/resolve/`` 200s and the LFS "CDN"), blob body bytes the workers sent
DMCR (POST/PATCH/PUT under ``/blobs/``), mount POSTs, bytes DMCR sent back
(blob read-backs of small files included), DMCR storage growth on disk, and
the ``mounted`` bytes each worker reports in its result.

Usage: .venv/bin/python -m bench.bench_mounts [NAMESPACES=10] [SIZE_MIB=64]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from bench.common import ROOT, scratch
from devstack.hf_hub import HubStandIn
from devstack.models import make_safetensors_file
from devstack.registry import RegistryServer, TokenAuth, free_port
from hooks import model_mounts
from hooks.app import create_app
from hooks.model_parent import parse_parent
from lib import credentials, registry_token
from lib.api import worker_cli as wc
from lib.api.types import API_VERSION
from lib.config import Config

HF_REPO = "acme/bench-minilm"
URL = f"https://huggingface.co/{HF_REPO}"
MODEL_NAME = "minilm"


# --- DMCR: docker-registry + the real token service (as tests/support/dmcr.py starts it) ----


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: object, **kwargs: object) -> None:
        pass


@dataclass
class Dmcr:
    workdir: Path
    signing_key: bytes = b"bench-mounts-signing-key-0123456789"
    config: Config = field(init=False)
    registry: RegistryServer = field(init=False)
    _server: BaseWSGIServer | None = None

    def __enter__(self) -> Dmcr:
        self.workdir.mkdir(parents=True, exist_ok=True)
        key_pem = registry_token.generate_signing_key("ec")
        bundle = self.workdir / "token.crt"
        bundle.write_bytes(registry_token.self_signed_certificate(key_pem, now=dt.datetime.now(dt.UTC)))
        port = free_port()
        self.config = Config(registry=f"127.0.0.1:{port}", signing_key=self.signing_key,
                             token_key_pem=key_pem, token_service="dmcr", token_issuer="ai-models",
                             registry_insecure=True)
        self._server = make_server("127.0.0.1", 0, create_app(self.config), threaded=True,
                                   request_handler=_Quiet)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        realm = f"http://127.0.0.1:{self._server.server_port}/registry/token"
        self.registry = RegistryServer(self.workdir / "registry", port=port,
                                       token=TokenAuth(realm, "dmcr", "ai-models", bundle))
        try:
            self.registry.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.registry.stop()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def storage_bytes(self) -> int:
        root = self.workdir / "registry"
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and "storage" in p.parts)


# --- a proxy in front of DMCR that parses what clients send -----------------------------


@dataclass
class Counts:
    blob_body: int = 0  # body bytes of POST/PATCH/PUT under /blobs/
    manifest_body: int = 0
    mount_posts: int = 0
    uploads_opened: int = 0  # POSTs to /blobs/uploads/ without mount=
    patches: int = 0
    requests: int = 0
    sent_back: int = 0  # every byte DMCR answered with


class _RequestParser:
    """Follows HTTP/1.1 requests on one client→server stream (Content-Length or chunked bodies)."""

    def __init__(self, counts: Counts, lock: threading.Lock):
        self.counts, self.lock = counts, lock
        self.buf = b""
        self.state = "head"
        self.left = 0
        self.kind = ""  # "blob" | "manifest" | ""

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self.buf:
            if self.state == "head":
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
                self._start(head)
            elif self.state in ("body", "chunk"):
                n = min(self.left, len(self.buf))
                self._count(n)
                self.buf, self.left = self.buf[n:], self.left - n
                if self.left == 0:
                    self.state = "head" if self.state == "body" else "chunk-crlf"
            elif self.state == "chunk-crlf":
                if len(self.buf) < 2:
                    return
                self.buf, self.state = self.buf[2:], "chunk-size"
            elif self.state == "chunk-size":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(self.buf[:end].split(b";")[0], 16)
                self.buf = self.buf[end + 2:]
                self.state, self.left = ("chunk", size) if size else ("trailer", 0)
            elif self.state == "trailer":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                self.buf = self.buf[end + 2:]
                if end == 0:
                    self.state = "head"

    def _start(self, head: str) -> None:
        lines = head.split("\r\n")
        method, path = lines[0].split(" ")[:2]
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        self.kind = "blob" if "/blobs/" in path else "manifest" if "/manifests/" in path else ""
        with self.lock:
            self.counts.requests += 1
            if method == "POST" and "/blobs/uploads/" in path:
                if "mount=" in path:
                    self.counts.mount_posts += 1
                else:
                    self.counts.uploads_opened += 1
            self.counts.patches += method == "PATCH"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = "chunk-size"
        elif int(headers.get("content-length", "0") or 0) > 0:
            self.state, self.left = "body", int(headers["content-length"])

    def _count(self, n: int) -> None:
        with self.lock:
            if self.kind == "blob":
                self.counts.blob_body += n
            elif self.kind == "manifest":
                self.counts.manifest_body += n


class CountingProxy:
    def __init__(self, backend: tuple[str, int]):
        self.backend = backend
        self.counts = Counts()
        self.lock = threading.Lock()
        self._ls = socket.socket()
        self._ls.bind(("127.0.0.1", 0))
        self._ls.listen(64)
        self.host = f"127.0.0.1:{self._ls.getsockname()[1]}"
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def take(self) -> Counts:
        with self.lock:
            out, self.counts = self.counts, Counts()
        return out

    def close(self) -> None:
        self._ls.close()
        for s in list(self._open):
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._ls.accept()
                upstream = socket.create_connection(self.backend, timeout=10)
            except OSError:
                return
            upstream.settimeout(None)
            self._open |= {client, upstream}
            parser = _RequestParser(self.counts, self.lock)
            threading.Thread(target=self._pipe, args=(client, upstream, parser), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, parser: _RequestParser | None) -> None:
        try:
            while data := src.recv(1 << 18):
                if parser is not None:
                    parser.counts = self.counts  # counters are swapped between publishes
                    parser.feed(data)
                else:
                    with self.lock:
                        self.counts.sent_back += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


# --- the Hub stand-in: bytes served for file downloads -----------------------------------


def hub_file_bytes(hub: HubStandIn, since: int) -> tuple[int, int]:
    """(file bytes served, file requests) after the first ``since`` logged requests.

    LFS ``/resolve/`` answers are 302s to the CDN (0 bytes); the CDN and small-file
    ``/resolve/`` answers carry the file, or the requested Range of it.
    """
    repo = hub.repos[HF_REPO]
    by_sha = {f.sha256: f for f in repo.files.values()}
    total = count = 0
    for r in hub.log[since:]:
        path = r.path.split("?", 1)[0]
        if path.startswith("/cdn/"):
            entry = by_sha.get(path.rsplit("/", 1)[-1])
        elif "/resolve/" in path:
            entry = repo.files.get(path.split("/resolve/", 1)[1].split("/", 1)[-1])
            entry = None if entry is None or entry.lfs else entry
        else:
            continue
        count += 1
        if entry is None:
            continue
        start, end = 0, entry.size
        rng = r.headers.get("Range", "")
        if rng.startswith("bytes="):
            first, _, last = rng[6:].partition("-")
            start = int(first or 0)
            end = min(entry.size, int(last) + 1) if last else entry.size
        total += max(0, end - start)
    return total, count


# --- the model, the objects, the publishes ----------------------------------------------------


def model_files(work: Path, size_mib: int) -> dict[str, bytes | Path]:
    rng = np.random.default_rng(19)
    n = (size_mib << 20) // 4
    weights = make_safetensors_file(work / "model.safetensors",
                                    {"embeddings.weight": rng.standard_normal(n, dtype=np.float32)})
    config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 384,
              "torch_dtype": "float32"}
    return {
        "model.safetensors": weights,
        "config.json": json.dumps(config).encode(),
        "tokenizer.json": json.dumps({"model": {"vocab": {f"t{i}": i for i in range(30000)}}}).encode(),
    }


def obj(kind: str, name: str, namespace: str = "", *, ready: bool = False) -> dict[str, Any]:
    md = {"name": name, "uid": str(uuid.uuid4()), **({"namespace": namespace} if namespace else {})}
    status = {"phase": "Ready", "artifact": {"digest": "sha256:" + "0" * 64}} if ready else {}
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": md, "spec": {"source": {"url": URL}},
            "status": status}


def related_of(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The related map Metacontroller sends customize's answer (``Kind.apiVersion`` → key → object)."""
    out: dict[str, Any] = {}
    for o in objs:
        md = o["metadata"]
        key = f"{md.get('namespace', '')}/{md['name']}".lstrip("/")
        out.setdefault(f"{o['kind']}.{API_VERSION}", {})[key] = o
    return out


@dataclass
class Run:
    who: str
    seconds: float
    hub_bytes: int
    hub_files: int
    dmcr: Counts
    mounted: int
    digest: str


def publish(dmcr: Dmcr, proxy: CountingProxy, hub: HubStandIn, work: Path, parent: dict[str, Any],
            related: list[dict[str, Any]]) -> Run:
    """One Model/ClusterModel publish as the hook sets it up: repository, candidates, credential."""
    cluster = parent["kind"] == "ClusterModel"
    m = parse_parent({"parent": parent}, dmcr.config, cluster=cluster)
    candidates = model_mounts.candidates(m, related_of(related))
    user, pw = credentials.publish_credential(dmcr.signing_key, m.repository, candidates)
    tag = uuid.uuid4().hex[:8]
    auth = work / f"auth-{tag}.json"
    auth.write_text(credentials.dockerconfigjson(proxy.host, user, pw))
    result = work / f"result-{tag}.json"
    cache = work / f"cache-{tag}"
    cmd = wc.Publish(source=URL, destination=f"{proxy.host}/{m.repository}", registry_auth_file=str(auth),
                     result_file=str(result), insecure_registry=True, mount_from=candidates,
                     model_name=m.name)
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "AI_MODELS_CACHE_DIR": str(cache),
           "PYTHONPATH": str(ROOT)}
    proxy.take()
    since = len(hub.log)
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "jobs", *cmd.argv()], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    seconds = time.perf_counter() - t
    time.sleep(0.05)  # the proxy's last reads
    counts = proxy.take()
    assert done.returncode == 0 and result.exists(), done.stderr[-3000:]
    doc = json.loads(result.read_text())
    shutil.rmtree(cache, ignore_errors=True)
    hub_bytes, hub_files = hub_file_bytes(hub, since)
    who = f"{parent['kind']} {m.namespace + '/' if m.namespace else ''}{m.name}"
    return Run(who, seconds, hub_bytes, hub_files, counts, (doc.get("mounted") or {}).get("bytes", 0),
               doc["artifact"]["digest"])


def ready(o: dict[str, Any], digest: str) -> dict[str, Any]:
    return {**o, "status": {"phase": "Ready", "artifact": {"digest": digest}}}


def scenario(name: str, work: Path, hub: HubStandIn, namespaces: int, cluster_model: bool) -> dict[str, Any]:
    with Dmcr(work / name) as dmcr:
        proxy = CountingProxy(("127.0.0.1", int(dmcr.registry.host.rsplit(":", 1)[1])))
        try:
            before = dmcr.storage_bytes()
            runs: list[Run] = []
            published: list[dict[str, Any]] = []
            t = time.perf_counter()
            if cluster_model:
                cm = obj("ClusterModel", MODEL_NAME)
                runs.append(publish(dmcr, proxy, hub, work, cm, published))
                published.append(ready(cm, runs[-1].digest))
            for i in range(namespaces):
                # Metacontroller relates every ClusterModel and the Models of the parent's namespace:
                # here the ClusterModel (b) or nothing (a); other namespaces' Models are filtered out.
                m = obj("Model", MODEL_NAME, f"team-{i:02d}")
                runs.append(publish(dmcr, proxy, hub, work, m, published))
                published.append(ready(m, runs[-1].digest))
            wall = time.perf_counter() - t
            growth = dmcr.storage_bytes() - before
        finally:
            proxy.close()
    assert len({r.digest for r in runs}) == 1, "every publish must produce the same manifest"
    models = [r for r in runs if r.who.startswith("Model")]
    return {"name": name, "runs": runs, "wall": wall, "growth": growth, "models": models}


def _mib(n: float) -> str:
    return f"{n / (1 << 20):,.1f}"


def main() -> int:
    namespaces = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    size_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    work = scratch()
    files = model_files(work, size_mib)
    total = sum(len(v) if isinstance(v, bytes) else v.stat().st_size for v in files.values())
    load = os.getloadavg()
    with HubStandIn() as hub:
        hub.add_repo(HF_REPO, files, library_name="transformers")
        results = [scenario("a-no-clustermodel", work, hub, namespaces, False),
                   scenario("b-clustermodel-first", work, hub, namespaces, True)]
    load_after = os.getloadavg()

    print(f"\n{namespaces} namespaces, one Hugging Face model of {_mib(total)} MiB ({total:,} bytes: "
          f"{', '.join(files)}); load average {load[0]:.2f} before, {load_after[0]:.2f} after\n")
    head = ("scenario", "publishes", "Hub file bytes (MiB)", "Hub file requests", "blob bytes → DMCR (MiB)",
            "mount POSTs", "upload sessions", "bytes DMCR sent back (MiB)", "mounted (MiB)",
            "DMCR storage growth (MiB)", "wall s", "per Model s (median)")
    rows = []
    for res in results:
        groups = [(res["name"], res["runs"])]
        if len(res["runs"]) != len(res["models"]):
            groups += [("  of which the ClusterModel", res["runs"][:1]),
                       ("  of which the Models", res["models"])]
        for label, runs in groups:
            whole = label == res["name"]
            rows.append((label, str(len(runs)), _mib(sum(r.hub_bytes for r in runs)),
                         str(sum(r.hub_files for r in runs)), _mib(sum(r.dmcr.blob_body for r in runs)),
                         str(sum(r.dmcr.mount_posts for r in runs)),
                         str(sum(r.dmcr.uploads_opened for r in runs)),
                         _mib(sum(r.dmcr.sent_back for r in runs)), _mib(sum(r.mounted for r in runs)),
                         _mib(res["growth"]) if whole else "",
                         f"{res['wall']:.2f}" if whole else f"{sum(r.seconds for r in runs):.2f}",
                         f"{statistics.median(r.seconds for r in runs):.2f}"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    a, b = results
    a_bytes = sum(r.hub_bytes for r in a["runs"])
    b_bytes = sum(r.hub_bytes for r in b["runs"])
    a_blobs = sum(r.dmcr.blob_body for r in a["runs"])
    b_blobs = sum(r.dmcr.blob_body for r in b["runs"])
    print(f"\nHub bytes (b)/(a): {b_bytes / a_bytes:.3f} ({b_bytes / total:.2f}× the model vs "
          f"{a_bytes / total:.2f}×); blob bytes into DMCR (b)/(a): "
          f"{b_blobs / max(1, a_blobs):.3f}; "
          f"wall (b)/(a): {b['wall'] / a['wall']:.2f}")
    print(json.dumps({"namespaces": namespaces, "model_bytes": total, "load": [load[0], load_after[0]],
                      "scenarios": [{"name": res["name"], "wall_s": round(res["wall"], 2),
                                     "storage_growth": res["growth"],
                                     "runs": [{"who": r.who, "s": round(r.seconds, 2),
                                               "hub_bytes": r.hub_bytes, "hub_files": r.hub_files,
                                               "blob_bytes": r.dmcr.blob_body,
                                               "mount_posts": r.dmcr.mount_posts, "mounted": r.mounted,
                                               "sent_back": r.dmcr.sent_back} for r in res["runs"]]}
                                    for res in results]}))
    if not os.environ.get("BENCH_DIR"):
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
