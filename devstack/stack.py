"""The whole module on one machine: what `make run` and the end-to-end tests use.

A real DMCR (``docker-registry`` in token-auth mode), the real hook service
under gunicorn (which is also the registry's token realm), the Metacontroller
stand-in (``devstack/metacontroller.py``) and the kubelet stand-in
(``devstack/kubelet.py``), over one of two API backends:

- ``backend="kube"`` (the tests): a real control plane of its own
  (``devstack/control_plane.py``: kube-apiserver, etcd, kube-controller-manager
  with the real Job, garbage-collector and namespace controllers) with our
  CRDs, Metacontroller's RBAC (``deploy/rbac/metacontroller.yaml``, the
  stand-in writes impersonating its service account) and deploy/'s
  MutatingWebhookConfiguration calling a second, TLS listener of the hook
  service by URL.
- ``backend="memory"`` (``make run``, no cluster needed): the in-memory
  store (``devstack/cluster.py``) with the Job controller stand-in
  (``devstack/job_controller.py``) and the webhook called by the store.
"""

from __future__ import annotations

import base64
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

import jsonpatch
import requests
import yaml

from devstack.cluster import Cluster
from devstack.csi_node import CsiNode, PublishError, csi_volumes
from devstack.job_controller import JobController
from devstack.kubelet import Kubelet
from devstack.metacontroller import METACONTROLLER_USER, WORKLOAD_KINDS, HookError, Metacontroller
from devstack.registry import RegistryServer, TokenAuth, free_port
from devstack.store import KINDS, Obj, Store
from lib import registry_token

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "d8-ai-models"
WATCHED = [k for k in KINDS if k not in ("Node", "ClusterRole", "ClusterRoleBinding")]


@dataclass
class LocalModule:
    workdir: Path
    # Environment every worker process sees (e.g. HF_ENDPOINT, OLLAMA_REGISTRY for stand-ins).
    worker_env: dict[str, str] = field(default_factory=dict)
    hook_env: dict[str, str] = field(default_factory=dict)
    hook_workers: int = 2
    backend: str = "memory"  # "memory" or "kube"
    informer_lag: float = 0.0  # seconds the Metacontroller stand-in's cache lags behind
    registry: RegistryServer | None = None
    hooks_proc: subprocess.Popen | None = None
    webhook_proc: subprocess.Popen | None = None
    hooks_port: int = 0
    cluster: Any = None  # the Store: Cluster (memory) or KubeStore (admin view)
    plane: Any = None  # devstack.control_plane.ControlPlane when backend == "kube"
    mc: Metacontroller | None = None
    kubelet: Kubelet | None = None
    jobs: JobController | None = None
    # The node-cache CSI plugin (start_csi_node): NodeCache-mode pods get their csi volumes from it.
    csi_node: CsiNode | None = None
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

    def _gunicorn(self, log_name: str, env: dict[str, str], extra: list[str], url: str,
                  verify: str | bool = True) -> subprocess.Popen:
        log = open(self.workdir / log_name, "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "hooks" / "gunicorn_conf.py"), *extra,
             "hooks.app:app"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError((self.workdir / log_name).read_text()[-3000:])
            try:
                if requests.get(url + "/healthz", timeout=1, verify=verify).status_code == 200:
                    return proc
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"hook service ({log_name}) did not start")

    def start_hooks(self) -> None:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("AI_MODELS_")}, **self._env}
        self.hooks_proc = self._gunicorn("hooks.log", env, [], self.hooks_url)

    def stop_hooks(self) -> None:
        for proc in (self.hooks_proc, self.webhook_proc):
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)

    # -- the API backends ---------------------------------------------------------------------------
    def _admit(self, obj: Obj, old: Obj | None) -> Obj:
        """The mutating webhook on a workload write, as the API server calls it (memory backend)."""
        if obj.get("kind") not in WORKLOAD_KINDS:
            return obj
        review: dict[str, Any] = {
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": f"harness-{time.monotonic_ns()}", "operation": "UPDATE" if old else "CREATE",
                "kind": {"group": obj["apiVersion"].split("/")[0], "version": "v1", "kind": obj["kind"]},
                "namespace": obj["metadata"].get("namespace", "default"), "name": obj["metadata"]["name"],
                "object": obj, "oldObject": old,
            },
        }
        r = requests.post(self.hooks_url + "/webhooks/workload/mutate", json=review, timeout=10)
        if r.status_code != 200:
            raise HookError("/webhooks/workload/mutate", r.status_code, r.text)
        resp = r.json()["response"]
        if not resp.get("allowed", False):
            raise HookError("/webhooks/workload/mutate", 403, str(resp.get("status")))
        if resp.get("patch"):
            import json

            # RFC 6902, as the API server applies it (the jsonpatch library, not our own code).
            obj = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(resp["patch"])))
        return obj

    def _start_memory(self) -> None:
        cluster = Cluster(admission=self._admit)
        self.cluster = cluster
        self.mc = Metacontroller(cluster, self.hooks_url, lag=self.informer_lag)
        self.kubelet = Kubelet(cluster, self.workdir, extra_env=dict(self.worker_env))
        self.jobs = JobController(cluster)
        cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        if cluster.get("Namespace", "default") is None:
            cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        for obj in yaml.safe_load_all((ROOT / "deploy" / "rbac" / "worker-events.yaml").read_text()):
            cluster.create(obj)

    def _start_kube(self) -> None:
        from devstack.control_plane import ControlPlane, ensure_binaries
        from devstack.kubestore import KubeStore
        from devstack.tls import make_ca_and_cert

        ensure_binaries()
        self.plane = ControlPlane(self.workdir / "kube").start()
        # The webhook's listener: the hook service again, over TLS, webhook routes only.
        certs = make_ca_and_cert(self.workdir / "webhook-certs")
        port = free_port()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("AI_MODELS_")}, **self._env,
               "AI_MODELS_LISTEN": f"127.0.0.1:{port}", "AI_MODELS_HOOK_WORKERS": "1", "AI_MODELS_ROUTES": "webhook"}
        url = f"https://127.0.0.1:{port}"
        self.webhook_proc = self._gunicorn("webhook.log", env, ["--certfile", str(certs.cert), "--keyfile",
                                                                str(certs.key)], url, verify=str(certs.ca_cert))
        self.plane.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
        self.plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        self.plane.kubectl("apply", "--server-side", "-f", str(ROOT / "deploy" / "rbac" / "metacontroller.yaml"))
        self.plane.kubectl("apply", "--server-side", "-f", str(ROOT / "deploy" / "rbac" / "worker-events.yaml"))
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.plane.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 64  # one watch per kind holds a connection each
        admin = KubeStore(client.ApiClient(cfg))
        self.cluster = admin
        admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        admin.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ai-models-local"}})
        webhooks = yaml.safe_load((ROOT / "deploy" / "webhook" / "mutatingwebhookconfiguration.yaml").read_text())
        webhooks["metadata"]["annotations"] = {}  # no cert-manager: the caBundle is set here
        for hook in webhooks["webhooks"]:
            hook["clientConfig"] = {"url": f"{url}/webhooks/workload/mutate",
                                    "caBundle": base64.b64encode(certs.ca_cert.read_bytes()).decode()}
        admin.request("POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", webhooks)
        self._wait_webhook(admin)
        admin.watch(WATCHED)
        mc_view = admin.as_user(METACONTROLLER_USER)
        self.mc = Metacontroller(mc_view, self.hooks_url, lag=self.informer_lag)
        for kind in WATCHED:  # the watches run as the admin; Metacontroller's RBAC must allow its own
            if kind != "Namespace":
                try:
                    mc_view.list(kind)
                except Exception as e:  # recorded: shows as a failing scenario
                    self.mc.errors.append(f"Metacontroller may not list {kind}: {e}")
        self.kubelet = Kubelet(admin, self.workdir, extra_env=dict(self.worker_env))

    def _wait_webhook(self, admin: Any, timeout: float = 60) -> None:
        """The API server picks webhook configurations up asynchronously: probe with a dry run."""
        probe = {"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "probe", "namespace": "default", "annotations": {"ai.deckhouse.io/model": "probe"}},
                 "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "probe"}},
                          "template": {"metadata": {"labels": {"app": "probe"}},
                                       "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}}}}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = admin.request("POST", "/apis/apps/v1/namespaces/default/deployments", probe, query={"dryRun": "All"})
            if out["spec"]["template"]["spec"].get("schedulingGates"):
                return
            time.sleep(0.3)
        raise RuntimeError("the API server does not call the workload webhook")

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
        try:
            if self.backend == "kube":
                self._start_kube()
            else:
                self._start_memory()
        except BaseException:
            self.stop()
            raise
        return self

    def start_csi_node(self, *extra_args: str) -> CsiNode:
        """Run the node-cache plugin for this node (needs root: its publishes are real bind mounts)."""
        self.csi_node = CsiNode(self.workdir / "node-cache", extra_args=("--insecure-registry", *extra_args)).start()
        return self.csi_node

    def stop(self) -> None:
        if self.kubelet:
            self.kubelet.stop_all()
        if self.csi_node:
            self.csi_node.stop()
        if self.cluster is not None and hasattr(self.cluster, "stop"):
            self.cluster.stop()
        if self.plane is not None:
            self.plane.stop()
        if self.registry:
            self.registry.stop()
        self.stop_hooks()

    def __enter__(self) -> LocalModule:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- driving ------------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        return self.cluster

    def apply(self, obj: Obj) -> Obj:
        """What ``kubectl apply`` does (server-side on the real API server)."""
        return self.cluster.apply(obj)

    def step(self) -> None:
        assert self.mc and self.kubelet
        self.mc.step()
        if self.jobs:
            self.jobs.sync()
        self.kubelet.step()

    def run_until(self, predicate: Callable[[], bool], timeout: float = 120, interval: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.step()
            if predicate():
                return True
            time.sleep(interval)
        return False

    def run_workload_pod(self, kind: str, name: str, namespace: str, timeout: float = 120) -> Obj:
        """Run one pod of a workload's current template here, its init containers for real.

        Returns ``{"gated": bool, "pod": pod, "dir": Path, "ok": bool, "app": (mounts, env)}``.
        The pod is not stored: the workload's own controller makes the real ones,
        which this node leaves unbound.
        """
        import threading

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
        workdir_name = f"{pod['metadata']['name']}-{time.monotonic_ns()}"
        if csi_volumes(pod):
            # The kubelet mounts a pod's volumes before any of its containers start.
            if self.csi_node is None:
                return {"gated": False, "pod": pod, "ok": False,
                        "status": {"message": "driver models.ai.deckhouse.io is not registered on this node"}}
            try:
                self.csi_node.publish_pod(pod, self.kubelet.root / "pods" / namespace / workdir_name / "volumes",
                                          self.cluster)
            except PublishError as e:
                return {"gated": False, "pod": pod, "ok": False, "status": {"message": str(e)}}
        done: dict[str, Any] = {}
        ev = threading.Event()

        def on_done(ok: bool, status: Obj) -> None:
            done.update(ok=ok, status=status)
            ev.set()

        pod_dir = self.kubelet.run_pod(pod, on_done, workdir_name=workdir_name, app=False, record=False)
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
