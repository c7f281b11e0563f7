"""ModelCatalogSource controller: periodic probes, status, and the catalog credentials' copies.

Pure Metacontroller v2 hooks (docs/catalog.md has the design):

- **A Job per probe** in the module namespace, named with the probe counter
  (``status.probeAttempt``). When probe *n* has finished, the same call
  records its result and creates probe *n+1*, whose pod first sleeps
  ``refreshIntervalSeconds`` (an init container, like the Model retries'
  backoff): the hook has no clock, and a sleeping pod is the one clock-free
  way to say "after the interval" that does not depend on when Metacontroller
  resyncs. A probe whose inputs changed (spec, auth Secret content, CA) is
  replaced at once by a new one without the delay: the Job carries a hash of
  its inputs in a label.
- **Results** are on the probe Jobs (``ai.deckhouse.io/result``, written by
  the worker: ``{catalogRevision, models}`` or an error); the previous probe
  Job is kept while it exists, so a lost status write is recovered from it on
  the next call.
- **Credentials**: a pod mounts only Secrets of its own namespace, so the
  hook copies the ``authSecretRef`` Secret (dockerconfigjson) next to the
  probe, in the module namespace, and nowhere else: no tenant can read it.
- **Imports**: the catalog imports of Models and ClusterModels that select
  this source run here too, in the module namespace (``hooks.catalog_imports``):
  the Model hooks freeze the selection and decide retries in their status,
  this controller runs the Job, the Model hooks read its outcome.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from hooks import catalog_imports as imports
from hooks.catalog_imports import LABEL_SOURCE_UID, auth_secret_name, ca_secret_name
from hooks.errors import HookInputError
from hooks.model_children import (
    RESULT_FILE,
    SOURCE_CA_DIR,
    SOURCE_DIR,
    SOURCE_DOCKERCONFIG_FILE,
    Budget,
    JobSpec,
    _secret_volume,
    worker_job,
    worker_rbac,
)
from hooks.model_parent import ModelRef
from hooks.model_status import JOB, SECRET, by_name, clip, objects, request_time
from hooks.worker_result import job_result, job_state
from lib import catalog
from lib.api import conditions as cond
from lib.api import worker_cli as cli
from lib.api.naming import dns_label, short_hash
from lib.api.types import API_VERSION, ConditionType, Phase, Reason
from lib.config import Config

Obj = dict[str, Any]

MODEL = f"Model.{API_VERSION}"
CLUSTER_MODEL = f"ClusterModel.{API_VERSION}"
LABEL_SOURCE = "ai.deckhouse.io/catalog-source"
LABEL_PROBE = "ai.deckhouse.io/probe-attempt"
LABEL_PROBE_DELAY = "ai.deckhouse.io/probe-delay"
LABEL_PROBE_INPUTS = "ai.deckhouse.io/probe-inputs"
DOCKERCONFIG_KEY = ".dockerconfigjson"
CA_KEY = "ca.crt"
DEFAULT_REFRESH = 300
PROBE = Budget(("50m", "500m"), ("64Mi", "256Mi"), ("64Mi", "256Mi"), 600, 0, tmp_size="64Mi")
REASON_PROBED = "CatalogProbed"
REASON_TRUNCATED = "CatalogListTruncated"
# Probe error reasons a Model shows as they are (Failed, recoverable); others mean "not ready".
PASS_THROUGH = frozenset({Reason.CATALOG_AUTH_FAILED, Reason.CATALOG_TLS_INVALID})


# -- names shared with the Model hooks (hooks/model_catalog.py) --------------------


def probe_job_name(source: str, attempt: int) -> str:
    return dns_label("ai-catalog-probe", f"{source}-{attempt}")


# -- the parent ------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    name: str
    uid: str
    generation: int | None
    spec: Obj
    status: Obj
    registry: str
    repository: str
    tag: str
    insecure: bool
    refresh: int
    auth_ref: tuple[str, str] | None  # (namespace, name)

    @property
    def catalog_ref(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def decode_ca(value: Any) -> str:
    """``spec.caBundle`` (base64 PEM) → PEM text; ValueError when it is not that."""
    if not value:
        return ""
    try:
        pem = base64.b64decode(str(value), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("spec.caBundle is not base64-encoded PEM") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("spec.caBundle does not contain a PEM certificate (-----BEGIN CERTIFICATE-----)")
    return pem


def parse_source(parent: Obj) -> Source:
    md = parent.get("metadata") or {}
    if parent.get("kind") != "ModelCatalogSource":
        raise HookInputError(f"parent.kind must be ModelCatalogSource, got {parent.get('kind')!r}")
    name, uid = md.get("name"), md.get("uid")
    if not isinstance(name, str) or not name or not isinstance(uid, str) or not uid:
        raise HookInputError("parent.metadata.name and uid are required")
    spec = parent.get("spec")
    if not isinstance(spec, dict):
        raise HookInputError("parent.spec must be an object")
    status = parent.get("status") or {}
    if not isinstance(status, dict):
        raise HookInputError("parent.status must be an object")
    registry, repository = spec.get("registry"), spec.get("repository")
    if not isinstance(registry, str) or not registry or not isinstance(repository, str) or not repository:
        raise HookInputError("parent.spec.registry and parent.spec.repository are required")
    ref = spec.get("authSecretRef")
    auth = None
    if isinstance(ref, dict) and ref.get("name") and ref.get("namespace"):
        auth = (str(ref["namespace"]), str(ref["name"]))
    refresh = spec.get("refreshIntervalSeconds")
    gen = md.get("generation")
    return Source(
        name=name,
        uid=uid,
        generation=gen if isinstance(gen, int) else None,
        spec=spec,
        status=status,
        registry=registry,
        repository=repository,
        tag=str(spec.get("tag") or "latest"),
        insecure=spec.get("insecure") is True,
        refresh=refresh if isinstance(refresh, int) and refresh >= 30 else DEFAULT_REFRESH,
        auth_ref=auth,
    )


def _ref(src: Source, config: Config) -> ModelRef:
    """A ``ModelRef`` shaped identity, to build the probe Job with the Model Jobs' builder."""
    return ModelRef(
        cluster=True,
        kind="ModelCatalogSource",
        name=src.name,
        namespace="",
        uid=src.uid,
        generation=src.generation,
        created="",
        spec=src.spec,
        status=src.status,
        child_namespace=config.namespace,
        repository="",
        destination="",
        child_prefix="ai-catalog-probe",
    )


# -- children --------------------------------------------------------------------


def _labels(src: Source) -> dict[str, str]:
    # Label values are at most 63 characters; source names may be longer.
    value = src.name if len(src.name) <= 63 else short_hash(src.name)
    return {LABEL_SOURCE_UID: src.uid, LABEL_SOURCE: value}


def auth_copy(src: Source, namespace: str, dockerconfig_b64: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": auth_secret_name(src.name), "namespace": namespace, "labels": _labels(src)},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {DOCKERCONFIG_KEY: dockerconfig_b64},
    }


def ca_copy(src: Source, namespace: str, pem: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ca_secret_name(src.name), "namespace": namespace, "labels": _labels(src)},
        "type": "Opaque",
        "data": {CA_KEY: base64.b64encode(pem.encode()).decode()},
    }


def probe_job(
    src: Source,
    config: Config,
    *,
    attempt: int,
    delay: int,
    inputs: str,
    auth: bool,
    ca: bool,
    wanted: tuple[str, ...] = (),
) -> Obj:
    name = probe_job_name(src.name, attempt)
    command = cli.CatalogProbe(
        catalog=src.catalog_ref,
        result_file=RESULT_FILE,
        want=tuple(wanted),
        auth_file=SOURCE_DOCKERCONFIG_FILE if auth else None,
        ca_file=f"{SOURCE_CA_DIR}/{CA_KEY}" if ca else None,
        insecure_registry=src.insecure,
    )
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    if auth:
        volumes.append(
            _secret_volume("source-auth", auth_secret_name(src.name), [(DOCKERCONFIG_KEY, DOCKERCONFIG_KEY)])
        )
        mounts.append({"name": "source-auth", "mountPath": SOURCE_DIR, "readOnly": True})
    if ca:
        volumes.append(_secret_volume("source-ca", ca_secret_name(src.name), [(CA_KEY, CA_KEY)]))
        mounts.append({"name": "source-ca", "mountPath": SOURCE_CA_DIR, "readOnly": True})
    job = worker_job(
        _ref(src, config),
        config,
        JobSpec(
            name=name,
            worker="catalog-probe",
            args=command.argv(),
            budget=PROBE,
            service_account=True,
            volumes=volumes,
            mounts=mounts,
            labels={
                **_labels(src),
                LABEL_PROBE: str(attempt),
                LABEL_PROBE_DELAY: str(delay),
                LABEL_PROBE_INPUTS: inputs,
            },
            delay_seconds=delay,
        ),
    )
    return job


# -- reading probe results ---------------------------------------------------------


@dataclass(frozen=True)
class ProbeOutcome:
    finished: bool = False
    result: Obj | None = None  # {catalogRevision, models[, modelsTruncated]}
    error: tuple[str, str] | None = None
    finished_at: str = ""


def _label(obj: Obj, key: str) -> str:
    v = ((obj.get("metadata") or {}).get("labels") or {}).get(key)
    return v if isinstance(v, str) else ""


def job_name(job: Obj | None) -> str:
    return str(((job or {}).get("metadata") or {}).get("name") or "")


def job_namespace(job: Obj | None) -> str:
    return str(((job or {}).get("metadata") or {}).get("namespace") or "")


def probe_outcome(job: Obj | None) -> ProbeOutcome:
    """What the probe Job reported: its result annotation, else its Failed condition.

    The probe runs in the module namespace, where only the module writes.
    """
    state = job_state(job)
    if not state.exists:
        return ProbeOutcome()
    doc, unreadable = job_result(job)
    at = state.finished_at
    if doc is not None and isinstance(doc.get("catalogRevision"), str):
        return ProbeOutcome(True, result=doc, finished_at=at)
    if doc is not None and isinstance(doc.get("error"), dict):
        err = doc["error"]
        reason = str(err.get("reason") or Reason.CATALOG_SOURCE_NOT_READY)
        return ProbeOutcome(True, error=(reason, clip(str(err.get("message")))), finished_at=at)
    if state.failed or unreadable:
        why = unreadable or state.reason + (f": {state.message}" if state.message else "")
        return ProbeOutcome(
            True,
            error=(Reason.WORKER_FAILED, clip(
                f"probe job failed without a result: {why} (kubectl logs job/{job_name(job)} "
                f"-n {job_namespace(job)} shows the worker's log)")),
            finished_at=at,
        )
    if state.succeeded:  # Complete without a result: move on, keeping the last observation
        return ProbeOutcome(True, finished_at="")
    return ProbeOutcome()


# -- status ------------------------------------------------------------------------

MODEL_FIELDS = {"name": str, "reference": str, "digest": str, "format": str, "family": str, "sizeBytes": int}


def _status_models(models: Any) -> list[Obj]:
    out = []
    for m in models or ():
        try:
            entry = catalog.validate_entry(m)
        except catalog.CatalogError:
            continue
        out.append({k: v for k, v in entry.items() if k in MODEL_FIELDS})
    return out


@dataclass
class Observed:
    phase: str
    reason: str
    message: str
    revision: str = ""
    models: list[Obj] | None = None
    probe_time: str = ""


def _from_outcome(out: ProbeOutcome, src: Source) -> Observed | None:
    if out.result is None and out.error is None:
        return None
    if out.result is not None:
        models = _status_models(out.result.get("models"))
        truncated = out.result.get("modelsTruncated") is True
        msg = f"{len(models)} models at revision {out.result['catalogRevision']}"
        if truncated:
            msg += (
                "; the catalog lists more models than one probe result can carry (4096 bytes): "
                "only these can be imported, see docs/catalog.md"
            )
        return Observed(
            Phase.READY,
            REASON_TRUNCATED if truncated else REASON_PROBED,
            msg,
            revision=out.result["catalogRevision"],
            models=models,
            probe_time=out.finished_at,
        )
    reason, message = out.error or ("", "")
    return Observed(Phase.FAILED, reason, message, probe_time=out.finished_at)


def _previous(src: Source) -> Observed | None:
    phase = src.status.get("phase")
    if phase not in (Phase.READY, Phase.FAILED):
        return None
    c = cond.find(src.status.get("conditions"), ConditionType.READY) or {}
    return Observed(
        str(phase),
        str(c.get("reason") or ""),
        str(c.get("message") or ""),
        revision=str(src.status.get("catalogRevision") or ""),
        models=list(src.status.get("models") or []),
        probe_time=str(src.status.get("lastProbeTime") or ""),
    )


def _status(src: Source, obs: Observed, attempt: int, now: str, last_good: Observed | None) -> Obj:
    ready = obs.phase == Phase.READY
    truth = cond.TRUE if ready else cond.UNKNOWN if obs.phase == Phase.PENDING else cond.FALSE
    status: Obj = {
        "phase": obs.phase,
        "probeAttempt": attempt,
        "conditions": cond.merge(
            src.status.get("conditions"),
            [(ConditionType.READY, truth, obs.reason, clip(obs.message))],
            now=now,
            generation=src.generation,
        ),
    }
    # A failed probe keeps the last good listing for information; Models use Ready sources only.
    good = obs if ready else last_good
    if good is not None and good.revision:
        status["catalogRevision"] = good.revision
        status["models"] = good.models or []
    if obs.probe_time:
        status["lastProbeTime"] = obs.probe_time
    return status  # Metacontroller adds observedGeneration itself


# -- credentials -------------------------------------------------------------------


def _auth_data(src: Source, related: Obj) -> tuple[str, str | None]:
    """(base64 .dockerconfigjson or "", an error message)."""
    if src.auth_ref is None:
        return "", None
    ns, name = src.auth_ref
    secret = by_name(related, SECRET, ns, name)
    if secret is None:
        return "", f"Secret {ns}/{name} named by spec.authSecretRef does not exist (or is not readable)"
    data = secret.get("data") or {}
    value = data.get(DOCKERCONFIG_KEY)
    if not isinstance(value, str) or not value:
        return (
            "",
            f"Secret {ns}/{name} has no {DOCKERCONFIG_KEY} key (use type kubernetes.io/dockerconfigjson)",
        )
    try:
        doc = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return "", f"Secret {ns}/{name}: {DOCKERCONFIG_KEY} is not base64 JSON"
    if not isinstance(doc, dict) or not isinstance(doc.get("auths"), dict):
        return "", f"Secret {ns}/{name}: {DOCKERCONFIG_KEY} has no 'auths' object"
    return value, None


def _selects(model: Obj, src: Source, ready: bool) -> bool:
    """Whether a catalog Model (not Ready yet) may import from this source."""
    status = model.get("status") or {}
    if status.get("phase") == Phase.READY or (model.get("metadata") or {}).get("deletionTimestamp"):
        return False
    cat = ((model.get("spec") or {}).get("source") or {}).get("catalog")
    if not isinstance(cat, dict):
        return False
    frozen = ((status.get("source") or {}).get("catalog") or {}).get("sourceName")
    chosen = frozen or cat.get("sourceName")
    return chosen == src.name if chosen else ready


def _wanted(related: Obj, src: Source, ready: bool) -> tuple[str, ...]:
    """Catalog names that Models and ClusterModels selecting this source still wait for."""
    names = set()
    for m in objects(related, MODEL) + objects(related, CLUSTER_MODEL):
        if _selects(m, src, ready):
            name = (((m.get("spec") or {}).get("source") or {}).get("catalog") or {}).get("name")
            if isinstance(name, str) and catalog.NAME_RE.match(name):
                names.add(name)
    return tuple(sorted(names))


# -- hooks -------------------------------------------------------------------------


def sync(req: dict[str, Any], config: Config) -> dict[str, Any]:
    src = parse_source(req.get("parent") or {})
    children, related = req.get("children") or {}, req.get("related") or {}
    now = request_time(req)
    ns = config.namespace
    prev = _previous(src)
    last_good = prev if prev is not None and prev.revision else None

    auth_b64, auth_error = _auth_data(src, related)
    try:
        ca_pem = decode_ca(src.spec.get("caBundle"))
        ca_error = None
    except ValueError as e:
        ca_pem, ca_error = "", str(e)

    # Adopt the newest probe counter proven by status or an observed Job.
    attempt = src.status.get("probeAttempt")
    attempt = attempt if isinstance(attempt, int) and attempt >= 1 else 1
    for child in objects(children, JOB):
        seen = _label(child, LABEL_PROBE)
        if _label(child, LABEL_SOURCE_UID) == src.uid and seen.isdigit():
            attempt = max(attempt, int(seen))

    if auth_error or ca_error:
        reason = Reason.CATALOG_AUTH_FAILED if auth_error else Reason.CATALOG_TLS_INVALID
        failed = Observed(Phase.FAILED, reason, str(auth_error or ca_error))
        return {
            "status": _status(src, failed, attempt, now, last_good),
            "children": [],
            "resyncAfterSeconds": src.refresh,
        }

    # A truncated listing may miss models that Models ask for: the next probe lists those first.
    wanted: tuple[str, ...] = ()
    if prev is not None and prev.reason == REASON_TRUNCATED:
        wanted = _wanted(related, src, prev.phase == Phase.READY)
    inputs = short_hash(
        json.dumps(
            [
                src.catalog_ref,
                src.insecure,
                short_hash(auth_b64, length=16),
                short_hash(ca_pem, length=16),
                wanted,
            ],
        ),
        length=16,
    )
    desired: list[Obj] = []
    if auth_b64:
        desired.append(auth_copy(src, ns, auth_b64))
    if ca_pem:
        desired.append(ca_copy(src, ns, ca_pem))

    current = by_name(children, JOB, ns, probe_job_name(src.name, attempt))
    previous_job = by_name(children, JOB, ns, probe_job_name(src.name, attempt - 1)) if attempt > 1 else None
    out = probe_outcome(current)
    prev_out = probe_outcome(previous_job)

    def job(n: int, delay: int) -> Obj:
        return probe_job(
            src,
            config,
            attempt=n,
            delay=delay,
            inputs=inputs,
            auth=bool(auth_b64),
            ca=bool(ca_pem),
            wanted=wanted,
        )

    def reemit(observed: Obj) -> Obj:
        """An observed probe Job as it was created (its delay and inputs are its own)."""
        delay = _label(observed, LABEL_PROBE_DELAY)
        label = _label(observed, LABEL_PROBE)
        if not label.isdigit():
            name = observed["metadata"].get("name")
            raise HookInputError(f"probe Job {name}: label {LABEL_PROBE} is not a number")
        n = int(label)
        same = probe_job(
            src,
            config,
            attempt=n,
            delay=int(delay) if delay.isdigit() else 0,
            inputs=_label(observed, LABEL_PROBE_INPUTS) or inputs,
            auth=bool(auth_b64),
            ca=bool(ca_pem),
            wanted=wanted,
        )
        return same

    jobs: list[Obj] = []
    obs: Observed | None = None
    if current is None:
        # First probe, or the one created by the previous call: start it (no delay for the first).
        if previous_job is not None and prev_out.finished:
            obs = _from_outcome(prev_out, src)
            jobs.append(reemit(previous_job))
            delay = src.refresh if _label(previous_job, LABEL_PROBE_INPUTS) == inputs else 0
        else:
            delay = 0  # nothing to wait after (first probe, or the Job was deleted: probe now)
        jobs.append(job(attempt, delay))
    elif out.finished:
        obs = _from_outcome(out, src)
        same_inputs = _label(current, LABEL_PROBE_INPUTS) == inputs
        attempt += 1
        jobs += [reemit(current), job(attempt, src.refresh if same_inputs else 0)]
    elif _label(current, LABEL_PROBE_INPUTS) != inputs:
        # The spec, the credentials or the CA changed: probe again now, with the new inputs.
        attempt += 1
        jobs.append(job(attempt, 0))
        if previous_job is not None and prev_out.finished:
            obs = _from_outcome(prev_out, src)
    else:
        jobs.append(reemit(current))
        if previous_job is not None and prev_out.finished:
            obs = _from_outcome(prev_out, src)
            jobs.insert(0, reemit(previous_job))

    if obs is None:
        obs = prev or Observed(
            Phase.PENDING, Reason.PENDING, f"waiting for the first probe of {src.catalog_ref}"
        )

    # The imports that Models and ClusterModels ask this source for, run here (module namespace).
    for obj in objects(related, MODEL) + objects(related, CLUSTER_MODEL):
        want = imports.requested(obj, src.name, config)
        if want is not None:
            desired += imports.children(
                want,
                config,
                source_name=src.name,
                source_uid=src.uid,
                registry=src.registry,
                insecure=src.insecure,
                auth=bool(auth_b64),
                ca=bool(ca_pem),
            )

    # The probe patches its result onto its own Job: a token and a Role naming these Jobs.
    # Only the newest probe may still run; a finished one needs no patch rights.
    desired += worker_rbac(_ref(src, config), jobs[-1]["metadata"]["name"])
    return {
        "status": _status(src, obs, attempt, now, last_good),
        "children": desired + jobs,
        "resyncAfterSeconds": src.refresh,
    }


def customize(req: dict[str, Any], config: Config) -> dict[str, Any]:
    """The auth Secret and the (Cluster)Models: where to copy the credentials, and which
    catalog names to list first when the catalog is too long for one probe result. No Pods:
    the probe's result is on its Job (hooks/worker_result.py)."""
    src = parse_source(req.get("parent") or {})
    related: list[Obj] = [
        {"apiVersion": API_VERSION, "resource": "models", "labelSelector": {}},
        {"apiVersion": API_VERSION, "resource": "clustermodels", "labelSelector": {}},
    ]
    if src.auth_ref is not None:
        related.insert(
            0,
            {
                "apiVersion": "v1",
                "resource": "secrets",
                "namespace": src.auth_ref[0],
                "names": [src.auth_ref[1]],
            },
        )
    return {"relatedResources": related}
