"""push_blob vs a raw ``curl -T`` monolithic PUT of the same file (time, peak RSS).

Each contender gets a fresh, empty docker-registry; the file is hashed once
first so the page cache is warm for everyone. ``push_blob`` runs in its own
interpreter so its peak RSS is its own. A second push with ``digest=`` shows
the HEAD skip (no bytes sent). Usage:
    .venv/bin/python bench/bench_oci.py [SIZE_MIB [REPEAT [SEGMENT_MIB]]]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
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
    repeat = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    seg = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    work = scratch()
    blob = work / "blob.bin"
    make_file(blob, size_mib << 20)
    size = blob.stat().st_size
    digest = sha256_file(blob)
    env = {"PYTHONPATH": str(ROOT)}
    curl_t: list[float] = []
    push_t: list[float] = []
    again_t: list[float] = []
    rss: list[int] = []
    # Alternate the contenders so a busy machine slows both alike; report min and median.
    for i in range(repeat):
        r = fresh_registry(work, f"reg-curl-{i}")
        try:
            curl_t.append(curl_put(r, "bench/curl", blob, digest))
        finally:
            r.stop()
            shutil.rmtree(work / f"reg-curl-{i}", ignore_errors=True)
        r = fresh_registry(work, f"reg-push-{i}")
        try:
            cmd = [sys.executable, "-c", PUSH, r.host, "bench/oci", str(blob), str(size), str(seg), "-"]
            t, peak, out, err, rc = run_isolated(cmd, env=env)
            assert rc == 0 and out.split()[0] == digest, err
            push_t.append(t)
            rss.append(peak)
            cmd[-1] = digest  # again with the digest: HEAD, skip, nothing sent
            t2, _, _, err2, rc2 = run_isolated(cmd, env=env)
            assert rc2 == 0, err2
            again_t.append(t2)
        finally:
            r.stop()
            shutil.rmtree(work / f"reg-push-{i}", ignore_errors=True)
    rows = {
        "size": mib(size),
        "segment": mib(seg << 20),
        "runs": repeat,
        "curl_put_s": {"min": round(min(curl_t), 2), "median": round(statistics.median(curl_t), 2)},
        "push_blob_s": {"min": round(min(push_t), 2), "median": round(statistics.median(push_t), 2)},
        "push_blob_vs_curl_min": round(min(push_t) / min(curl_t), 2),
        "push_blob_vs_curl_median": round(statistics.median(push_t) / statistics.median(curl_t), 2),
        "push_blob_peak_rss": mib(max(rss)),
        "push_again_s": round(statistics.median(again_t), 2),
    }
    print(json.dumps(rows, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
