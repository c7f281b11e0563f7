"""Hugging Face stand-in → adapter (→ worker → registry) throughput for a ≥ 1 GiB file.

Measured in one run, each against the same page-cached file:

- ``curl_hub``: ``curl -L`` of the file from the stand-in alone (302 to its
  "CDN" host, served with sendfile) — the source end's ceiling;
- ``adapter``: ``HuggingFaceSource`` resolving the repo and streaming every
  selected file to nowhere (no hashing) in a separate process, with its peak RSS;
- ``curl_put``: a monolithic ``curl -T`` PUT into an empty registry — the
  registry end's ceiling (``bench.common.curl_put``);
- ``publish``: ``python -m jobs publish --source https://huggingface.co/...``
  with ``HF_ENDPOINT`` pointing at the stand-in, into another empty registry:
  the full path, its time relative to the slower end, and its peak RSS.

The registry end and the publish are measured twice each (alternating, after
``sync``) and the best of each compared. Usage:
``BENCH_DIR=/dev/shm/x .venv/bin/python -m bench.bench_hf [SIZE_MIB [ROUNDS]] [--no-publish]``
(``BENCH_DIR`` on tmpfs takes the disk's writeback noise out of the comparison).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from bench.common import ROOT, curl_put, fresh_registry, mib, run_isolated, scratch, sha256_file

REPO = "bench/big-model"

ADAPTER = """
import sys, time
from lib.sources.huggingface import HuggingFaceSource
src = HuggingFaceSource("https://huggingface.co/" + sys.argv[2], token=None, endpoint=sys.argv[1])
t = time.perf_counter()
n = 0
for f in src.snapshot().files:
    with f.open(0) as chunks:
        for c in chunks:
            n += len(c)
print(n, time.perf_counter() - t)
"""


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    size_mib = int(args[0]) if args else 1024
    with_publish = "--no-publish" not in sys.argv
    rounds = int(args[1]) if len(args) > 1 else 2
    from devstack.hf_hub import HubStandIn
    from devstack.models import make_large_gguf

    work = scratch()
    model_dir = work / "repo"
    model = make_large_gguf(model_dir / "model.gguf", size_mib << 20)
    (model_dir / "README.md").write_text("# bench\n")
    size = model.stat().st_size
    digest = sha256_file(model)  # warms the page cache for every contender
    rows: dict[str, object] = {"size": mib(size)}

    with HubStandIn() as hub:
        repo = hub.add_repo(REPO, model_dir)
        url = f"{hub.endpoint}/{REPO}/resolve/{repo.commit}/model.gguf"
        t = time.perf_counter()
        subprocess.run(["curl", "-sS", "-f", "-L", "-o", "/dev/null", url], check=True)
        t_hub = time.perf_counter() - t
        rows["curl_hub_s"] = round(t_hub, 2)
        rows["curl_hub_MiBps"] = round(size / t_hub / (1 << 20))

        dt, rss, out, err, rc = run_isolated([sys.executable, "-c", ADAPTER, hub.endpoint, REPO],
                                             env={"PYTHONPATH": str(ROOT)})
        assert rc == 0, err
        n, t_adapter = out.split()
        assert int(n) >= size, out
        rows["adapter_s"] = round(float(t_adapter), 2)
        rows["adapter_MiBps"] = round(size / float(t_adapter) / (1 << 20))
        rows["adapter_vs_curl_hub"] = round(t_hub / float(t_adapter), 2)
        rows["adapter_peak_rss"] = mib(rss)

        if with_publish:
            # Best of ``rounds`` for both ends of the comparison, each into an
            # empty registry after a sync, so writeback of the previous run's
            # gigabyte does not land on the next one.
            t_puts, t_pubs, rss_pubs = [], [], []
            for i in range(rounds):
                os.sync()
                r1 = fresh_registry(work, f"reg-curl{i}")
                try:
                    t_puts.append(curl_put(r1, "bench/curl", model, digest))
                finally:
                    r1.stop()
                    shutil.rmtree(work / f"reg-curl{i}", ignore_errors=True)
                os.sync()
                r2 = fresh_registry(work, f"reg-publish{i}")
                try:
                    cmd = [sys.executable, "-m", "jobs", "publish", "--source", f"https://huggingface.co/{REPO}",
                           "--destination", f"{r2.host}/bench/model", "--insecure-registry",
                           "--result-file", str(work / "result.json")]
                    t_pub, rss_pub, _, err, rc = run_isolated(cmd, env={"PYTHONPATH": str(ROOT),
                                                                        "HF_ENDPOINT": hub.endpoint})
                    assert rc == 0, err
                finally:
                    r2.stop()
                    shutil.rmtree(work / f"reg-publish{i}", ignore_errors=True)
                result = json.loads((work / "result.json").read_text())
                assert result.get("source", {}).get("resolvedRevision") == repo.commit, result
                t_pubs.append(t_pub)
                rss_pubs.append(rss_pub)
            t_put, t_pub = min(t_puts), min(t_pubs)
            slower = max(t_put, t_hub)
            rows["curl_put_s"] = [round(t, 2) for t in t_puts]
            rows["publish_s"] = [round(t, 2) for t in t_pubs]
            rows["publish_MiBps"] = round(size / t_pub / (1 << 20))
            rows["publish_vs_slower_end"] = round(slower / t_pub, 2)  # best vs best; ≥ 0.9 is the target
            rows["publish_peak_rss"] = mib(max(rss_pubs))

    print(json.dumps(rows, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
