"""The worker's own Job: where it reports its progress and its result.

The hooks read both from the Job (``ai.deckhouse.io/progress`` and
``ai.deckhouse.io/result``), never from Pods: with a ``pods`` related rule
Metacontroller would cache every Pod of the cluster, and a Job is one object
whose result and Complete/Failed condition arrive together (the worker patches
the result before it exits). The hook checks the result's content all the same
(``lib/result.artifact_problem``): namespace editors can patch Jobs too.

Only in a cluster: the pod spec sets ``AI_MODELS_JOB_NAME``,
``AI_MODELS_JOB_NAMESPACE`` and ``AI_MODELS_KUBE_DIR`` (a projected
service-account token and the cluster CA, mounted in the worker container
only), and the kubelet sets ``KUBERNETES_SERVICE_HOST``/``_PORT``. The Role
beside the Job allows get/patch on that one Job. Elsewhere (local runs,
benchmarks) there is no Job and nothing is patched; the result file is still
written (``--result-file``, the container's termination message by default)
for ``kubectl describe pod``.

The same token reads one more object: DMCR's usage record for the capacity
check (``read_config_map``, ``jobs/capacity.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lib.api.types import ANNOTATION_PROGRESS, ANNOTATION_RESULT, GROUP, VERSION
from lib.retry import Attempts, RetryPolicy

MIN_INTERVAL = 10.0  # seconds between two progress patches
DEFAULT_KUBE_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The result is what counts: five tries, 1, 2, 4, 8 s apart (lib/retry, as every other retry).
RESULT_RETRY = RetryPolicy(attempts=5, base_delay=1.0, max_delay=8.0, total=60.0)
TIMEOUT = 15.0
REPORTING_CONTROLLER = "ai.deckhouse.io/worker"
MAX_NOTE = 1024  # events.k8s.io/v1 refuses a longer note


@dataclass
class OwnJob:
    """Patches annotations of one Job through the API server (the ``kubernetes`` client)."""

    name: str
    namespace: str
    api: Any  # kubernetes.client.BatchV1Api
    sleep: Callable[[float], None] = time.sleep
    # Where Events go and what they are about (the Model, ClusterModel or ModelCatalogSource):
    # AI_MODELS_EVENT_NAMESPACE / AI_MODELS_EVENT_REGARDING, set by the hook.
    event_namespace: str = ""
    regarding: dict[str, str] = field(default_factory=dict)
    events_api: Any = None  # kubernetes.client.EventsV1Api
    instance: str = ""  # the Pod's name (reportingInstance)
    command: str = ""  # the worker command, for the final Event
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> OwnJob | None:
        name = environ.get("AI_MODELS_JOB_NAME")
        namespace = environ.get("AI_MODELS_JOB_NAMESPACE")
        if not name or not namespace:
            return None
        try:
            from kubernetes import client

            api_client = api_client_from_env(environ)
            regarding = _regarding(environ.get("AI_MODELS_EVENT_REGARDING", ""))
            return cls(
                name,
                namespace,
                client.BatchV1Api(api_client),
                event_namespace=environ.get("AI_MODELS_EVENT_NAMESPACE", ""),
                regarding=regarding,
                events_api=client.EventsV1Api(api_client) if regarding else None,
                instance=environ.get("HOSTNAME", "") or name,
            )
        except LookupError:  # outside a cluster: nothing to report on
            return None
        except Exception as e:  # no usable in-cluster config: behave as outside a cluster
            print(f"warning: no API server to report on Job {namespace}/{name}: {e}", flush=True)
            return None

    def patch(self, annotations: Mapping[str, str | None]) -> None:
        """A JSON merge patch of ``metadata.annotations`` (None removes a key)."""
        body = {"metadata": {"annotations": dict(annotations)}}
        self.api.patch_namespaced_job(self.name, self.namespace, body, _request_timeout=TIMEOUT)

    def begin(self) -> None:
        """Clear what an earlier Pod of this Job reported: a crash must not reuse its result."""
        try:
            self.patch({ANNOTATION_RESULT: None, ANNOTATION_PROGRESS: None})
        except Exception as e:
            print(f"warning: could not reset the result on Job {self.namespace}/{self.name}: {e}", flush=True)

    def report_result(self, data: bytes) -> bool:
        """Write the result annotation before the process exits; False if every try failed."""
        tries = Attempts(RESULT_RETRY, sleep=self.sleep)
        while True:
            try:
                self.patch({ANNOTATION_RESULT: data.decode()})
                return True
            except Exception as e:
                if not tries.failed():
                    where = f"{self.namespace}/{self.name}"
                    print(f"error: could not write the result on Job {where}: {e}", flush=True)
                    return False

    def event(self, reason: str, note: str, *, warning: bool = False, action: str = "Publish") -> None:
        """Record an Event on the object the worker works for (best effort); ``kubectl describe``
        shows them in order. Notes are built by the callers from results, never from credentials."""
        if self.events_api is None or not self.event_namespace:
            return
        related = {"apiVersion": "batch/v1", "kind": "Job", "name": self.name, "namespace": self.namespace}
        record_event(self.events_api, self.event_namespace, self.regarding, reason, note,
                     warning=warning, action=action, instance=self.instance, related=related)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def progress_reporter(self) -> Callable[[int], None]:
        """Progress in the background, at most every ``MIN_INTERVAL`` seconds; failures ignored."""
        last = [0.0]

        def report(percent: int) -> None:
            now = time.monotonic()
            if now - last[0] < MIN_INTERVAL and percent < 100:
                return
            last[0] = now
            threading.Thread(
                target=_quietly, args=(lambda: self.patch({ANNOTATION_PROGRESS: f"{percent}%"}),), daemon=True
            ).start()

        return report


def api_client_from_env(environ: Mapping[str, str] = os.environ) -> Any:
    """A ``kubernetes.client.ApiClient`` with the pod's projected token (``AI_MODELS_KUBE_DIR``);
    ``LookupError`` outside a cluster, the client's own errors on a bad token or CA."""
    root = environ.get("AI_MODELS_KUBE_DIR") or DEFAULT_KUBE_DIR
    if not environ.get("KUBERNETES_SERVICE_HOST") or not os.path.exists(os.path.join(root, "token")):
        raise LookupError("not in a cluster (no KUBERNETES_SERVICE_HOST or service-account token)")
    from kubernetes import client
    from kubernetes.config.incluster_config import InClusterConfigLoader

    cfg = client.Configuration()
    InClusterConfigLoader(
        token_filename=os.path.join(root, "token"),
        cert_filename=os.path.join(root, "ca.crt"),
        environ=environ,
    ).load_and_set(cfg)
    return client.ApiClient(cfg)


def read_config_map(
    namespace: str, name: str, environ: Mapping[str, str] = os.environ
) -> dict[str, str] | None:
    """One ConfigMap's ``data`` through the API (None when it does not exist); raises otherwise.

    Used for DMCR's usage record (``jobs/capacity.py``): every service account may read that one
    ConfigMap (deploy/rbac/dmcr-usage-reader.yaml).
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client_from_env(environ))
    try:
        cm = core.read_namespaced_config_map(name, namespace, _request_timeout=TIMEOUT)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return dict(cm.data or {})


def list_models(namespace: str, environ: Mapping[str, str] = os.environ) -> list[dict[str, Any]]:
    """Every Model of ``namespace`` through the API, paginated; raises on API errors.

    For the namespace quota (``jobs/capacity.py``): the worker's Role may ``list`` Models of its
    Model's namespace when a quota is configured (``hooks.worker_jobs.worker_rbac``).
    """
    from kubernetes import client

    api = client.CustomObjectsApi(api_client_from_env(environ))
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page: dict[str, Any] = api.list_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, namespace, "models", limit=500, _continue=token, _request_timeout=TIMEOUT)
        items += page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items


def record_event(
    events_api: Any,
    namespace: str,
    regarding: Mapping[str, str],
    reason: str,
    note: str,
    *,
    warning: bool = False,
    action: str = "Publish",
    instance: str = "",
    related: Mapping[str, str] | None = None,
) -> None:
    """POST one ``events.k8s.io/v1`` Event; a refusal is a log line, never a failure."""
    now = dt.datetime.now(dt.UTC)
    # The client serialises datetimes with isoformat(), which drops a zero fraction;
    # the API server's MicroTime needs one.
    now = now.replace(microsecond=now.microsecond or 1)
    body: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        # Named as client-go's recorder names Events: <object>.<unique hex>.
        "metadata": {"name": f"{regarding.get('name', 'ai-models')[:200]}.{secrets.token_hex(8)}",
                     "namespace": namespace},
        "eventTime": now,
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
        "action": action,
        "reason": reason,
        "type": "Warning" if warning else "Normal",
        "note": note if len(note) <= MAX_NOTE else note[: MAX_NOTE - 3] + "...",
        "regarding": dict(regarding),
    }
    if related:
        body["related"] = dict(related)
    try:
        events_api.create_namespaced_event(namespace, body, _request_timeout=TIMEOUT)
    except Exception as e:
        print(f"warning: could not record event {reason}: {e}", flush=True)


def pod_event_recorder(environ: Mapping[str, str] = os.environ) -> Callable[..., None] | None:
    """Events about this pod (``AI_MODELS_POD_NAME``/``_NAMESPACE``/``_UID`` from the downward API),
    for the workload's ``materialize`` step; None outside a cluster or without a token."""
    name, namespace = environ.get("AI_MODELS_POD_NAME"), environ.get("AI_MODELS_POD_NAMESPACE")
    if not name or not namespace:
        return None
    try:
        from kubernetes import client

        events_api = client.EventsV1Api(api_client_from_env(environ))
    except Exception:
        return None
    regarding = {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": namespace}
    if environ.get("AI_MODELS_POD_UID"):
        regarding["uid"] = environ["AI_MODELS_POD_UID"]

    def record(reason: str, note: str, *, warning: bool = False) -> None:
        record_event(events_api, namespace, regarding, reason, note, warning=warning, action="Materialize",
                     instance=name)

    return record


_current: list[OwnJob | None] = []


def current() -> OwnJob | None:
    """This process's Job (read from the environment once)."""
    if not _current:
        _current.append(OwnJob.from_env())
    return _current[0]


def reporter() -> Callable[[int], None] | None:
    job = current()
    return job.progress_reporter() if job else None


def _regarding(raw: str) -> dict[str, str]:
    """The object reference from ``AI_MODELS_EVENT_REGARDING`` (JSON); {} if absent or malformed."""
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    keys = ("apiVersion", "kind", "name", "namespace", "uid")
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k, ""), str) for k in keys):
        return {}
    ref = {k: doc[k] for k in keys if doc.get(k)}
    return ref if {"apiVersion", "kind", "name"} <= set(ref) else {}


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:
        pass
