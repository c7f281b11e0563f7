"""Shared helpers for the benchmark scripts (not tests: they print numbers).

Baselines are measured in the same run on the same machine: a raw ``curl -T``
monolithic PUT into an empty registry is the ceiling any client can reach.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.registry import RegistryServer  # noqa: E402


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(8 << 20):
            h.update(b)
    return "sha256:" + h.hexdigest()


def fresh_registry(root: Path, name: str) -> RegistryServer:
    return RegistryServer(root / name).start()


def curl_put(registry: RegistryServer, repo: str, path: Path, digest: str) -> float:
    """Seconds for a monolithic ``curl -T`` PUT of ``path`` as one blob."""
    r = requests.post(f"{registry.url}/v2/{repo}/blobs/uploads/", timeout=10)
    r.raise_for_status()
    loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = registry.url + loc
    sep = "&" if "?" in loc else "?"
    t = time.perf_counter()
    subprocess.run(
        [
            "curl", "-sS", "-f", "-o", "/dev/null", "-T", str(path),
            "-H", "Content-Type: application/octet-stream", f"{loc}{sep}digest={digest}",
        ],
        check=True,
    )
    return time.perf_counter() - t


def run_isolated(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str, str, int]:
    """Run ``cmd`` under a fresh python wrapper so its peak RSS is its own."""
    wrapper = (
        "import resource,subprocess,sys,time,json;t=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "dt=time.perf_counter()-t;"
        "print(json.dumps([dt,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss*1024,"
        "p.stdout[-4000:],p.stderr[-4000:],p.returncode]))"
    )
    import json

    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], env={**os.environ, **(env or {})},
                         capture_output=True, text=True, check=True)
    dt, rss, so, se, rc = json.loads(out.stdout)
    return dt, rss, so, se, rc


def scratch() -> Path:
    base = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="ai-models-bench-")
    p = Path(base)
    p.mkdir(parents=True, exist_ok=True)
    return p


def mib(n: float) -> str:
    return f"{n / (1 << 20):.0f} MiB"
