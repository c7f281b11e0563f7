"""Materialize a ≥ 1 GiB artifact from a local docker-registry, against raw ``curl``.

In one run on one machine: push a ModelPack artifact holding one large GGUF
layer; time a raw ``curl -o FILE`` GET of that blob (the ceiling: no hashing,
no Python); time ``python -m jobs materialize`` of the artifact into a fresh
directory (process start, manifest, streaming, sha256, rename) with its peak
RSS; the same ``materialize()`` call inside this process (the transfer
without interpreter start-up); then the same command again on the filled directory (the skip path).
Each contender runs ``ROUNDS`` times, alternating; the ratios are reported on
the medians and on the best rounds (best-of-N is what the machine can do when
other work leaves it alone; the median shows the noise).
``BENCH_DIR`` chooses the scratch directory (e.g. ``/dev/shm`` to take the
disk out of the comparison).
Usage: .venv/bin/python bench/bench_materialize.py [SIZE_MIB] [ROUNDS]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, fresh_registry, mib, run_isolated, scratch


def push(host: str, repo: str, model: Path) -> tuple[str, str, int]:
    """Push a one-layer ModelPack artifact; returns (manifest digest, layer digest, size)."""
    from lib import modelpack
    from lib.oci.client import RegistryClient

    client = RegistryClient(host, insecure=True)

    def chunks():
        with open(model, "rb") as f:
            while b := f.read(8 << 20):
                yield b

    d = client.push_blob(repo, chunks())
    layer = modelpack.layer_descriptor(model.name, "weight", d.digest, d.size)
    config = modelpack.build_config({"format": "GGUF", "family": "llama"}, [layer], name="bench")
    cd = client.push_bytes(repo, config, modelpack.CONFIG)
    body = modelpack.build_manifest(modelpack.descriptor(modelpack.CONFIG, cd.digest, cd.size), [layer])
    return client.put_manifest(repo, "bench", body, modelpack.OCI_MANIFEST), d.digest, d.size


def curl_get(url: str, out: Path) -> float:
    os.sync()  # earlier rounds' dirty pages must not be written back on this round's clock
    t = time.perf_counter()
    subprocess.run(["curl", "-sS", "-f", "-o", str(out), url], check=True)
    dt = time.perf_counter() - t
    out.unlink()
    return dt


def in_process(host: str, manifest: str, into: Path) -> float:
    """The transfer alone (no interpreter start-up, no imports): ``materialize()`` in this process."""
    from lib.oci.client import RegistryClient
    from lib.pull import materialize

    os.sync()
    t = time.perf_counter()
    with RegistryClient(host, insecure=True) as client:
        materialize(client, "bench/materialize", manifest, into, log=lambda m: None)
    dt = time.perf_counter() - t
    shutil.rmtree(into)
    return dt


def main() -> int:
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    from devstack.models import make_large_gguf

    work = scratch()
    model = make_large_gguf(work / "model.gguf", size_mib << 20)
    registry = fresh_registry(work, "registry")
    try:
        manifest, layer, size = push(registry.host, "bench/materialize", model)
        model.unlink()
        blob_url = f"{registry.url}/v2/bench/materialize/blobs/{layer}"
        curl_get(blob_url, work / "warm.out")  # registry's blob file into the page cache
        env = {"PYTHONPATH": str(ROOT)}
        curl_s, mat_s, inproc_s, rss = [], [], [], 0
        for i in range(rounds):  # alternate, so background load hits both alike
            curl_s.append(curl_get(blob_url, work / "curl.out"))
            inproc_s.append(in_process(registry.host, manifest, work / "inproc"))
            into = work / f"models-{i}" / "bench"
            cmd = [sys.executable, "-m", "jobs", "materialize", "--insecure-registry",
                   "--artifact", f"{registry.host}/bench/materialize@{manifest}", "--into", str(into)]
            os.sync()
            dt, peak, _, err, rc = run_isolated(cmd, env=env)
            assert rc == 0, err
            assert (into / model.name).stat().st_size == size
            mat_s.append(dt)
            rss = max(rss, peak)
            if i < rounds - 1:
                shutil.rmtree(into.parent)
        skip_s, _, _, err, rc = run_isolated(cmd, env=env)
        assert rc == 0 and "nothing to do" in err, err
    finally:
        registry.stop()
    t_curl, t_mat, t_in = statistics.median(curl_s), statistics.median(mat_s), statistics.median(inproc_s)
    rows = {
        "size": mib(size),
        "curl_get_s": [round(x, 2) for x in curl_s],
        "materialize_s": [round(x, 2) for x in mat_s],
        "curl_MiBps_median": round(size / t_curl / (1 << 20)),
        "materialize_MiBps_median": round(size / t_mat / (1 << 20)),
        "materialize_vs_curl_throughput_median": round(t_curl / t_mat, 3),
        "materialize_vs_curl_throughput_best": round(min(curl_s) / min(mat_s), 3),
        "in_process_s": [round(x, 2) for x in inproc_s],
        "in_process_vs_curl_throughput_median": round(t_curl / t_in, 3),
        "in_process_vs_curl_throughput_best": round(min(curl_s) / min(inproc_s), 3),
        "materialize_peak_rss": mib(rss),
        "skip_s": round(skip_s, 2),
    }
    print(json.dumps(rows, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
