"""Benchmark the Model sync hook under gunicorn against a trivial Flask JSON echo.

Both apps run in the same process layout (gunicorn, ``hooks/gunicorn_conf.py``,
2 gevent workers, keep-alive) in the same run, alternating rounds so that machine
noise hits both alike; 8 client threads each hold one keep-alive
``http.client`` connection and POST the same request body in a loop.

Requests (built with ``tests/support/hookreq.py``, i.e. what Metacontroller sends):
- ``ready``: a Ready Model whose Job, credential Secret, RBAC and worker Pod
  (with its result in the termination message) are still observed: the call
  that turns the result into status and the next ones;
- ``publishing``: a Model publishing with a progress annotation on its Job.

The echo app parses the JSON body and answers it re-serialised (the same
request parsing and a response of similar size, no hook logic).

    .venv/bin/python bench/bench_hooks.py [--seconds 2] [--rounds 12] [--clients 8]

Targets (issue 5): sync throughput >= 0.6x echo, sync p99 <= 2x echo p99.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hooks import model as hooks_model  # noqa: E402
from lib.config import Config  # noqa: E402
from tests.support import hookreq as hr  # noqa: E402

ECHO_APP = """
import json
from flask import Flask, Response, request

app = Flask("echo")


@app.post("/hooks/model/sync")
def echo():
    body = request.get_json(force=True, silent=True)
    return Response(json.dumps(body, sort_keys=True), mimetype="application/json")


@app.get("/healthz")
def healthz():
    return Response("{}", mimetype="application/json")
"""


def build_requests() -> dict[str, bytes]:
    cfg = Config(signing_key=BENCH_KEY)
    parent = hr.model()
    first = hooks_model.model_sync(hr.sync_request(parent), cfg)
    desired = first["children"]
    job = hr.find_child(desired, "Job")
    dest = job["spec"]["template"]["spec"]["containers"][0]["args"][4]
    done = hr.observe(job, status=hr.job_status(succeeded=1, condition="Complete"))
    others = [hr.observe(c) for c in desired if c["kind"] != "Job"]
    pod = hr.pod_of(done, exit_code=0, message=hr.success_result(dest))
    ready_answer = hooks_model.model_sync(
        hr.sync_request(hr.next_parent(parent, first), [done, *others], [pod]), cfg
    )
    ready = hr.sync_request(hr.next_parent(parent, ready_answer), [done, *others], [pod])
    run = hr.observe(job, status=hr.job_status(active=1), annotations={"ai.deckhouse.io/progress": "42%"})
    publishing = hr.sync_request(hr.next_parent(parent, first), [run, *others], [hr.pod_of(run)])
    return {"ready": json.dumps(ready).encode(), "publishing": json.dumps(publishing).encode()}


# The hook service refuses to start without a real signing key (docs/security.md).
BENCH_KEY = os.urandom(32)
_KEY_FILE = tempfile.NamedTemporaryFile(prefix="bench-signing-", delete=False)
_KEY_FILE.write(BENCH_KEY.hex().encode())
_KEY_FILE.close()
os.environ["AI_MODELS_SIGNING_KEY_FILE"] = _KEY_FILE.name  # every server process reads it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(app: str, port: int, cwd: Path, extra_path: str = "") -> subprocess.Popen:
    env = {
        **os.environ,
        "AI_MODELS_LISTEN": f"127.0.0.1:{port}",
        "AI_MODELS_HOOK_WORKERS": "2",
        "PYTHONPATH": os.pathsep.join(p for p in (extra_path, str(ROOT)) if p),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "hooks" / "gunicorn_conf.py"), app],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                c.close()
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{app} did not start")


def load(port: int, body: bytes, seconds: float, clients: int) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, errors) of ``clients`` keep-alive loops for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.perf_counter() + seconds
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Content-Type": "application/json"}
        barrier.wait()
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                conn.request("POST", "/hooks/model/sync", body=body, headers=headers)
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    errors[i] += 1
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            latencies[i].append(time.perf_counter() - t)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    barrier.wait()
    started = time.perf_counter()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - started
    lat = sorted(x for part in latencies for x in part)
    if not lat:
        return 0.0, 0.0, 0.0, sum(errors)
    p50 = lat[len(lat) // 2] * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    return len(lat) / elapsed, p50, p99, sum(errors)


def service_times(
    app_spec: str, pythonpath: str, bodies: dict[str, bytes], n: int = 100, repeat: int = 15
) -> dict[str, tuple[float, float]]:
    """In-process cost per request (µs) of echo and the app through Flask's test client, no network.

    The best of ``repeat`` alternating batches: the minimum is the least
    disturbed by other processes on a shared machine.
    """
    import importlib
    import types

    echo_mod = types.ModuleType("bench_echo_inproc")
    exec(ECHO_APP, echo_mod.__dict__)
    if pythonpath:
        sys.path.insert(0, pythonpath)
    module, _, attr = app_spec.partition(":")
    apps = {"echo": echo_mod.app, "sync": getattr(importlib.import_module(module), attr)}
    out = {}
    for scenario, body in bodies.items():
        clients = [app.test_client() for app in apps.values()]
        best = [float("inf")] * len(clients)
        for _ in range(repeat):
            for i, client in enumerate(clients):
                t = time.perf_counter()
                for _ in range(n):
                    client.post("/hooks/model/sync", data=body, content_type="application/json")
                best[i] = min(best[i], (time.perf_counter() - t) / n * 1e6)
        out[scenario] = (best[0], best[1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--app", default="hooks.app:app", help="WSGI app under test (default: the real one)")
    ap.add_argument("--pythonpath", default="", help="extra import path for --app (experiments)")
    args = ap.parse_args()
    bodies = build_requests()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench_echo_app.py").write_text(ECHO_APP)
        echo_port, hook_port = free_port(), free_port()
        echo = start("bench_echo_app:app", echo_port, Path(tmp), extra_path=tmp)
        hook = start(args.app, hook_port, ROOT, extra_path=args.pythonpath)
        try:
            ok = True
            for scenario, body in bodies.items():
                res: dict[str, list[tuple[float, float, float, int]]] = {"echo": [], "sync": []}
                load(echo_port, body, 1.0, args.clients)  # warm-up
                load(hook_port, body, 1.0, args.clients)
                for _ in range(args.rounds):
                    res["echo"].append(load(echo_port, body, args.seconds, args.clients))
                    res["sync"].append(load(hook_port, body, args.seconds, args.clients))
                e_rps = statistics.median(r[0] for r in res["echo"])
                s_rps = statistics.median(r[0] for r in res["sync"])
                e_p99 = statistics.median(r[2] for r in res["echo"])
                s_p99 = statistics.median(r[2] for r in res["sync"])
                e_p50 = statistics.median(r[1] for r in res["echo"])
                s_p50 = statistics.median(r[1] for r in res["sync"])
                errs = sum(r[3] for v in res.values() for r in v)
                ratio, p99_ratio = s_rps / e_rps, s_p99 / e_p99
                passed = ratio >= 0.6 and p99_ratio <= 2.0 and errs == 0
                ok &= passed
                print(
                    f"[{scenario}] request {len(body)} bytes, {args.clients} clients, "
                    f"{args.rounds}x{args.seconds:g}s rounds (medians)"
                )
                print(f"  echo: {e_rps:7.0f} req/s  p50 {e_p50:6.2f} ms  p99 {e_p99:6.2f} ms")
                print(f"  sync: {s_rps:7.0f} req/s  p50 {s_p50:6.2f} ms  p99 {s_p99:6.2f} ms")
                print(
                    f"  sync/echo throughput {ratio:.2f} (>= 0.60), p99 {p99_ratio:.2f}x (<= 2.00), "
                    f"errors {errs}: {'PASS' if passed else 'FAIL'}"
                )
            for scenario, (e_us, s_us) in service_times(args.app, args.pythonpath, bodies).items():
                print(
                    f"[{scenario}] in-process cost per request: echo {e_us:.0f} us, sync {s_us:.0f} us "
                    f"(ratio {e_us / s_us:.2f})"
                )
            return 0 if ok else 1
        finally:
            for p in (echo, hook):
                p.terminate()
                p.wait(10)


if __name__ == "__main__":
    sys.exit(main())
