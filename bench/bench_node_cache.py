"""Four pods on one node mount the same model: node cache (CSI plugin) versus init containers.

In one run on one machine, against a real token-auth DMCR (``docker-registry``
whose realm is the hook app, ``tests.support.dmcr``), with a one-layer
ModelPack artifact of ``SIZE_MIB``:

* the init-container baseline: ``python -m jobs materialize`` into a fresh
  directory with the workload's pull credential (each pod does this once, so
  four pods fetch four times the model);
* the node cache: the plugin process on a Unix socket, called as the kubelet
  calls it, four ``NodePublishVolume`` calls for four targets (real read-only
  bind mounts): the first downloads, the next three are cache hits, each one
  still checking the pod's credential against DMCR. Bytes fetched come from
  the plugin's metrics, its peak RSS from the kernel (``VmHWM``).

The two alternate for ``ROUNDS`` rounds with a fresh cache each round; the
medians are reported. ``BENCH_DIR`` chooses the scratch directory. Needs root
(bind mounts). Usage: .venv/bin/python -m bench.bench_node_cache [SIZE_MIB] [ROUNDS]
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench.common import ROOT, mib, run_isolated, scratch
from lib import modelpack
from lib.oci.client import RegistryClient
from tests.support.dmcr import DmcrServer
from tests.test_node_cache import Plugin, publish_request, unmount_under

REPO = "ai-models/catalog/namespaced/bench/model/uid"


def make_model(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n


def push(dmcr: DmcrServer, model: Path) -> str:
    """Push a one-layer ModelPack artifact with the repository's publish credential; its digest."""
    user, pw = dmcr.publish_credential(REPO)
    client = RegistryClient(dmcr.host, username=user, password=pw, insecure=True)

    def chunks():
        with open(model, "rb") as f:
            while b := f.read(8 << 20):
                yield b

    d = client.push_blob(REPO, chunks())
    layer = modelpack.layer_descriptor("model.gguf", "weight", d.digest, d.size)
    config = modelpack.build_config({"format": "GGUF", "family": "llama"}, [layer], name="bench")
    cd = client.push_bytes(REPO, config, modelpack.CONFIG)
    body = modelpack.build_manifest(modelpack.descriptor(modelpack.CONFIG, cd.digest, cd.size), [layer])
    return client.put_manifest(REPO, "bench", body, modelpack.OCI_MANIFEST)


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def materialize_once(r: int, uri: str, auth: Path, secrets: dict[str, str], work: Path,
                     results: dict[str, list[float]]) -> None:
    """The init-container path: one ``python -m jobs materialize`` process into a fresh directory."""
    into = work / "materialized"
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    secs, rss, _, err, rc = run_isolated(
        [sys.executable, "-m", "jobs", "materialize", "--artifact", uri, "--into", str(into),
         "--auth-file", str(auth), "--insecure-registry"])
    assert rc == 0, err
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    fetched = int(err.split(": ", 2)[-1].split(" bytes fetched")[0].rsplit(" ", 1)[-1])
    results["materialize"].append(secs)
    results["materialize_fetched"].append(fetched)
    shutil.rmtree(into)
    print(f"round {r + 1}: materialize {secs:.2f}s (CPU {cpu:.2f}s, fetched {mib(fetched)}, "
          f"peak RSS {mib(rss)}), "
          f"load {os.getloadavg()[0]:.1f}", flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_cache_once(r: int, uri: str, auth: Path, secrets: dict[str, str], work: Path,
                    results: dict[str, list[float]]) -> None:
    """Four pods on the node: a fresh plugin and cache, four publishes of the model."""
    cache = work / f"cache{r}"
    plugin = Plugin(cache).start()
    assert plugin.proc is not None
    try:
        times = []
        os.sync()
        cpu0 = cpu_seconds(plugin.proc.pid)
        for i in range(4):
            target = work / "pods" / f"r{r}p{i}" / "mount"
            target.parent.mkdir(parents=True)
            req = publish_request(target, uri, secrets)
            t = time.perf_counter()
            plugin.node.NodePublishVolume(req, timeout=600)
            times.append(time.perf_counter() - t)
            if i == 0:
                cpu = cpu_seconds(plugin.proc.pid) - cpu0
        m = plugin.metrics()
        rss = peak_rss(plugin.proc.pid)
    finally:
        plugin.cleanup()
        unmount_under(work / "pods")
    shutil.rmtree(work / "pods")
    shutil.rmtree(cache)
    results["first"].append(times[0])
    results["hit"].append(max(times[1:]))
    results["fetched"].append(m["ai_models_node_cache_fetched_bytes_total"])
    results["rss"].append(rss)
    print(f"round {r + 1}: node cache first {times[0]:.2f}s (plugin CPU {cpu:.2f}s), hits "
          f"{', '.join(f'{t * 1000:.0f}ms' for t in times[1:])}, "
          f"fetched {mib(m['ai_models_node_cache_fetched_bytes_total'])}, plugin peak RSS {mib(rss)}, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)


def main() -> int:
    size = int(sys.argv[1]) << 20 if len(sys.argv) > 1 else 1 << 30
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = scratch() / "node-cache"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results: dict[str, list[float]] = {"materialize": [], "first": [], "hit": [], "fetched": [], "rss": [],
                                       "materialize_fetched": []}
    with DmcrServer(work / "dmcr") as dmcr:
        model = work / "model.gguf"
        make_model(model, size)
        digest = push(dmcr, model)
        model.unlink()
        uri = f"{dmcr.host}/{REPO}@{digest}"
        user, pw = dmcr.pull_credential([REPO])
        auth = dmcr.auth_file(work / "pull.json", user, pw)
        secrets = {".dockerconfigjson": auth.read_text()}
        load = os.getloadavg()[0]
        print(f"model {mib(size)}, {rounds} rounds, scratch {work}, load {load:.1f}", flush=True)
        try:
            for r in range(rounds):
                # Alternate which contender goes first (ABBA), so page cache and writeback order even out.
                order = [materialize_once, node_cache_once]
                for contender in order if r % 2 == 0 else order[::-1]:
                    contender(r, uri, auth, secrets, work, results)
        finally:
            unmount_under(work)
    med = {k: statistics.median(v) for k, v in results.items()}
    summary = {
        "size_bytes": size,
        "rounds": rounds,
        "materialize_s": round(med["materialize"], 3),
        "first_mount_s": round(med["first"], 3),
        "first_over_materialize": round(med["first"] / med["materialize"], 3),
        "slowest_hit_s": round(med["hit"], 4),
        "fetched_over_size_node_cache": round(med["fetched"] / size, 3),
        "fetched_over_size_init_containers": round(4 * med["materialize_fetched"] / size, 3),
        "plugin_peak_rss_mib": round(max(results["rss"]) / (1 << 20), 1),
    }
    print(json.dumps(summary, indent=2))
    ok = (summary["first_over_materialize"] <= 1.1 and summary["slowest_hit_s"] < 0.2
          and summary["fetched_over_size_node_cache"] == 1.0 and summary["plugin_peak_rss_mib"] <= 128)
    print("targets met" if ok else "targets NOT met", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
