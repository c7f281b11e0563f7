"""The hook service at sustained load: thousands of distinct Models resyncing.

Builds N distinct, realistic Metacontroller sync requests (by running the real
hooks in-process, then observing their children as the API server would):
a third of them Models still publishing (Job active, its Pod running), the
rest Ready (Job complete, Pod terminated with a result JSON, credential
Secret, ServiceAccount, Role, RoleBinding). Then the real hook service runs
under gunicorn with ``--workers`` sync workers and ``--clients`` client
processes replay the requests round-robin for ``--seconds``, each over one
HTTP/1.1 connection (gunicorn's sync workers close it after each answer;
``http.client`` reconnects, as Metacontroller's Go client does).

Prints syncs/s and latency percentiles (client-side, so they include the
connection setup). Clients and server share the machine: on 2 cores the
client processes take part of the CPU the service could use, so the figures
are a floor.

    .venv/bin/python bench/bench_load.py --models 2000 --seconds 45 --clients 8 --workers 2
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.registry import free_port  # noqa: E402
from hooks import model as hooks_model  # noqa: E402
from lib.config import Config  # noqa: E402
from tests.support import hookreq as hr  # noqa: E402

CFG = Config(namespace="d8-ai-models", registry="dmcr.test:5000", worker_image="worker:test",
             signing_key=b"bench-signing-key-0123456789abcdef")
SOURCES = ["https://huggingface.co/acme/m{i}", "https://huggingface.co/acme/m{i}/tree/v{i}",
           "https://ollama.com/library/m{i}:7b"]


def build_requests(n: int) -> list[tuple[str, bytes]]:
    """N distinct (path, body) sync requests: 1/3 publishing, 2/3 Ready."""
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        cluster = i % 5 == 0
        kw: dict[str, Any] = {"source": {"url": SOURCES[i % 3].format(i=i)}}
        if cluster:
            parent = hr.cluster_model(f"cm-{i:05d}", **kw)
            sync, path = hooks_model.clustermodel_sync, "/hooks/clustermodel/sync"
        else:
            parent = hr.model(f"m-{i:05d}", f"team-{i % 40:02d}", **kw)
            sync, path = hooks_model.model_sync, "/hooks/model/sync"
        first = sync(hr.sync_request(parent), CFG)
        publishing = hr.next_parent(parent, first)
        children = [hr.observe(c, status=hr.job_status(active=1) if c["kind"] == "Job" else None)
                    for c in first.get("children", [])]
        job = next(c for c in children if c["kind"] == "Job")
        if i % 3 == 0:
            req = hr.sync_request(publishing, children, [hr.pod_of(job)])
        else:
            done_job = copy.deepcopy(job)
            done_job["status"] = hr.job_status(succeeded=1, condition="Complete",
                                               finished="2026-01-01T00:10:00Z")
            dest = job["spec"]["template"]["spec"]["containers"][0]["args"]
            dest = dest[dest.index("--destination") + 1] if "--destination" in dest else "dmcr.test:5000/x"
            pod = hr.pod_of(done_job, exit_code=0, message=hr.success_result(dest, size=1000 + i))
            kids = [done_job if c["kind"] == "Job" else c for c in children]
            done = sync(hr.sync_request(publishing, kids, [pod]), CFG)
            ready = hr.next_parent(publishing, done)
            req = hr.sync_request(ready, kids, [pod])
            assert ready["status"]["phase"] == "Ready", ready["status"]
        out.append((path, json.dumps(req).encode()))
    return out


def client(port: int, reqs: list[tuple[str, bytes]], start: int, seconds: float, q: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat: list[float] = []
    errors = 0
    i = start
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        path, body = reqs[i % len(reqs)]
        i += 1
        t = time.perf_counter()
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
            if resp.will_close:
                conn.close()
        except (OSError, http.client.HTTPException):
            conn.close()
            ok = False
        lat.append(time.perf_counter() - t)
        errors += not ok
    q.put((lat, errors))


def start_gunicorn(port: int, workers: int, workdir: Path) -> subprocess.Popen:
    (workdir / "signing.key").write_text(os.urandom(32).hex())
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AI_MODELS_")},
           "AI_MODELS_LISTEN": f"127.0.0.1:{port}", "AI_MODELS_HOOK_WORKERS": str(workers),
           "AI_MODELS_REGISTRY": CFG.registry, "AI_MODELS_WORKER_IMAGE": CFG.worker_image,
           "AI_MODELS_NAMESPACE": CFG.namespace, "AI_MODELS_SIGNING_KEY_FILE": str(workdir / "signing.key")}
    log = open(workdir / "gunicorn.log", "ab")
    conf = str(ROOT / "hooks" / "gunicorn_conf.py")
    p = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", conf, "hooks.app:app"], cwd=ROOT,
                         env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return p
        except OSError:
            time.sleep(0.1)
    raise RuntimeError((workdir / "gunicorn.log").read_text()[-2000:])


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=45)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    t = time.perf_counter()
    reqs = build_requests(args.models)
    sizes = sorted(len(b) for _, b in reqs)
    print(f"built {len(reqs)} distinct sync requests in {time.perf_counter() - t:.1f}s "
          f"(body p50 {pct(sizes, .5) / 1024:.1f} KiB, max {sizes[-1] / 1024:.1f} KiB)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    port = free_port()
    server = start_gunicorn(port, args.workers, workdir)
    try:
        for path, body in reqs[:50]:  # warm both workers (imports, compiled validators)
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("POST", path, body, {"Content-Type": "application/json"})
            assert c.getresponse().status == 200
        load_before = os.getloadavg()
        q: Any = mp.Queue()
        step = len(reqs) // args.clients
        procs = [mp.Process(target=client, args=(port, reqs, k * step, args.seconds, q))
                 for k in range(args.clients)]
        t = time.perf_counter()
        for p in procs:
            p.start()
        results = [q.get() for _ in procs]
        wall = time.perf_counter() - t
        for p in procs:
            p.join()
        load_after = os.getloadavg()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(15)
    lat = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    print(f"gunicorn sync workers: {args.workers}; clients: {args.clients}; duration {wall:.1f}s; "
          f"cores {os.cpu_count()}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    print(f"syncs: {len(lat)} ({len(lat) / wall:.0f}/s), errors: {errors}")
    print(f"latency ms: p50 {pct(lat, .50) * 1000:.1f}  p90 {pct(lat, .90) * 1000:.1f}  "
          f"p99 {pct(lat, .99) * 1000:.1f}  max {lat[-1] * 1000:.1f}")


if __name__ == "__main__":
    main()
