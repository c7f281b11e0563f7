"""Builders of Metacontroller v2 hook requests, as Metacontroller sends them.

- parents (``model``, ``cluster_model``) with uid, generation, creationTimestamp;
- ``sync_request``: children keyed ``Kind.apiVersion`` then ``namespace/name``
  (``name`` for cluster-scoped objects), with every declared child type
  present even when empty; related objects keyed the same way;
- ``observe``: turn a desired child from a hook answer into what the API
  server would return (uid, creationTimestamp, status);
- Jobs with status, and a Job carrying the result its worker patched onto it
  (``reported``: the ``ai.deckhouse.io/result`` annotation, the only place
  the hooks read a worker's result);
- Pods of a Job whose worker container terminated with a termination message
  (``pod_of``): the hooks never read Pods any more, so these only serve to
  prove that a Pod, forged or not, changes nothing.

Reusable by any hook's tests; nothing here depends on a hook's internals
except the default list of declared child types.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]

T0 = "2026-01-01T00:00:00Z"
MODEL_CHILD_TYPES = (
    "Job.batch/v1",
    "Secret.v1",
    "Service.v1",
    "ServiceAccount.v1",
    "Role.rbac.authorization.k8s.io/v1",
    "RoleBinding.rbac.authorization.k8s.io/v1",
    "Ingress.networking.k8s.io/v1",
)
CLUSTER_SCOPED = {"ClusterModel", "ModelCatalogSource", "Namespace", "ClusterRole", "ClusterRoleBinding"}


def uid_for(*parts: str) -> str:
    h = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def model(
    name: str = "bge-m3",
    namespace: str = "ai-demo",
    *,
    source: Obj | None = None,
    status: Obj | None = None,
    uid: str | None = None,
    generation: int = 1,
    created: str = T0,
    kind: str = "Model",
) -> Obj:
    md: Obj = {
        "name": name,
        "uid": uid or uid_for(kind, namespace, name),
        "generation": generation,
        "resourceVersion": "100",
        "creationTimestamp": created,
    }
    if kind != "ClusterModel":
        md["namespace"] = namespace
    obj: Obj = {
        "apiVersion": "ai.deckhouse.io/v1alpha1",
        "kind": kind,
        "metadata": md,
        "spec": {"source": source if source is not None else {"url": "https://huggingface.co/BAAI/bge-m3"}},
    }
    if status is not None:
        obj["status"] = status
    return obj


def cluster_model(name: str = "qwen-gguf", **kw: Any) -> Obj:
    kw.setdefault("source", {"url": "https://ollama.com/library/qwen3:latest"})
    return model(name, "", kind="ClusterModel", **kw)


def type_key(obj: Obj) -> str:
    return f"{obj['kind']}.{obj['apiVersion']}"


def obj_key(obj: Obj) -> str:
    md = obj["metadata"]
    if obj["kind"] in CLUSTER_SCOPED or not md.get("namespace"):
        return md["name"]
    return f"{md['namespace']}/{md['name']}"


def object_map(objs: Iterable[Obj], types: Iterable[str] = ()) -> dict[str, dict[str, Obj]]:
    out: dict[str, dict[str, Obj]] = {t: {} for t in types}
    for o in objs:
        out.setdefault(type_key(o), {})[obj_key(o)] = o
    return out


def sync_request(
    parent: Obj,
    children: Iterable[Obj] = (),
    related: Iterable[Obj] = (),
    *,
    finalizing: bool = False,
    child_types: Iterable[str] = MODEL_CHILD_TYPES,
    related_types: Iterable[str] = ("Pod.v1",),
) -> Obj:
    resource = "clustermodels" if parent["kind"] == "ClusterModel" else "models"
    return {
        "controller": {
            "apiVersion": "metacontroller.k8s.io/v1alpha1",
            "kind": "CompositeController",
            "metadata": {"name": f"ai-models-{resource}"},
            "spec": {"parentResource": {"apiVersion": "ai.deckhouse.io/v1alpha1", "resource": resource}},
        },
        "parent": copy.deepcopy(parent),
        "children": object_map(copy.deepcopy(list(children)), child_types),
        "related": object_map(copy.deepcopy(list(related)), related_types),
        "finalizing": finalizing,
    }


def customize_request(parent: Obj) -> Obj:
    return {"controller": sync_request(parent)["controller"], "parent": copy.deepcopy(parent)}


def secret(name: str, namespace: str, data: dict[str, str], type_: str = "Opaque") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid_for("Secret", namespace, name),
            "creationTimestamp": T0,
        },
        "type": type_,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def observe(
    desired: Obj, *, created: str = T0, status: Obj | None = None, annotations: dict | None = None
) -> Obj:
    """A desired child as the API server returns it after creation."""
    o = copy.deepcopy(desired)
    md = o["metadata"]
    md.setdefault("namespace", "default")
    md["uid"] = uid_for(o["kind"], md["namespace"], md["name"])
    md["creationTimestamp"] = created
    md["resourceVersion"] = "1"
    if annotations:
        md.setdefault("annotations", {}).update(annotations)
    if status is not None:
        o["status"] = status
    return o


def job_status(
    *,
    active: int = 0,
    succeeded: int = 0,
    failed: int = 0,
    start: str = "2026-01-01T00:00:05Z",
    finished: str | None = None,
    condition: str | None = None,  # Complete | Failed
    reason: str = "",
    message: str = "",
) -> Obj:
    st: Obj = {"startTime": start}
    if active:
        st["active"] = active
    if succeeded:
        st["succeeded"] = succeeded
    if failed:
        st["failed"] = failed
    if condition:
        t = finished or start
        st["conditions"] = [
            {
                "type": condition,
                "status": "True",
                "reason": reason or condition,
                "message": message,
                "lastProbeTime": t,
                "lastTransitionTime": t,
            }
        ]
        if condition == "Complete":
            st["completionTime"] = t
    return st


def pod_of(
    job: Obj,
    *,
    index: int = 0,
    message: str | None = None,
    exit_code: int | None = None,
    reason: str = "",
    finished: str = "2026-01-01T00:10:00Z",
    container: str = "worker",
) -> Obj:
    """A Pod of ``job``; its container terminated (with ``message``) when ``exit_code`` is given."""
    tmpl = job["spec"]["template"]
    ns = job["metadata"]["namespace"]
    jname = job["metadata"]["name"]
    name = f"{jname}-{index:05d}"[:63]
    labels = {**tmpl["metadata"]["labels"], "batch.kubernetes.io/job-name": jname, "job-name": jname}
    cs: Obj = {
        "name": container,
        "image": tmpl["spec"]["containers"][0]["image"],
        "ready": False,
        "restartCount": 0,
    }
    if exit_code is None:
        cs["state"] = {"running": {"startedAt": "2026-01-01T00:00:10Z"}}
        cs["ready"] = True
        phase = "Running"
    else:
        term: Obj = {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "startedAt": "2026-01-01T00:00:10Z",
            "finishedAt": finished,
        }
        if message is not None:
            term["message"] = message
        cs["state"] = {"terminated": term}
        phase = "Succeeded" if exit_code == 0 else "Failed"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid_for("Pod", ns, name),
            "labels": labels,
            "creationTimestamp": "2026-01-01T00:00:06Z",
            # As the Job controller writes it (the hooks match a Pod to the observed Job's UID).
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": jname,
                    "uid": job["metadata"].get("uid") or uid_for("Job", ns, jname),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": copy.deepcopy(tmpl["spec"]),
        "status": {"phase": phase, "startTime": "2026-01-01T00:00:06Z", "containerStatuses": [cs]},
    }


def reported(job: Obj, result: str) -> Obj:
    """``job`` after its worker patched its result onto it (``ai.deckhouse.io/result``, jobs/own_job.py)."""
    o = copy.deepcopy(job)
    o["metadata"].setdefault("annotations", {})["ai.deckhouse.io/result"] = result
    return o


def success_result(
    destination: str,
    *,
    digest: str = "sha256:" + "ab" * 32,
    size: int = 123456,
    fmt: str = "Safetensors",
    resolved_type: str = "HuggingFace",
) -> str:
    return json.dumps(
        {
            "artifact": {
                "uri": f"{destination}@{digest}",
                "digest": digest,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "sizeBytes": size,
            },
            "resolved": {
                "format": fmt,
                "family": "bert",
                "architecture": "BertModel",
                "parameterCount": 22000000,
                "contextWindowTokens": 512,
                "supportedEndpointTypes": ["Embeddings"],
                "supportedFeatures": [],
            },
            "source": {"resolvedType": resolved_type, "resolvedRevision": "c0ffee", "remoteDigest": ""},
        }
    )


def error_result(reason: str, message: str) -> str:
    return json.dumps({"error": {"reason": reason, "message": message}})


def children_of(answer: Obj) -> list[Obj]:
    return list(answer.get("children") or [])


def find_child(answer_or_children: Obj | list[Obj], kind: str, name_prefix: str = "") -> Obj:
    items = answer_or_children if isinstance(answer_or_children, list) else children_of(answer_or_children)
    found = [c for c in items if c["kind"] == kind and c["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, (
        f"expected one {kind} {name_prefix!r}, got {[c['metadata']['name'] for c in found]}"
    )
    return found[0]


def next_parent(parent: Obj, answer: Obj) -> Obj:
    """The parent after Metacontroller wrote the answer's status."""
    p = copy.deepcopy(parent)
    p["status"] = copy.deepcopy(answer["status"])
    p["status"]["observedGeneration"] = p["metadata"].get("generation", 1)
    return p
