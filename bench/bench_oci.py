"""push_blob vs a raw ``curl -T`` monolithic PUT of the same file (time, peak RSS).

Each contender gets a fresh, empty docker-registry; the file is hashed once
first so the page cache is warm for everyone. ``push_blob`` runs in its own
interpreter so its peak RSS is its own. A second push with ``digest=`` shows
the HEAD skip (no bytes sent). Usage:
    .venv/bin/python bench/bench_oci.py [SIZE_MIB] [SEGMENT_MIB ...]
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from bench.common import ROOT, curl_put, fresh_registry, mib, run_isolated, scratch, sha256_file

PUSH = """
import sys, time
from lib.oci.client import RegistryClient
host, repo, path, size, seg, digest = sys.argv[1:7]
c = RegistryClient(host, insecure=True, segment_size=int(seg) << 20)
def chunks():
    with open(path, "rb", buffering=0) as f:
        while b := f.read(1 << 20):
            yield b
t = time.perf_counter()
d = c.push_blob(repo, chunks(), size=int(size), digest=digest if digest != "-" else None)
print(d.digest, time.perf_counter() - t)
"""


def make_file(path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n


def main() -> int:
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    segments = [int(a) for a in sys.argv[2:]] or [64, 16]
    work = scratch()
    blob = work / "blob.bin"
    make_file(blob, size_mib << 20)
    size = blob.stat().st_size
    digest = sha256_file(blob)
    env = {"PYTHONPATH": str(ROOT)}
    rows: dict[str, object] = {"size": mib(size)}
    r = fresh_registry(work, "reg-curl")
    try:
        rows["curl_put_s"] = t_curl = round(curl_put(r, "bench/curl", blob, digest), 2)
    finally:
        r.stop()
    for seg in segments:
        r = fresh_registry(work, f"reg-push-{seg}")
        try:
            cmd = [sys.executable, "-c", PUSH, r.host, "bench/oci", str(blob), str(size), str(seg), "-"]
            t, rss, out, err, rc = run_isolated(cmd, env=env)
            assert rc == 0, err
            assert out.split()[0] == digest, out
            rows[f"push_blob_seg{seg}_s"] = round(t, 2)
            rows[f"push_blob_seg{seg}_vs_curl"] = round(t / t_curl, 2)
            rows[f"push_blob_seg{seg}_peak_rss"] = mib(rss)
            cmd[-1] = digest  # again with the digest: HEAD, skip, nothing sent
            t2, rss2, out2, err2, rc2 = run_isolated(cmd, env=env)
            assert rc2 == 0, err2
            rows[f"push_again_seg{seg}_s"] = round(t2, 2)
        finally:
            r.stop()
            shutil.rmtree(work / f"reg-push-{seg}", ignore_errors=True)
    print(json.dumps(rows, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
