"""Several publish jobs at once against one registry: shared throughput, bounded memory per worker.

Writes ``--jobs`` + 1 distinct GGUF files of ``--size-mib`` each
(``devstack/models.make_large_gguf``: random, incompressible data), starts
one local ``docker-registry``, then runs ``python -m jobs publish`` (the real
worker, local source) first alone, then ``--jobs`` at once, each in its own
repository and each under a wrapper that reports the worker's own peak RSS.

Throughput is file bytes / wall time. The local source reads each file twice
(once to hash, so a re-run skips blobs the registry holds; once to upload,
from the page cache), and registry and workers share the machine's cores.

    .venv/bin/python bench/bench_concurrent_publish.py --jobs 3 --size-mib 384
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_registry, mib, run_isolated, scratch  # noqa: E402
from devstack.models import make_large_gguf  # noqa: E402


def publish_cmd(source: Path, registry: str, repo: str, result: Path) -> list[str]:
    return [sys.executable, "-m", "jobs", "publish", "--source", str(source), "--destination",
            f"{registry}/{repo}", "--insecure-registry", "--result-file", str(result)]


def run_jobs(cmds: list[list[str]]) -> tuple[float, list[tuple[float, int, int]]]:
    """Run the commands at once; (wall seconds, [(seconds, peak RSS bytes, exit code)])."""
    out: list[tuple[float, int, int]] = [(0.0, 0, -1)] * len(cmds)

    def one(i: int) -> None:
        dt, rss, _, err, rc = run_isolated(cmds[i])
        if rc:
            print(f"job {i} failed: {err[-1500:]}", file=sys.stderr)
        out[i] = (dt, rss, rc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(cmds))]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=384)
    args = ap.parse_args()
    root = scratch()
    size = args.size_mib << 20
    files = []
    for i in range(args.jobs + 1):
        d = root / f"model{i}"
        f = d / "model.gguf"
        if not f.exists() or abs(f.stat().st_size - size) > (1 << 20):
            make_large_gguf(f, size)
        files.append(d)
    nbytes = [(d / "model.gguf").stat().st_size for d in files]
    reg = fresh_registry(root, f"registry-{os.getpid()}")
    try:
        wall1, single = run_jobs([publish_cmd(files[0], reg.host, "bench/single", root / "single.json")])
        load = os.getloadavg()
        cmds = [publish_cmd(files[i + 1], reg.host, f"bench/concurrent{i}", root / f"c{i}.json")
                for i in range(args.jobs)]
        wallk, many = run_jobs(cmds)
        load_after = os.getloadavg()
    finally:
        reg.stop()
    print(f"files: {args.jobs + 1} x {mib(nbytes[0])} GGUF; cores {os.cpu_count()}; "
          f"load average (1 min) {load[0]:.2f} before the concurrent run, {load_after[0]:.2f} after")
    print(f"single job:      {mib(nbytes[0])} in {wall1:.1f}s = {nbytes[0] / wall1 / (1 << 20):.0f} MiB/s, "
          f"peak RSS {mib(single[0][1])}, exit {single[0][2]}")
    total = sum(nbytes[1:])
    rate = total / wallk / (1 << 20)
    print(f"{args.jobs} jobs at once: {mib(total)} in {wallk:.1f}s = {rate:.0f} MiB/s aggregate")
    for i, (dt, rss, rc) in enumerate(many):
        rate = nbytes[i + 1] / dt / (1 << 20)
        print(f"  job {i}: {dt:.1f}s = {rate:.0f} MiB/s, peak RSS {mib(rss)}, exit {rc}")


if __name__ == "__main__":
    main()
