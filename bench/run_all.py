"""`make bench`: every benchmark script in turn, each in its own process.

Benchmarks print numbers; they are not tests and assert nothing about
timing. Set BENCH_ONLY=name[,name] to run a subset.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BENCHES = [
    ("bench_publish", ["1024"]),
    ("bench_oci", ["1024", "3"]),
    ("bench_hf", []),
    ("bench_upload", []),
    ("bench_materialize", ["1024", "3"]),
    ("bench_hooks", []),
    ("bench_load", []),
    ("bench_concurrent_publish", []),
    ("bench_dmcr", ["256", "2000"]),
    ("bench_mounts", ["10", "64"]),
]


def main() -> int:
    only = {n for n in os.environ.get("BENCH_ONLY", "").split(",") if n}
    failed = []
    for name, args in BENCHES:
        if only and name not in only:
            continue
        if not (ROOT / "bench" / f"{name}.py").exists():
            continue
        print(f"\n=== {name} {' '.join(args)}", flush=True)
        rc = subprocess.run([sys.executable, "-m", f"bench.{name}", *args], cwd=ROOT).returncode
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
