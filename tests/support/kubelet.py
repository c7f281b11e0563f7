"""A stand-in for the kubelet and the Job controller: runs pods as local processes.

A Job's pod template becomes a Pod object (labels, owner reference) and its
init containers and containers become local ``python -m jobs ...`` processes
with the container's args and env. Volumes map to directories under the pod's
own folder: ``emptyDir`` → an empty directory, ``secret`` → the Secret's keys
as files (honouring ``items``), and any argument or env value that starts
with a ``mountPath`` is rewritten to that directory — as a container would
see the same bytes at that path. The termination message file becomes the
container status' ``message``. ``--listen HOST:PORT`` gets a free loopback
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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.cluster import Cluster, Obj, now_rfc3339
from tests.support.registry import free_port

ROOT = Path(__file__).resolve().parents[2]
TERMINATION_LOG = "/dev/termination-log"


@dataclass
class RunningPod:
    name: str
    namespace: str
    job: str
    proc: subprocess.Popen | None = None
    thread: threading.Thread | None = None
    stopped: bool = False


@dataclass
class Kubelet:
    cluster: Cluster
    root: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    pods: dict[tuple[str, str], RunningPod] = field(default_factory=dict)
    # "svc.ns" -> local port of the process behind it
    service_ports: dict[str, int] = field(default_factory=dict)
    pod_ports: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    logs: dict[str, str] = field(default_factory=dict)

    # -- volumes and path rewriting -------------------------------------------------------------
    def _volumes(self, pod_dir: Path, spec: Obj, namespace: str) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for v in spec.get("volumes") or []:
            d = pod_dir / "volumes" / v["name"]
            d.mkdir(parents=True, exist_ok=True)
            src = v.get("secret")
            if src is not None:
                self._write_secret(d, src["secretName"], namespace, src.get("items"))
            proj = v.get("projected")
            if proj is not None:
                for s in proj.get("sources") or []:
                    if "secret" in s:
                        self._write_secret(d, s["secret"]["name"], namespace, s["secret"].get("items"))
            out[v["name"]] = d
        return out

    def _write_secret(self, d: Path, name: str, namespace: str, items: list[Obj] | None) -> None:
        secret = self.cluster.get("Secret", name, namespace)
        if secret is None:
            raise RuntimeError(f"secret {namespace}/{name} not found for a volume")
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
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
                    elif path.startswith("metadata.labels['"):
                        env[e["name"]] = (pod["metadata"].get("labels") or {}).get(path[17:-2], "")
                elif "secretKeyRef" in vf:
                    ref = vf["secretKeyRef"]
                    s = self.cluster.get("Secret", ref["name"], pod["metadata"]["namespace"])
                    if s and ref["key"] in (s.get("data") or {}):
                        env[e["name"]] = base64.b64decode(s["data"][ref["key"]]).decode()
        # A kubelet does not pass its own credentials into pods.
        env.pop("KUBERNETES_SERVICE_HOST", None)
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
    def run_pod(self, pod: Obj, on_done: Any, workdir_name: str | None = None, *, app: bool = True) -> Path:
        """Run a pod's init containers then (``app``) its first container; returns the pod dir.

        Workload pods run with ``app=False``: their init containers (the
        injected ``materialize`` steps) run for real; the application image is
        not ours to run, so the test reads what it would see instead.
        """
        ns = pod["metadata"]["namespace"]
        name = pod["metadata"]["name"]
        pod_dir = self.root / "pods" / ns / (workdir_name or name)
        pod_dir.mkdir(parents=True, exist_ok=True)
        spec = pod["spec"]
        volumes = self._volumes(pod_dir, spec, ns)
        rp = RunningPod(name, ns, (pod["metadata"].get("labels") or {}).get("job-name", ""))
        self.pods[(ns, name)] = rp

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
                    with open(log_path, "wb") as log:
                        if rp.stopped:
                            ok = False
                            break
                        rp.proc = subprocess.Popen(
                            argv, env=self._env(c, pod, mounts, term), stdout=log, stderr=subprocess.STDOUT,
                            cwd=pod_dir, start_new_session=True,
                        )
                        code = rp.proc.wait()
                    message = term.read_text() if term.exists() else ""
                    if not message and code != 0 and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                        message = log_path.read_text(errors="replace")[-2048:]
                    self.logs[f"{ns}/{name}/{c['name']}"] = log_path.read_text(errors="replace")
                    sink.append({
                        "name": c["name"],
                        "ready": False,
                        "restartCount": 0,
                        "image": c.get("image", ""),
                        "imageID": "",
                        "state": {"terminated": {
                            "exitCode": code,
                            "reason": "Completed" if code == 0 else ("Killed" if rp.stopped else "Error"),
                            "message": message,
                            "startedAt": now_rfc3339(),
                            "finishedAt": now_rfc3339(),
                        }},
                    })
                    ok = code == 0
            status = {
                "phase": "Succeeded" if ok else "Failed",
                "containerStatuses": statuses,
                "initContainerStatuses": init_statuses,
            }
            self.cluster.set_status("Pod", name, ns, status)
            on_done(ok, status)

        rp.thread = threading.Thread(target=body, daemon=True)
        rp.thread.start()
        return pod_dir

    def container_view(self, pod: Obj, pod_dir: Path, container: Obj) -> tuple[dict[str, Path], dict[str, str]]:
        """What ``container`` would see: its mounts as local dirs, and its literal env."""
        volumes = {v["name"]: pod_dir / "volumes" / v["name"] for v in pod["spec"].get("volumes") or []}
        mounts = dict(self._mounts(container, volumes))
        env = {e["name"]: e.get("value", "") for e in container.get("env") or [] if "value" in e}
        return mounts, env

    def _publish_service_ports(self, pod: Obj, port: int) -> None:
        labels = pod["metadata"].get("labels") or {}
        for svc in self.cluster.list("Service", pod["metadata"]["namespace"]):
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


@dataclass
class JobController:
    """Creates a Pod per Job attempt, honours backoffLimit and podFailurePolicy."""

    cluster: Cluster
    kubelet: Kubelet
    running: dict[str, str] = field(default_factory=dict)  # job uid -> pod name
    attempts: dict[str, int] = field(default_factory=dict)

    def _pod_for(self, job: Obj, attempt: int) -> Obj:
        tmpl = job["spec"]["template"]
        md = job["metadata"]
        labels = {**(tmpl.get("metadata", {}).get("labels") or {}), "job-name": md["name"],
                  "controller-uid": md["uid"]}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{md['name']}-{attempt}",
                "namespace": md["namespace"],
                "labels": labels,
                "annotations": tmpl.get("metadata", {}).get("annotations") or {},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": md["name"],
                                     "uid": md["uid"], "controller": True}],
            },
            "spec": tmpl["spec"],
            "status": {"phase": "Running"},
        }

    def _fail_job_now(self, job: Obj, pod_status: Obj) -> bool:
        policy = (job["spec"].get("podFailurePolicy") or {}).get("rules") or []
        codes = [c["state"]["terminated"]["exitCode"] for c in pod_status.get("containerStatuses", [])
                 + pod_status.get("initContainerStatuses", []) if "terminated" in c.get("state", {})]
        for rule in policy:
            oe = rule.get("onExitCodes")
            if not oe:
                continue
            vals = set(oe.get("values", []))
            hit = any((c in vals) if oe["operator"] == "In" else (c not in vals and c != 0) for c in codes)
            if hit:
                return rule["action"] == "FailJob"
        return False

    def sync(self) -> None:
        live_uids = set()
        for job in self.cluster.list("Job"):
            md = job["metadata"]
            uid = md["uid"]
            live_uids.add(uid)
            st = job.get("status") or {}
            if st.get("succeeded") or any(c.get("type") == "Failed" for c in st.get("conditions") or []):
                continue
            if uid in self.running:
                continue
            attempt = self.attempts.get(uid, 0)
            pod = self.cluster.apply(self._pod_for(job, attempt))
            self.running[uid] = pod["metadata"]["name"]
            self.cluster.set_status("Job", md["name"], md["namespace"], {**st, "active": 1, "startTime": st.get("startTime") or now_rfc3339()})

            def done(ok: bool, pod_status: Obj, job: Obj = job, uid: str = uid) -> None:
                cur = self.cluster.get("Job", job["metadata"]["name"], job["metadata"]["namespace"])
                if cur is None:
                    return
                s = dict(cur.get("status") or {})
                s.pop("active", None)
                if ok:
                    s["succeeded"] = 1
                    s["completionTime"] = now_rfc3339()
                    s["conditions"] = [{"type": "Complete", "status": "True", "lastTransitionTime": now_rfc3339()}]
                else:
                    s["failed"] = s.get("failed", 0) + 1
                    limit = job["spec"].get("backoffLimit", 6)
                    if s["failed"] > limit or self._fail_job_now(job, pod_status):
                        s["conditions"] = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                            "lastTransitionTime": now_rfc3339()}]
                    else:
                        time.sleep(0.2)  # the Job controller's pod backoff, shortened
                self.attempts[uid] = self.attempts.get(uid, 0) + 1
                self.cluster.set_status("Job", cur["metadata"]["name"], cur["metadata"]["namespace"], s)
                self.running.pop(uid, None)

            self.kubelet.run_pod(pod, done)
        # Jobs deleted by their controller: stop their pods.
        for (ns, name), rp in list(self.kubelet.pods.items()):
            if rp.proc is not None and rp.proc.poll() is None and self.cluster.get("Pod", name, ns) is None:
                self.kubelet.stop_pod(ns, name)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
