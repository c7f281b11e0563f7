"""A stand-in for the kubelet (and the scheduler's binding): runs pods as local processes.

Works on either store (``devstack/store.py``). Each ``step`` reads the
Pod watch events: a Pod of a Job with no node and no scheduling gates is
bound to this node (pods/binding, what the scheduler does); a Pod bound here
runs — its init containers and first container become local ``python -m
jobs ...`` processes with the container's args and env — and its status is
reported through pods/status: ``Running``, then each container's
``terminated`` state (exitCode, reason, message from the termination-message
file, finishedAt) and phase ``Succeeded``/``Failed``. A Pod marked for
deletion has its process killed and, as a kubelet confirms, is deleted with
grace period 0. Pods of other controllers (a Deployment's) are not bound:
their delivery is checked by ``LocalModule.run_workload_pod``.

Volumes map to directories under the pod's own folder: ``emptyDir`` → an
empty directory, ``secret``/``configMap`` (also as projected sources) → their
keys as files (honouring ``items``), a projected ``serviceAccountToken`` → a
token from the store's TokenRequest (the pod then also gets
``KUBERNETES_SERVICE_HOST``/``_PORT``, as a kubelet sets them); any argument or env value that starts
with a ``mountPath`` is rewritten to that directory, as a container would see
the same bytes at that path. ``--listen HOST:PORT`` gets a free loopback
port, recorded so Service URLs can be translated (``service_url``).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.cluster import now_rfc3339
from devstack.registry import free_port
from devstack.store import ApiError, NotFound, Obj, Store, key_of

ROOT = Path(__file__).resolve().parents[1]
TERMINATION_LOG = "/dev/termination-log"
NODE = "ai-models-local"


@dataclass
class RunningPod:
    name: str
    namespace: str
    uid: str = ""
    proc: subprocess.Popen | None = None
    thread: threading.Thread | None = None
    stopped: bool = False
    done: bool = False


@dataclass
class Kubelet:
    store: Store
    root: Path
    node: str = NODE
    extra_env: dict[str, str] = field(default_factory=dict)
    pods: dict[tuple[str, str], RunningPod] = field(default_factory=dict)
    # "svc.ns" -> local port of the process behind it
    service_ports: dict[str, int] = field(default_factory=dict)
    pod_ports: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    logs: dict[str, str] = field(default_factory=dict)
    # Confirm deletions with grace period 0 (a real API server waits for the kubelet).
    confirm_deletion: bool = True
    _cursor: int = 0
    _waiting: dict[tuple[str, str], Obj] = field(default_factory=dict)

    @property
    def cluster(self) -> Store:
        return self.store

    # -- the node's loop -----------------------------------------------------------------------------
    def step(self) -> None:
        """Bind, start and stop pods according to the Pod events since the last step."""
        self._cursor, events = self.store.events_since(self._cursor)
        changed: dict[tuple[str, str], Obj | None] = {}
        for ev in events:
            if ev.obj["kind"] != "Pod":
                continue
            k = key_of(ev.obj)[1:]
            changed[k] = None if ev.type == "DELETED" else ev.obj
        for k, pod in changed.items():
            if pod is None:
                self._waiting.pop(k, None)
                self.stop_pod(*k)
                continue
            self._waiting[k] = pod
        for k, pod in list(self._waiting.items()):
            try:
                self._handle(pod)
                self._waiting.pop(k, None)
            except RuntimeError:
                pass  # a volume's Secret is not there yet: ContainerCreating, tried again next step

    def _handle(self, pod: Obj) -> None:
        md, spec = pod["metadata"], pod["spec"]
        k = (md["namespace"], md["name"])
        rp = self.pods.get(k)
        if md.get("deletionTimestamp"):
            if spec.get("nodeName") == self.node:
                self.stop_pod(*k)
                if self.confirm_deletion and (rp is None or rp.done or rp.proc is None or rp.proc.poll() is not None):
                    self._confirm_delete(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        if not spec.get("nodeName"):
            owner = next((r for r in md.get("ownerReferences") or [] if r.get("controller")), None)
            if owner and owner.get("kind") == "Job" and not spec.get("schedulingGates"):
                try:
                    self.store.bind(pod, self.node)
                except ApiError:
                    pass  # bound meanwhile, or gone
            return
        if spec["nodeName"] != self.node or (rp is not None and rp.uid == md.get("uid")):
            return
        self.run_pod(pod, None)

    def _confirm_delete(self, pod: Obj) -> None:
        try:
            self.store.delete("Pod", pod["metadata"]["name"], pod["metadata"]["namespace"],
                              uid=pod["metadata"].get("uid"), grace_period=0)
        except ApiError:
            pass

    # -- volumes and path rewriting -------------------------------------------------------------
    def _volumes(self, pod_dir: Path, pod: Obj) -> dict[str, Path]:
        spec, namespace = pod["spec"], pod["metadata"]["namespace"]
        out: dict[str, Path] = {}
        for v in spec.get("volumes") or []:
            d = pod_dir / "volumes" / v["name"]
            d.mkdir(parents=True, exist_ok=True)
            if v.get("secret") is not None:
                self._write_keys(d, "Secret", v["secret"]["secretName"], namespace, v["secret"].get("items"))
            if v.get("configMap") is not None:
                self._write_keys(d, "ConfigMap", v["configMap"]["name"], namespace, v["configMap"].get("items"))
            for src in (v.get("projected") or {}).get("sources") or []:
                for kind, key in (("Secret", "secret"), ("ConfigMap", "configMap")):
                    if key in src:
                        self._write_keys(d, kind, src[key]["name"], namespace, src[key].get("items"))
                if "serviceAccountToken" in src:
                    self._write_token(d, src["serviceAccountToken"], pod)
            out[v["name"]] = d
        return out

    def _write_token(self, d: Path, source: Obj, pod: Obj) -> None:
        """A projected service-account token: TokenRequest bound to the pod (no refresh: runs are short)."""
        account = pod["spec"].get("serviceAccountName") or "default"
        try:
            token = self.store.service_account_token(
                pod["metadata"]["namespace"], account, pod, int(source.get("expirationSeconds") or 3600))
        except (ApiError, LookupError) as e:
            raise RuntimeError(f"token for serviceaccount {account}: {e}") from e  # ContainerCreating
        target = d / source.get("path", "token")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(token)

    def _write_keys(self, d: Path, kind: str, name: str, namespace: str, items: list[Obj] | None) -> None:
        obj = self.store.get(kind, name, namespace)
        if obj is None:
            raise RuntimeError(f"{kind} {namespace}/{name} not found for a volume")
        if kind == "Secret":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        else:
            data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
        for key, path in pairs:
            target = d / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[key])

    @staticmethod
    def _mounts(container: Obj, volumes: dict[str, Path]) -> list[tuple[str, Path]]:
        out = []
        for m in container.get("volumeMounts") or []:
            base = volumes[m["name"]]
            local = base / m["subPath"] if m.get("subPath") else base
            out.append((m["mountPath"].rstrip("/"), local))
        return sorted(out, key=lambda p: -len(p[0]))

    @staticmethod
    def rewrite(value: str, mounts: list[tuple[str, Path]], termination: Path) -> str:
        if value == TERMINATION_LOG:
            return str(termination)
        for mount_path, local in mounts:
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(local) + value[len(mount_path):]
        return value

    def _env(self, container: Obj, pod: Obj, mounts: list[tuple[str, Path]], termination: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AI_MODELS_")}
        env.update(self.extra_env)
        env["PYTHONPATH"] = str(ROOT)
        for e in container.get("env") or []:
            if "value" in e:
                env[e["name"]] = self.rewrite(str(e["value"]), mounts, termination)
            elif "valueFrom" in e:
                vf = e["valueFrom"]
                if "fieldRef" in vf:
                    path = vf["fieldRef"]["fieldPath"]
                    if path == "metadata.name":
                        env[e["name"]] = pod["metadata"]["name"]
                    elif path == "metadata.namespace":
                        env[e["name"]] = pod["metadata"]["namespace"]
                    elif path == "metadata.uid":
                        env[e["name"]] = pod["metadata"].get("uid", "")
                    elif path.startswith("metadata.labels['"):
                        env[e["name"]] = (pod["metadata"].get("labels") or {}).get(path[17:-2], "")
                elif "secretKeyRef" in vf:
                    ref = vf["secretKeyRef"]
                    s = self.store.get("Secret", ref["name"], pod["metadata"]["namespace"])
                    if s and ref["key"] in (s.get("data") or {}):
                        env[e["name"]] = base64.b64decode(s["data"][ref["key"]]).decode()
                elif "configMapKeyRef" in vf:
                    ref = vf["configMapKeyRef"]
                    cm = self.store.get("ConfigMap", ref["name"], pod["metadata"]["namespace"])
                    if cm and ref["key"] in (cm.get("data") or {}):
                        env[e["name"]] = cm["data"][ref["key"]]
        # A kubelet does not pass its own credentials into pods; it tells each pod where the API
        # server is (set here only for pods with a service-account token: no other pod uses it).
        env.pop("KUBERNETES_SERVICE_HOST", None)
        env.pop("KUBERNETES_SERVICE_PORT", None)
        if _has_token(pod):
            host, port = self.store.in_cluster()
            env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"] = host, str(port)
        return env

    def _argv(self, container: Obj, mounts: list[tuple[str, Path]], termination: Path, ports: dict[str, int]) -> list[str]:
        command = list(container.get("command") or ["python", "-m", "jobs"])
        args = list(container.get("args") or [])
        argv = command + args
        if argv[:1] == ["python"] or argv[:1] == ["python3"]:
            argv[0] = sys.executable
        # argv[0] is this machine's interpreter, never a path inside the pod's volumes.
        out = argv[:1]
        it = iter(range(1, len(argv)))
        for i in it:
            a = argv[i]
            if a == "--listen" and i + 1 < len(argv):
                port = free_port()
                ports[argv[i + 1]] = port
                out += ["--listen", f"127.0.0.1:{port}"]
                next(it, None)
                continue
            out.append(self.rewrite(a, mounts, termination))
        return out

    # -- pods -----------------------------------------------------------------------------------------
    def run_pod(self, pod: Obj, on_done: Any = None, workdir_name: str | None = None, *, app: bool = True,
                record: bool = True) -> Path:
        """Run a pod's init containers then (``app``) its first container; returns the pod dir.

        ``record``: report the pod's status through pods/status (a stored Pod).
        Workload pods run with ``app=False``: their init containers (the
        injected ``materialize`` steps) run for real; the application image is
        not ours to run, so the test reads what it would see instead.
        """
        ns = pod["metadata"]["namespace"]
        name = pod["metadata"]["name"]
        pod_dir = self.root / "pods" / ns / (workdir_name or name)
        pod_dir.mkdir(parents=True, exist_ok=True)
        spec = pod["spec"]
        volumes = self._volumes(pod_dir, pod)
        rp = RunningPod(name, ns, pod["metadata"].get("uid", ""))
        self.pods[(ns, name)] = rp
        started = now_rfc3339()
        if record:
            self._report(pod, {"phase": "Running", "startTime": started, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
                               "containerStatuses": [{"name": c["name"], "ready": True, "restartCount": 0,
                                                      "image": c.get("image", ""), "imageID": "",
                                                      "state": {"running": {"startedAt": started}}}
                                                     for c in spec.get("containers") or []]})

        def body() -> None:
            statuses: list[Obj] = []
            init_statuses: list[Obj] = []
            ok = True
            for group, sink in (("initContainers", init_statuses), ("containers", statuses)):
                for c in spec.get(group) or []:
                    if not ok:
                        break
                    if group == "containers" and (not app or c is not spec["containers"][0]):
                        continue  # only the first (worker) container runs; apps are not executed
                    term = pod_dir / f"{c['name']}.termination-log"
                    mounts = self._mounts(c, volumes)
                    ports: dict[str, int] = {}
                    argv = self._argv(c, mounts, term, ports)
                    if ports:
                        port = next(iter(ports.values()))
                        self.pod_ports[(ns, name)] = port
                        self._publish_service_ports(pod, port)
                    log_path = pod_dir / f"{c['name']}.log"
                    c_started = now_rfc3339()
                    with open(log_path, "wb") as log:
                        if rp.stopped:
                            ok = False
                            break
                        rp.proc = subprocess.Popen(
                            argv, env=self._env(c, pod, mounts, term), stdout=log, stderr=subprocess.STDOUT,
                            cwd=pod_dir, start_new_session=True,
                        )
                        code = rp.proc.wait()
                    # The kubelet reads at most 4096 bytes of the termination-message file.
                    message = term.read_bytes()[:4096].decode(errors="replace") if term.exists() else ""
                    if not message and code != 0 and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                        message = log_path.read_text(errors="replace")[-2048:]
                    self.logs[f"{ns}/{name}/{c['name']}"] = log_path.read_text(errors="replace")
                    terminated: Obj = {
                        "exitCode": code,
                        "reason": "Completed" if code == 0 else ("Killed" if rp.stopped else "Error"),
                        "startedAt": c_started,
                        "finishedAt": now_rfc3339(),
                    }
                    if message:
                        terminated["message"] = message
                    sink.append({"name": c["name"], "ready": False, "restartCount": 0, "image": c.get("image", ""),
                                 "imageID": "", "state": {"terminated": terminated}})
                    ok = code == 0
            status = {
                "phase": "Succeeded" if ok else "Failed",
                "startTime": started,
                "containerStatuses": statuses,
                "initContainerStatuses": init_statuses,
            }
            if record:
                if rp.stopped and self.confirm_deletion:
                    self._confirm_delete(pod)
                else:
                    self._report(pod, status)
            rp.done = True
            # Its Service has no endpoint any more.
            for svc, port in list(self.service_ports.items()):
                if port == self.pod_ports.get((ns, name)):
                    del self.service_ports[svc]
            if on_done:
                on_done(ok, status)

        rp.thread = threading.Thread(target=body, daemon=True)
        rp.thread.start()
        return pod_dir

    def _report(self, pod: Obj, status: Obj) -> None:
        try:
            self.store.set_status("Pod", pod["metadata"]["name"], pod["metadata"]["namespace"], status)
        except (NotFound, ApiError):
            pass

    def container_view(self, pod: Obj, pod_dir: Path, container: Obj) -> tuple[dict[str, Path], dict[str, str]]:
        """What ``container`` would see: its mounts as local dirs, and its literal env."""
        volumes = {v["name"]: pod_dir / "volumes" / v["name"] for v in pod["spec"].get("volumes") or []}
        mounts = dict(self._mounts(container, volumes))
        env = {e["name"]: e.get("value", "") for e in container.get("env") or [] if "value" in e}
        return mounts, env

    def _publish_service_ports(self, pod: Obj, port: int) -> None:
        labels = pod["metadata"].get("labels") or {}
        for svc in self.store.list("Service", pod["metadata"]["namespace"]):
            sel = (svc.get("spec") or {}).get("selector") or {}
            if sel and all(labels.get(k) == v for k, v in sel.items()):
                self.service_ports[f"{svc['metadata']['name']}.{svc['metadata']['namespace']}"] = port

    def service_url(self, url: str) -> str:
        """Translate an in-cluster Service URL to the local port serving it."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        host = parts.hostname or ""
        key = ".".join(host.split(".")[:2])
        port = self.service_ports.get(key)
        if port is None:
            return url
        return urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, parts.query, parts.fragment))

    def stop_pod(self, namespace: str, name: str) -> None:
        rp = self.pods.get((namespace, name))
        if rp is None:
            return
        rp.stopped = True
        if rp.proc and rp.proc.poll() is None:
            try:
                os.killpg(rp.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop_all(self) -> None:
        for (ns, name) in list(self.pods):
            self.stop_pod(ns, name)
        for rp in self.pods.values():
            if rp.thread:
                rp.thread.join(10)


def _has_token(pod: Obj) -> bool:
    return any("serviceAccountToken" in src for v in pod["spec"].get("volumes") or []
               for src in (v.get("projected") or {}).get("sources") or [])


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
