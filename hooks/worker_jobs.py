"""Worker Jobs, for every hook kind: who a Job works for, its spec, its outcome, its counters.

A hook that runs a worker (``python -m jobs <command>``) describes whom the
Job works for with an ``Owner`` (a Model, a ClusterModel, a
ModelCatalogSource, or a Model's catalog import run by its source), the
varying part of the Job with a ``JobSpec``, and gets a complete Job back from
``worker_job``, with the RBAC that lets the worker patch its own Job
(``worker_rbac``) and record Events on its owner (``events_rbac``). It reads
what the Job did with ``job_state`` and ``job_result``, and recovers the
attempt counters a lost status write forgot with ``adopt``. Pure functions,
like every module in ``hooks/``.

Every object is complete and deterministic, because Metacontroller applies it
with a three-way merge on every sync: a field that changed between two calls
would be an update (and a Job's pod template cannot be updated at all).

Security shape of every worker pod: restricted Pod Security (non-root uid
65532, read-only root filesystem with an emptyDir for ``/tmp``, no privilege
escalation, all capabilities dropped, RuntimeDefault seccomp). No token is
automounted; the worker container alone gets a projected service-account
token (one hour, refreshed by the kubelet) and the cluster CA, because the
worker patches its progress and its result onto its own Job (the Role names
that one Job; ``jobs/own_job.py``).

The worker patches its result JSON onto its own Job (``ai.deckhouse.io/result``)
before it exits, so the Job alone tells the whole story: no ``pods`` related
rule (Metacontroller would cache every Pod in the cluster) and no Pod cache
lagging behind the Job's. Whoever can patch the Job can write the annotation,
so callers check a result's content before they trust it
(``lib/result.artifact_problem``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lib.api.naming import dns_label
from lib.api.types import ANNOTATION_RESULT, API_VERSION, GROUP, LABEL_MODEL_UID
from lib.config import Config
from lib.result import LIMIT

Obj = dict[str, Any]

LABEL_WORKER = "ai.deckhouse.io/worker"  # publish | upload-server | cleanup | catalog-probe | catalog-import
LABEL_WORKER_JOB = "ai.deckhouse.io/worker-job"
LABEL_ATTEMPT = "ai.deckhouse.io/attempt"

WORKER_CONTAINER = "worker"
WORKER_UID = 65532
RESULT_FILE = "/dev/termination-log"
KUBE_DIR = "/var/run/ai-models/kube"  # projected token + ca.crt: the worker reports on its Job
KUBE_TOKEN_SECONDS = 3600
# Where a worker finds the credential and the CA of the source it reads (a Secret each).
SOURCE_DIR = "/var/run/ai-models/source"
SOURCE_TOKEN_FILE = f"{SOURCE_DIR}/token"
SOURCE_DOCKERCONFIG_FILE = f"{SOURCE_DIR}/.dockerconfigjson"
SOURCE_CA_DIR = "/var/run/ai-models/source-ca"
TTL_AFTER_FINISHED = 3600
EXIT_PERMANENT = 2  # worker exit status for permanent errors (docs/lifecycle.md)

BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 600

# Counters adopted from observed Jobs' labels (tenant-writable in a Model's namespace) above
# this are ignored: no real sequence of attempts or upload sessions gets there.
MAX_ADOPTED_COUNTER = 1000

# The worker's document is at most LIMIT bytes; a longer annotation is not one of ours.
MAX_ANNOTATION = 2 * LIMIT


def backoff_seconds(attempt: int) -> int:
    """Delay before ``attempt`` (2, 3, ...): 30 s doubling, capped at 10 min (slept by the pod)."""
    if attempt <= 1:
        return 0
    # The exponent is capped before the power: a counter read from a request may be any int32.
    return min(BACKOFF_BASE_SECONDS * 2 ** min(attempt - 2, 16), BACKOFF_MAX_SECONDS)


# -- the owner ---------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """Whom a worker Job works for, and where and under which names its objects live.

    ``kind``/``name``/``namespace``/``uid`` are the object the worker's Events
    are about (``namespace`` is "" for a cluster-scoped one); the Job, its
    ServiceAccount, Role and RoleBinding go to ``child_namespace`` and are
    named ``<prefix>-<what>-<stem>``.
    """

    kind: str
    name: str
    namespace: str  # "" for a cluster-scoped object
    uid: str
    child_namespace: str
    prefix: str
    stem: str

    @property
    def cluster(self) -> bool:
        return not self.namespace

    @property
    def worker_account(self) -> str:
        """ServiceAccount, Role and RoleBinding of the worker (same name, different kinds)."""
        return dns_label(f"{self.prefix}-worker", self.stem)


def meta(owner: Owner, name: str, worker: str | None = None) -> Obj:
    """``metadata`` of a child of ``owner``: its namespace and the owner's UID label."""
    labels = {LABEL_MODEL_UID: owner.uid}
    if worker:
        labels[LABEL_WORKER] = worker
    return {"name": name, "namespace": owner.child_namespace, "labels": labels}


def event_namespace(owner: Owner) -> str:
    """Where the worker's Events go: beside a namespaced owner; ``default`` for cluster-scoped
    ones (the API server requires an Event's namespace to be its object's, or ``default``)."""
    return "default" if owner.cluster else owner.namespace


def regarding(owner: Owner) -> str:
    """The object the worker's Events are about, as JSON (``jobs/own_job.py``)."""
    ref = {"apiVersion": API_VERSION, "kind": owner.kind, "name": owner.name, "uid": owner.uid}
    if not owner.cluster:
        ref["namespace"] = owner.namespace
    return json.dumps(ref, sort_keys=True, separators=(",", ":"))


# -- the Job -----------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Requests/limits and deadlines of one kind of worker Job."""

    cpu: tuple[str, str]
    memory: tuple[str, str]
    ephemeral: tuple[str, str]
    deadline_seconds: int
    backoff_limit: int
    tmp_size: str = "1Gi"


BACKOFF_INIT = Budget(("10m", "100m"), ("16Mi", "64Mi"), ("1Mi", "16Mi"), 0, 0)


@dataclass(frozen=True)
class JobSpec:
    """What varies between the worker Jobs."""

    name: str
    worker: str  # the LABEL_WORKER value: publish | upload-server | cleanup | catalog-probe | ...
    args: list[str]
    budget: Budget
    service_account: bool  # a token to patch its own Job (progress, result) with
    volumes: list[Obj]
    mounts: list[Obj]
    labels: dict[str, str]
    delay_seconds: int = 0  # retry backoff, slept by an init container
    deadline_seconds: int = 0  # overrides budget.deadline_seconds when set
    ports: list[Obj] | None = None


def security_context() -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(b: Budget) -> Obj:
    return {
        "requests": {"cpu": b.cpu[0], "memory": b.memory[0], "ephemeral-storage": b.ephemeral[0]},
        "limits": {"cpu": b.cpu[1], "memory": b.memory[1], "ephemeral-storage": b.ephemeral[1]},
    }


def secret_volume(name: str, secret: str, items: list[tuple[str, str]]) -> Obj:
    """A volume of some keys of a Secret in the Job's namespace, readable by the worker only."""
    return {
        "name": name,
        "secret": {
            "secretName": secret,
            "items": [{"key": k, "path": p} for k, p in items],
            "defaultMode": 0o440,
        },
    }


def source_mounts(
    auth: tuple[str, list[tuple[str, str]]] | None, ca_secret: str
) -> tuple[list[Obj], list[Obj]]:
    """Volumes and mounts of a source's credential (Secret, its items) at ``SOURCE_DIR`` and of
    its CA (key ``ca.crt`` of ``ca_secret``) at ``SOURCE_CA_DIR``; either may be absent."""
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    if auth is not None:
        volumes.append(secret_volume("source-auth", auth[0], auth[1]))
        mounts.append({"name": "source-auth", "mountPath": SOURCE_DIR, "readOnly": True})
    if ca_secret:
        volumes.append(secret_volume("source-ca", ca_secret, [("ca.crt", "ca.crt")]))
        mounts.append({"name": "source-ca", "mountPath": SOURCE_CA_DIR, "readOnly": True})
    return volumes, mounts


def _kube_api_volume() -> Obj:
    """What automount would give, for the worker container only: token, CA (kube-root-ca.crt)."""
    return {
        "name": "kube-api",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": KUBE_TOKEN_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            ],
        },
    }


def _pod_spec(owner: Owner, config: Config, js: JobSpec) -> Obj:
    container: Obj = {
        "name": WORKER_CONTAINER,
        "image": config.worker_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "jobs"],
        "args": js.args,
        "env": [
            {"name": "AI_MODELS_JOB_NAME", "value": js.name},
            {"name": "AI_MODELS_JOB_NAMESPACE", "value": owner.child_namespace},
            {"name": "AI_MODELS_EVENT_NAMESPACE", "value": event_namespace(owner)},
            {"name": "AI_MODELS_EVENT_REGARDING", "value": regarding(owner)},
            {"name": "TMPDIR", "value": "/tmp"},
        ],
        "resources": resources(js.budget),
        "securityContext": security_context(),
        "terminationMessagePath": RESULT_FILE,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *js.mounts],
    }
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {"sizeLimit": js.budget.tmp_size}}, *js.volumes]
    if js.service_account:
        container["env"].append({"name": "AI_MODELS_KUBE_DIR", "value": KUBE_DIR})
        container["volumeMounts"].append({"name": "kube-api", "mountPath": KUBE_DIR, "readOnly": True})
        volumes.append(_kube_api_volume())
    if js.ports:
        container["ports"] = js.ports
        container["readinessProbe"] = {
            "tcpSocket": {"port": js.ports[0]["containerPort"]},
            "periodSeconds": 5,
        }
    pod_spec: Obj = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if js.service_account:
        pod_spec["serviceAccountName"] = owner.worker_account
    if js.delay_seconds > 0:
        # No clock in the hook: the retry delay is slept by the new attempt itself.
        pod_spec["initContainers"] = [
            {
                "name": "backoff",
                "image": config.worker_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-c", "import sys, time; time.sleep(int(sys.argv[1]))"],
                "args": [str(js.delay_seconds)],
                "resources": resources(BACKOFF_INIT),
                "securityContext": security_context(),
            }
        ]
    return pod_spec


def worker_job(owner: Owner, config: Config, js: JobSpec) -> Obj:
    """A worker Job: restricted pod, result on the Job's annotation, no in-place restarts."""
    labels = {LABEL_MODEL_UID: owner.uid, LABEL_WORKER: js.worker, LABEL_WORKER_JOB: js.name, **js.labels}
    deadline = js.deadline_seconds or js.budget.deadline_seconds
    spec: Obj = {
        "backoffLimit": js.budget.backoff_limit,
        "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": WORKER_CONTAINER,
                        "operator": "In",
                        "values": [EXIT_PERMANENT],
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {"metadata": {"labels": labels}, "spec": _pod_spec(owner, config, js)},
    }
    if deadline:
        spec["activeDeadlineSeconds"] = deadline + js.delay_seconds
    job_meta = meta(owner, js.name, js.worker)
    job_meta["labels"].update(js.labels)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta, "spec": spec}


# ``create`` cannot be limited to names (RBAC ignores resourceNames for create): this one
# rule is the exception to "every rule names its objects" (docs/security.md).
EVENTS_RULE = {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]}


# The namespace quota's one read (jobs/capacity.py): the sizes of the namespace's Models. ``list``
# cannot name objects either; it is granted only with a quota, only in the Model's own namespace.
MODELS_LIST_RULE = {"apiGroups": [GROUP], "resources": ["models"], "verbs": ["list"]}


def worker_rbac(owner: Owner, *job_names: str, list_models: bool = False) -> list[Obj]:
    """ServiceAccount + Role + RoleBinding: the worker may get/patch its own Job, nothing else
    (and create Events when its owner is beside it, and list the namespace's Models for the
    namespace quota when ``list_models``)."""
    beside = not owner.cluster and owner.child_namespace == owner.namespace
    name = owner.worker_account
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(owner, name),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(owner, name),
            "rules": [
                {
                    "apiGroups": ["batch"],
                    "resources": ["jobs"],
                    "resourceNames": sorted(set(job_names)),
                    "verbs": ["get", "patch"],
                },
                # Events on the owner beside it (a cluster-scoped object's go to ``default``).
                *([EVENTS_RULE] if beside else []),
                *([MODELS_LIST_RULE] if beside and list_models else []),
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(owner, name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.child_namespace}],
        },
    ]


def events_rbac(
    owner: Owner, account: str, account_namespace: str, *, list_models: bool = False
) -> list[Obj]:
    """Role + RoleBinding beside ``owner``: a worker running elsewhere (its catalog import, in the
    module namespace) may record Events on it (and list the namespace's Models for the namespace
    quota when ``list_models``). Cluster-scoped objects' Events go to ``default``, where
    deploy/rbac/worker-events.yaml lets the module namespace's workers write them."""
    name = dns_label("ai-model-events", owner.name)
    md = {**meta(owner, name), "namespace": owner.namespace}
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": md,
         "rules": [EVENTS_RULE, *([MODELS_LIST_RULE] if list_models else [])]},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": dict(md),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_namespace}],
        },
    ]


# -- reading the Job ----------------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    """What the Job's own status says (the Job controller writes it, tenants cannot)."""

    exists: bool = False
    succeeded: bool = False
    failed: bool = False
    reason: str = ""  # of the Failed condition: BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy
    message: str = ""
    finished_at: str = ""

    @property
    def finished(self) -> bool:
        return self.succeeded or self.failed

    @property
    def why(self) -> str:
        """The Failed condition as ``reason: message``, for "failed without a result"."""
        return self.reason + (f": {self.message}" if self.message else "")


def job_state(job: Obj | None) -> JobState:
    if job is None:
        return JobState()
    st = job.get("status") or {}
    succeeded = failed = False
    reason = message = at = ""
    for c in st.get("conditions") or ():
        if not isinstance(c, dict) or c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            succeeded, at = True, str(c.get("lastTransitionTime") or "")
        elif c.get("type") == "Failed":
            failed, at = True, str(c.get("lastTransitionTime") or "")
            reason, message = str(c.get("reason") or "Failed"), str(c.get("message") or "")
    if not succeeded and isinstance(st.get("succeeded"), int) and st["succeeded"] >= 1:
        succeeded = True
    return JobState(True, succeeded, failed and not succeeded, reason, message, at)


def job_result(job: Obj | None) -> tuple[Obj | None, str]:
    """The parsed result annotation, or (None, why it is unreadable); ("", "") when absent."""
    raw = ((job or {}).get("metadata") or {}).get("annotations") or {}
    value = raw.get(ANNOTATION_RESULT) if isinstance(raw, dict) else None
    if value is None:
        return None, ""
    if not isinstance(value, str) or len(value) > MAX_ANNOTATION:
        return None, f"{ANNOTATION_RESULT} is not a result document"
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):  # nested thousands deep: the decoder gives up recursing
        return None, f"{ANNOTATION_RESULT} is not JSON"
    if not isinstance(doc, dict):
        return None, f"{ANNOTATION_RESULT} is not a JSON object"
    return doc, ""


def job_label(job: Obj | None) -> str:
    """``namespace/name`` of a Job, to name it when its result is refused (never its content)."""
    md = (job or {}).get("metadata") or {}
    return f"{md.get('namespace') or ''}/{md.get('name') or ''}".lstrip("/")[:120]


def failed_without_result(what: str, why: str, name: str, namespace: str) -> str:
    """The message for a worker Job that ended without a result (a crash, an OOM kill, a deadline)."""
    return (
        f"{what} job failed without a result: {why} (kubectl logs job/{name} "
        f"-n {namespace} shows the worker's log)"
    )


# -- adopting counters ---------------------------------------------------------------


def label(obj: Obj, key: str) -> str:
    """A label's value ("" when absent or not a string)."""
    v = ((obj.get("metadata") or {}).get("labels") or {}).get(key)
    return v if isinstance(v, str) else ""


def label_int(obj: Obj, key: str, limit: int | None = MAX_ADOPTED_COUNTER) -> int:
    """A counter label's value; 0 when it is not a plain number (or, with ``limit``, above it)."""
    v = ((obj.get("metadata") or {}).get("labels") or {}).get(key, "")
    if limit is None:
        return int(v) if isinstance(v, str) and v.isdigit() else 0
    if not (isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= len(str(limit))):
        return 0
    return int(v) if int(v) <= limit else 0


def adopt(
    jobs: Iterable[Obj],
    match: Mapping[str, str],
    counters: tuple[int, ...],
    labels: tuple[str, ...],
    limit: int | None = MAX_ADOPTED_COUNTER,
) -> tuple[int, ...]:
    """The newest of (status counters, counters carried as ``labels`` by observed Jobs whose
    labels include ``match``), compared in order.

    Covers a status write that was lost after the children of a new attempt
    were applied: the observed Job proves the newer attempt exists.
    """
    best = counters
    for job in jobs:
        have = (job.get("metadata") or {}).get("labels") or {}
        if any(have.get(k) != v for k, v in match.items()):
            continue
        seen = tuple(label_int(job, lb, limit) for lb in labels)
        if seen > best:
            best = seen
    return best
