"""The Job controller, for the in-memory store only (a real API server runs the real one).

Creates one Pod per attempt from the Job's template (labels, controller
reference), leaves running it to the kubelet stand-in, and turns the Pod's
final status into the Job's: ``succeeded`` and a ``Complete`` condition, or
another attempt until ``backoffLimit``, with ``podFailurePolicy`` rules on
exit codes honoured. Pods of deleted Jobs go with them (the store's cascade).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from devstack.cluster import Cluster, now_rfc3339
from devstack.store import ApiError, Obj


@dataclass
class JobController:
    cluster: Cluster
    running: dict[str, str] = field(default_factory=dict)  # job uid -> pod name
    attempts: dict[str, int] = field(default_factory=dict)

    def _pod_for(self, job: Obj, attempt: int) -> Obj:
        tmpl = job["spec"]["template"]
        md = job["metadata"]
        labels = {**(tmpl.get("metadata", {}).get("labels") or {}), "job-name": md["name"],
                  "batch.kubernetes.io/job-name": md["name"], "controller-uid": md["uid"],
                  "batch.kubernetes.io/controller-uid": md["uid"]}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{md['name']}-{attempt}",
                "namespace": md["namespace"],
                "labels": labels,
                "annotations": tmpl.get("metadata", {}).get("annotations") or {},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": md["name"],
                                     "uid": md["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": tmpl["spec"],
        }

    @staticmethod
    def _fail_job_now(job: Obj, pod_status: Obj) -> bool:
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
        for job in self.cluster.list("Job"):
            md = job["metadata"]
            uid = md["uid"]
            st = job.get("status") or {}
            if st.get("succeeded") or any(c.get("type") == "Failed" for c in st.get("conditions") or []):
                continue
            pod_name = self.running.get(uid)
            if pod_name is None:
                attempt = self.attempts.get(uid, 0)
                try:
                    created = self.cluster.create(self._pod_for(job, attempt))
                except ApiError:
                    continue
                self.running[uid] = created["metadata"]["name"]
                self.cluster.set_status("Job", md["name"], md["namespace"],
                                        {**st, "active": 1, "startTime": st.get("startTime") or now_rfc3339()})
                continue
            pod = self.cluster.get("Pod", pod_name, md["namespace"])
            pst = (pod or {}).get("status") or {}
            if pod is not None and pst.get("phase") not in ("Succeeded", "Failed"):
                continue
            s = dict(st)
            s.pop("active", None)
            if pst.get("phase") == "Succeeded":
                s["succeeded"] = 1
                s["completionTime"] = now_rfc3339()
                s["conditions"] = [{"type": "Complete", "status": "True", "lastTransitionTime": now_rfc3339()}]
            else:
                s["failed"] = s.get("failed", 0) + 1
                if s["failed"] > job["spec"].get("backoffLimit", 6) or self._fail_job_now(job, pst):
                    s["conditions"] = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                        "lastTransitionTime": now_rfc3339()}]
            self.attempts[uid] = self.attempts.get(uid, 0) + 1
            self.running.pop(uid, None)
            self.cluster.set_status("Job", md["name"], md["namespace"], s)
