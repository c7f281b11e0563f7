"""Publish a ≥ 1 GiB GGUF from disk into a local docker-registry.

Compares, in one run: a raw ``curl -T`` monolithic PUT of the same file into
an empty registry; ``python -m jobs publish`` into another empty registry
(time, peak RSS); and the same publish again (nothing sent, only hashing).
Usage: .venv/bin/python bench/bench_publish.py [SIZE_MIB]
"""

from __future__ import annotations

import json
import shutil
import sys

from bench.common import ROOT, curl_put, fresh_registry, mib, run_isolated, scratch, sha256_file


def main() -> int:
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    from devstack.models import make_large_gguf

    work = scratch()
    model = make_large_gguf(work / "model.gguf", size_mib << 20)
    size = model.stat().st_size
    digest = sha256_file(model)  # also warms the page cache for every contender

    r1 = fresh_registry(work, "reg-curl")
    try:
        t_curl = curl_put(r1, "bench/curl", model, digest)
    finally:
        r1.stop()
    r2 = fresh_registry(work, "reg-publish")
    try:
        cmd = [sys.executable, "-m", "jobs", "publish", "--source", str(model),
               "--destination", f"{r2.host}/bench/model", "--insecure-registry",
               "--result-file", str(work / "result.json")]
        t1, rss1, _, err1, rc1 = run_isolated(cmd, env={"PYTHONPATH": str(ROOT)})
        assert rc1 == 0, err1
        t2, rss2, _, err2, rc2 = run_isolated(cmd, env={"PYTHONPATH": str(ROOT)})
        assert rc2 == 0, err2
    finally:
        r2.stop()
    rows = {
        "size": mib(size),
        "curl_put_s": round(t_curl, 2),
        "publish_s": round(t1, 2),
        "publish_vs_curl": round(t1 / t_curl, 2),
        "publish_peak_rss": mib(rss1),
        "republish_s": round(t2, 2),
        "republish_vs_first": round(t2 / t1, 2),
        "republish_peak_rss": mib(rss2),
    }
    print(json.dumps(rows, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
