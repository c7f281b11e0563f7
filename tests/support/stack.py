"""The whole module on one machine: what `make run` and the end-to-end tests use.

A real DMCR (``docker-registry`` in token-auth mode), the real hook service
under gunicorn (which is also the registry's token realm), and stand-ins for
Metacontroller, the API server's store, the Job controller and the kubelet.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from lib import registry_token
from tests.support.cluster import Cluster, Obj
from tests.support.kubelet import JobController, Kubelet
from tests.support.metacontroller import Metacontroller
from tests.support.registry import RegistryServer, TokenAuth, free_port

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "d8-ai-models"


@dataclass
class LocalModule:
    workdir: Path
    # Environment every worker process sees (e.g. HF_ENDPOINT, OLLAMA_REGISTRY for stand-ins).
    worker_env: dict[str, str] = field(default_factory=dict)
    hook_env: dict[str, str] = field(default_factory=dict)
    hook_workers: int = 2
    registry: RegistryServer | None = None
    hooks_proc: subprocess.Popen | None = None
    hooks_port: int = 0
    cluster: Cluster = field(default_factory=Cluster)
    mc: Metacontroller | None = None
    kubelet: Kubelet | None = None
    jobs: JobController | None = None
    _env: dict[str, str] = field(default_factory=dict)

    @property
    def hooks_url(self) -> str:
        return f"http://127.0.0.1:{self.hooks_port}"

    def _hook_environment(self, reg_port: int) -> dict[str, str]:
        keys = self.workdir / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        token_key = registry_token.generate_signing_key("ec")
        (keys / "token.key").write_bytes(token_key)
        (keys / "token.crt").write_bytes(
            registry_token.self_signed_certificate(token_key, now=dt.datetime.now(dt.UTC))
        )
        (keys / "signing.key").write_bytes(os.urandom(32).hex().encode())
        return {
            "AI_MODELS_LISTEN": f"127.0.0.1:{self.hooks_port}",
            "AI_MODELS_HOOK_WORKERS": str(self.hook_workers),
            "AI_MODELS_NAMESPACE": NAMESPACE,
            "AI_MODELS_REGISTRY": f"127.0.0.1:{reg_port}",
            "AI_MODELS_REGISTRY_INSECURE": "1",
            "AI_MODELS_WORKER_IMAGE": "ai-models/worker:local",
            "AI_MODELS_SIGNING_KEY_FILE": str(keys / "signing.key"),
            "AI_MODELS_TOKEN_KEY_FILE": str(keys / "token.key"),
            **self.hook_env,
        }

    def start_hooks(self) -> None:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("AI_MODELS_")}, **self._env}
        log = open(self.workdir / "hooks.log", "ab")
        self.hooks_proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "hooks" / "gunicorn_conf.py"), "hooks.app:app"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.hooks_proc.poll() is not None:
                raise RuntimeError((self.workdir / "hooks.log").read_text()[-3000:])
            try:
                if requests.get(self.hooks_url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("hook service did not start")

    def stop_hooks(self) -> None:
        if self.hooks_proc and self.hooks_proc.poll() is None:
            os.killpg(self.hooks_proc.pid, signal.SIGTERM)
            self.hooks_proc.wait(10)

    def start(self) -> LocalModule:
        self.workdir.mkdir(parents=True, exist_ok=True)
        reg_port = free_port()
        self.hooks_port = free_port()
        self._env = self._hook_environment(reg_port)
        self.start_hooks()
        self.registry = RegistryServer(
            self.workdir / "dmcr",
            port=reg_port,
            token=TokenAuth(self.hooks_url + "/registry/token", "dmcr", "ai-models",
                            self.workdir / "keys" / "token.crt"),
        ).start()
        self.mc = Metacontroller(self.cluster, self.hooks_url)
        self.kubelet = Kubelet(self.cluster, self.workdir, extra_env=dict(self.worker_env))
        self.jobs = JobController(self.cluster, self.kubelet)
        for ns in (NAMESPACE,):
            self.cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        return self

    def stop(self) -> None:
        if self.kubelet:
            self.kubelet.stop_all()
        if self.registry:
            self.registry.stop()
        self.stop_hooks()

    def __enter__(self) -> LocalModule:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- driving ------------------------------------------------------------------------------------
    def apply(self, obj: Obj) -> Obj:
        assert self.mc
        return self.mc.apply_user(obj)

    def step(self) -> None:
        assert self.mc and self.jobs
        self.mc.reconcile()
        self.jobs.sync()

    def run_until(self, predicate: Callable[[], bool], timeout: float = 120, interval: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.step()
            if predicate():
                return True
            time.sleep(interval)
        return False

    def run_workload_pod(self, kind: str, name: str, namespace: str, timeout: float = 120) -> Obj:
        """Start one pod of a workload as its controller would, running its init containers.

        Returns ``{"gated": bool, "pod": pod, "dir": Path, "ok": bool, "app": (mounts, env)}``.
        """
        assert self.kubelet
        w = self.cluster.get(kind, name, namespace)
        assert w is not None, f"{kind} {namespace}/{name} not found"
        tmpl = w["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob" else w["spec"]["template"]
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-{w['metadata'].get('resourceVersion', '0')}", "namespace": namespace,
                         "labels": (tmpl.get("metadata") or {}).get("labels") or {},
                         "annotations": (tmpl.get("metadata") or {}).get("annotations") or {}},
            "spec": tmpl["spec"],
        }
        if tmpl["spec"].get("schedulingGates"):
            return {"gated": True, "pod": pod}
        done: dict[str, Any] = {}
        import threading

        ev = threading.Event()

        def on_done(ok: bool, status: Obj) -> None:
            done.update(ok=ok, status=status)
            ev.set()

        self.cluster.apply(pod)
        pod_dir = self.kubelet.run_pod(pod, on_done, app=False)
        ev.wait(timeout)
        app = self.kubelet.container_view(pod, pod_dir, tmpl["spec"]["containers"][0])
        return {"gated": False, "pod": pod, "dir": pod_dir, "ok": done.get("ok", False),
                "status": done.get("status"), "app": app}

    def model(self, name: str, namespace: str = "default") -> Obj | None:
        return self.cluster.get("Model", name, namespace)

    def clustermodel(self, name: str) -> Obj | None:
        return self.cluster.get("ClusterModel", name)

    def phase(self, kind: str, name: str, namespace: str = "") -> str:
        o = self.cluster.get(kind, name, namespace)
        return ((o or {}).get("status") or {}).get("phase", "")
