"""A GGUF uploaded with curl through ``upload-server`` vs a raw ``curl -T`` PUT into the registry.

Both contenders get a fresh, empty docker-registry. The raw baseline is the
monolithic blob PUT (POST for a Location, then ``curl -T FILE
"$LOCATION&digest=sha256:..."``), the fastest any client can hand the bytes
to the registry. The upload path is what a user runs: ``curl -T FILE
"$UPLOAD_URL"`` into ``python -m jobs upload-server`` (its own process),
which streams the body into a blob, inspects the GGUF header on the way and
pushes the ModelPack config and manifest. The server's peak RSS comes from
``wait4`` on its process. Usage:
    .venv/bin/python bench/bench_upload.py [SIZE_MIB [REPEAT]]
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, curl_put, fresh_registry, mib, scratch, sha256_file
from devstack.models import make_large_gguf
from devstack.registry import free_port

TOKEN = "bench-token"


def through_server(work: Path, registry_root: Path, path: Path, n: int) -> tuple[float, int, dict]:
    reg = fresh_registry(registry_root, f"reg-server-{n}")
    try:
        (work / "token").write_text(TOKEN)
        port = free_port()
        result_file = work / f"result-{n}.json"
        cmd = [
            sys.executable, "-m", "jobs", "upload-server",
            "--destination", f"{reg.host}/ai-models/bench/upload{n}",
            "--listen", f"127.0.0.1:{port}", "--token-file", str(work / "token"),
            "--insecure-registry", "--result-file", str(result_file), "--scratch-dir", str(work / "scratch"),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError("upload-server did not start") from None
                time.sleep(0.05)
        t = time.perf_counter()
        out = subprocess.run(
            ["curl", "-fsS", "-H", f"Authorization: Bearer {TOKEN}", "-T", str(path), f"http://127.0.0.1:{port}/upload"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        dt = time.perf_counter() - t
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"upload-server exited {proc.returncode}: {result_file.read_text()}")
        return dt, usage.ru_maxrss * 1024, json.loads(out.stdout)
    finally:
        reg.stop()


def main() -> None:
    size = int(sys.argv[1]) << 20 if len(sys.argv) > 1 else 1 << 30
    repeat = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = scratch()
    try:
        path = make_large_gguf(work / "model.gguf", size)
        digest = sha256_file(path)  # also warms the page cache for every contender
        raw, server, rss = [], [], []
        for n in range(repeat):
            reg = fresh_registry(work / "registries", f"reg-raw-{n}")
            try:
                raw.append(curl_put(reg, f"bench/raw{n}", path, digest))
            finally:
                reg.stop()
            dt, peak, result = through_server(work, work / "registries", path, n)
            assert result["artifact"]["digest"].startswith("sha256:"), result
            server.append(dt)
            rss.append(peak)
            shutil.rmtree(work / "registries", ignore_errors=True)
        raw_s, srv_s = statistics.median(raw), statistics.median(server)
        print(f"file: {mib(path.stat().st_size)} GGUF, {repeat} runs, median")
        print(f"raw curl -T monolithic PUT into the registry: {raw_s:.2f} s  ({[round(x, 2) for x in raw]})")
        print(
            f"curl -T through upload-server (publish):     {srv_s:.2f} s  ({[round(x, 2) for x in server]})"
        )
        print(f"ratio: {srv_s / raw_s:.2f}x (target <= 1.5x)")
        print(f"upload-server peak RSS: {mib(max(rss))} (target <= 256 MiB)")
    finally:
        if not os.environ.get("BENCH_DIR"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
