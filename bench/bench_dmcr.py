"""DMCR at scale: publish throughput on S3 vs the filesystem, and a GC pass over 2,000 repositories.

In one run, on this machine:
1. ``python -m jobs publish`` of one GGUF into docker-registry on a local
   filesystem and into the same registry on S3 (moto server on loopback);
2. ``python -m jobs gc`` over N repositories (default 2,000: each a ModelPack
   manifest, its revision/tag/layer links, a unique weight blob; plus N/10
   deleted models whose blobs are left to reclaim), on both storages. The
   layout is written straight into the storage, as distribution lays it out.

moto keeps objects in memory and is Python: the S3 figures are a floor for
what a real object store gives, not a forecast.
Usage: .venv/bin/python -m bench.bench_dmcr [SIZE_MIB] [REPOSITORIES]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from bench.common import ROOT, mib, run_isolated, scratch
from devstack.registry import RegistryServer
from jobs.gc import REPOS, blob_path
from jobs.gc_storage import Storage, from_registry_config
from tests.support.s3 import MotoServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def publish_seconds(reg: RegistryServer, model: Path, work: Path) -> float:
    cmd = [sys.executable, "-m", "jobs", "publish", "--source", str(model), "--destination",
           f"{reg.host}/bench/model", "--insecure-registry", "--result-file", str(work / "result.json")]
    t, _, _, err, rc = run_isolated(cmd, env={"PYTHONPATH": str(ROOT)})
    assert rc == 0, err
    return t


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _link(repo: str, kind: str, digest: str) -> str:
    return f"{REPOS}{repo}/{kind}/sha256/{digest[7:]}/link"


def plant_repository(storage: Storage, i: int, config: str, *, deleted: bool) -> None:
    """One model as distribution stores it (``deleted``: as cleanup leaves it: blob data only)."""
    repo = f"ai-models/catalog/namespaced/bench/m{i}/{i:08x}"
    layer = f"weights of model {i}".encode() * 64
    d_layer = _digest(layer)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": config,
                                  "size": 2},
                       "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": d_layer,
                                   "size": len(layer)}]}).encode()
    d_manifest = _digest(body)
    storage.write(blob_path(d_layer), layer)
    storage.write(blob_path(d_manifest), body)
    if deleted:
        return
    for kind, d in (("_layers", config), ("_layers", d_layer), ("_manifests/revisions", d_manifest)):
        storage.write(_link(repo, kind, d), d.encode())
    storage.write(f"{REPOS}{repo}/_manifests/tags/v1/current/link", d_manifest.encode())
    storage.write(f"{REPOS}{repo}/_manifests/tags/v1/index/sha256/{d_manifest[7:]}/link", d_manifest.encode())


def gc_pass(config_file: Path, work: Path, env: dict[str, str]) -> tuple[float, dict]:
    out = work / "gc.json"
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "jobs", "gc", "--config", str(config_file), "--window", "",
                           "--result-file", str(out)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return time.perf_counter() - t, json.loads(out.read_text())["gc"]


def storage_case(name: str, reg: RegistryServer, model: Path, work: Path, repos: int) -> dict:
    row: dict = {"storage": name}
    reg.start()
    try:
        t = publish_seconds(reg, model, work)
        row["publish_s"] = round(t, 2)
        row["publish_MiB_s"] = round(model.stat().st_size / (1 << 20) / t, 1)
    finally:
        reg.stop()
    cfg_file = reg.workdir / "config.yml"
    storage = from_registry_config(yaml.safe_load(cfg_file.read_text()), env={})
    config = _digest(b"{}")
    storage.write(blob_path(config), b"{}")
    t = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: plant_repository(storage, i, config, deleted=i >= repos),
                      range(repos + repos // 10)))
    row["plant_s"] = round(time.perf_counter() - t, 1)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    row["gc_s"], first = gc_pass(cfg_file, work, env)
    row["gc_s"] = round(row["gc_s"], 2)
    row["gc_repeat_s"] = round(gc_pass(cfg_file, work, env)[0], 2)  # nothing left to delete
    row["gc"] = {k: first[k] for k in ("repositories", "manifests", "blobs", "blobsDeleted", "seconds")}
    return row


def main() -> int:
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    repos = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    from devstack.models import make_large_gguf

    work = scratch()
    model = make_large_gguf(work / "model.gguf", size_mib << 20)
    rows = [storage_case("filesystem", RegistryServer(work / "fs"), model, work, repos)]
    with MotoServer(work / "moto") as s3:
        s3.create_bucket("dmcr")
        reg = RegistryServer(work / "s3", storage_config=s3.registry_storage("dmcr"))
        rows.append(storage_case("s3 (moto)", reg, model, work, repos))
    print(json.dumps({"size": mib(model.stat().st_size), "repositories": repos, "rows": rows,
                      "s3_vs_filesystem_publish": round(rows[1]["publish_s"] / rows[0]["publish_s"], 2)},
                     indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
