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
from hooks import worker_jobs as wj
from hooks.catalog_imports import LABEL_SOURCE_UID, auth_secret_name, ca_secret_name
from hooks.catalogsource_parent import DEFAULT_REFRESH, Source, decode_ca, parse_source, probe_job_name
from hooks.errors import HookInputError
from hooks.model_status import JOB, SECRET, at, by_name, clip, objects, request_time, valid_reason
from hooks.worker_jobs import (
    RESULT_FILE,
    SOURCE_CA_DIR,
    SOURCE_DOCKERCONFIG_FILE,
    Budget,
    JobSpec,
    job_result,
    job_state,
    label,
    worker_job,
    worker_rbac,
)
from lib import catalog
from lib.api import conditions as cond
from lib.api import worker_cli as cli
from lib.api.naming import short_hash
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
PROBE = Budget(("50m", "500m"), ("64Mi", "256Mi"), ("64Mi", "256Mi"), 600, 0, tmp_size="64Mi")
REASON_PROBED = "CatalogProbed"
REASON_TRUNCATED = "CatalogListTruncated"
# Probe error reasons a Model shows as they are (Failed, recoverable); others mean "not ready".
PASS_THROUGH = frozenset({Reason.CATALOG_AUTH_FAILED, Reason.CATALOG_TLS_INVALID})


__all__ = ["DEFAULT_REFRESH", "Source", "customize", "decode_ca", "parse_source", "probe_job", "sync"]


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
    volumes, mounts = wj.source_mounts(
        (auth_secret_name(src.name), [(DOCKERCONFIG_KEY, DOCKERCONFIG_KEY)]) if auth else None,
        ca_secret_name(src.name) if ca else "",
    )
    return worker_job(
        src.owner(config.namespace),
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


# -- reading probe results ---------------------------------------------------------


@dataclass(frozen=True)
class ProbeOutcome:
    finished: bool = False
    result: Obj | None = None  # {catalogRevision, models[, modelsTruncated]}
    error: tuple[str, str] | None = None
    finished_at: str = ""


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
        reason = valid_reason(err.get("reason"), Reason.CATALOG_SOURCE_NOT_READY)
        return ProbeOutcome(True, error=(reason, clip(str(err.get("message") or ""))), finished_at=at)
    if state.failed or unreadable:
        md = (job or {}).get("metadata") or {}
        why = wj.failed_without_result(
            "probe", unreadable or state.why, str(md.get("name") or ""), str(md.get("namespace") or "")
        )
        return ProbeOutcome(True, error=(Reason.WORKER_FAILED, clip(why)), finished_at=at)
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
    status = at(model, "status")
    if status.get("phase") == Phase.READY or at(model, "metadata").get("deletionTimestamp"):
        return False
    cat = at(model, "spec", "source", "catalog")
    if not cat:
        return False
    frozen = at(status, "source", "catalog").get("sourceName")
    chosen = frozen if isinstance(frozen, str) and frozen else cat.get("sourceName")
    return chosen == src.name if isinstance(chosen, str) and chosen else ready


def _wanted(related: Obj, src: Source, ready: bool) -> tuple[str, ...]:
    """Catalog names that Models and ClusterModels selecting this source still wait for."""
    names = set()
    for m in objects(related, MODEL) + objects(related, CLUSTER_MODEL):
        if _selects(m, src, ready):
            name = at(m, "spec", "source", "catalog").get("name")
            if isinstance(name, str) and catalog.NAME_RE.match(name):
                names.add(name)
    return tuple(sorted(names))


# -- sync: parse → decide (pure) → render -------------------------------------------


@dataclass(frozen=True)
class Parsed:
    """What one sync call reads from its request: the source, its credentials, its probe Jobs."""

    src: Source
    children: Obj
    related: Obj
    now: str
    prev: Observed | None  # the outcome the status already shows (Ready or Failed)
    auth_b64: str
    ca_pem: str
    credentials_error: Observed | None  # the auth Secret or the CA cannot be used
    attempt: int  # the newest probe counter proven by status or an observed Job


@dataclass(frozen=True)
class Plan:
    """What to do: the outcome to show, the probe counter, the probe Jobs to emit.

    ``keep``: observed probe Jobs, emitted again as they were created, before ``start``:
    ``(attempt, delay)`` of a new probe Job, so the last Job is the newest probe (the one the
    worker RBAC names). Unusable credentials: status only, no children (``emit_children``).
    """

    observed: Observed
    attempt: int
    inputs: str = ""  # hash of this call's probe inputs (spec, credentials, CA, wanted names)
    wanted: tuple[str, ...] = ()
    keep: tuple[Obj, ...] = ()
    start: tuple[int, int] | None = None
    emit_children: bool = True


def parse(req: dict[str, Any]) -> Parsed:
    src = parse_source(req.get("parent") or {})
    children, related = req.get("children") or {}, req.get("related") or {}
    now = request_time(req)
    prev = _previous(src)
    auth_b64, auth_error = _auth_data(src, related)
    try:
        ca_pem = decode_ca(src.spec.get("caBundle"))
        ca_error = None
    except ValueError as e:
        ca_pem, ca_error = "", str(e)

    # Adopt the newest probe counter proven by status or an observed Job.
    attempt = src.status.get("probeAttempt")
    attempt = attempt if isinstance(attempt, int) and attempt >= 1 else 1
    # Probes go on forever in the module namespace (only the module writes there): no limit.
    (attempt,) = wj.adopt(
        objects(children, JOB), {LABEL_SOURCE_UID: src.uid}, (attempt,), (LABEL_PROBE,), limit=None
    )
    failed = None
    if auth_error or ca_error:
        reason = Reason.CATALOG_AUTH_FAILED if auth_error else Reason.CATALOG_TLS_INVALID
        failed = Observed(Phase.FAILED, reason, str(auth_error or ca_error))
    return Parsed(src, children, related, now, prev, auth_b64, ca_pem, failed, attempt)


def _probe_inputs(p: Parsed) -> tuple[str, tuple[str, ...]]:
    """(hash of a probe's inputs, the catalog names it lists first)."""
    # A truncated listing may miss models that Models ask for: the next probe lists those first.
    wanted: tuple[str, ...] = ()
    if p.prev is not None and p.prev.reason == REASON_TRUNCATED:
        wanted = _wanted(p.related, p.src, p.prev.phase == Phase.READY)
    parts = [
        p.src.catalog_ref,
        p.src.insecure,
        short_hash(p.auth_b64, length=16),
        short_hash(p.ca_pem, length=16),
        wanted,
    ]
    return short_hash(json.dumps(parts), length=16), wanted


def decide(p: Parsed, namespace: str) -> Plan:
    """The probe ladder: which outcome to show and which probe Jobs to keep or start. Pure."""
    if p.credentials_error is not None:
        return Plan(p.credentials_error, p.attempt, emit_children=False)
    src, attempt = p.src, p.attempt
    inputs, wanted = _probe_inputs(p)
    current = by_name(p.children, JOB, namespace, probe_job_name(src.name, attempt))
    previous_job = (
        by_name(p.children, JOB, namespace, probe_job_name(src.name, attempt - 1)) if attempt > 1 else None
    )
    out, prev_out = probe_outcome(current), probe_outcome(previous_job)

    keep: tuple[Obj, ...] = ()
    start: tuple[int, int] | None = None
    obs: Observed | None = None
    if current is None:
        # First probe, or the one created by the previous call: start it (no delay for the first).
        if previous_job is not None and prev_out.finished:
            obs = _from_outcome(prev_out, src)
            keep = (previous_job,)
            delay = src.refresh if label(previous_job, LABEL_PROBE_INPUTS) == inputs else 0
        else:
            delay = 0  # nothing to wait after (first probe, or the Job was deleted: probe now)
        start = (attempt, delay)
    elif out.finished:
        obs = _from_outcome(out, src)
        same_inputs = label(current, LABEL_PROBE_INPUTS) == inputs
        attempt += 1
        keep, start = (current,), (attempt, src.refresh if same_inputs else 0)
    elif label(current, LABEL_PROBE_INPUTS) != inputs:
        # The spec, the credentials or the CA changed: probe again now, with the new inputs.
        attempt += 1
        start = (attempt, 0)
        if previous_job is not None and prev_out.finished:
            obs = _from_outcome(prev_out, src)
    elif previous_job is not None and prev_out.finished:
        # Still running: show the finished previous probe again (recovers a lost status write).
        obs = _from_outcome(prev_out, src)
        keep = (previous_job, current)
    else:
        keep = (current,)

    if obs is None:
        obs = p.prev or Observed(
            Phase.PENDING, Reason.PENDING, f"waiting for the first probe of {src.catalog_ref}"
        )
    return Plan(obs, attempt, inputs, wanted, keep, start)


def _probe_jobs(p: Parsed, plan: Plan, config: Config) -> list[Obj]:
    """The probe Jobs of ``plan``: the kept ones as they were created, then the new one."""

    def same(observed: Obj) -> Obj:
        """An observed probe Job as it was created (its delay and inputs are its own)."""
        delay = label(observed, LABEL_PROBE_DELAY)
        counter = label(observed, LABEL_PROBE)
        if not counter.isdigit():
            name = observed["metadata"].get("name")
            raise HookInputError(f"probe Job {name}: label {LABEL_PROBE} is not a number")
        inputs = label(observed, LABEL_PROBE_INPUTS) or plan.inputs
        return job(int(counter), int(delay) if delay.isdigit() else 0, inputs)

    def job(n: int, delay: int, inputs: str) -> Obj:
        return probe_job(
            p.src,
            config,
            attempt=n,
            delay=delay,
            inputs=inputs,
            auth=bool(p.auth_b64),
            ca=bool(p.ca_pem),
            wanted=plan.wanted,
        )

    jobs = [same(j) for j in plan.keep]
    if plan.start is not None:
        jobs.append(job(*plan.start, plan.inputs))
    return jobs


def render(p: Parsed, plan: Plan, config: Config) -> dict[str, Any]:
    src, ns = p.src, config.namespace
    last_good = p.prev if p.prev is not None and p.prev.revision else None
    status = _status(src, plan.observed, plan.attempt, p.now, last_good)
    if not plan.emit_children:
        return {"status": status, "children": [], "resyncAfterSeconds": src.refresh}

    jobs = _probe_jobs(p, plan, config)
    desired: list[Obj] = []
    if p.auth_b64:
        desired.append(auth_copy(src, ns, p.auth_b64))
    if p.ca_pem:
        desired.append(ca_copy(src, ns, p.ca_pem))
    # The imports that Models and ClusterModels ask this source for, run here (module namespace).
    for obj in objects(p.related, MODEL) + objects(p.related, CLUSTER_MODEL):
        want = imports.requested(obj, src.name, config)
        if want is not None:
            desired += imports.children(
                want,
                config,
                source_name=src.name,
                source_uid=src.uid,
                registry=src.registry,
                insecure=src.insecure,
                auth=bool(p.auth_b64),
                ca=bool(p.ca_pem),
            )
    # The probe patches its result onto its own Job: a token and a Role naming these Jobs.
    # Only the newest probe may still run; a finished one needs no patch rights.
    desired += worker_rbac(src.owner(ns), jobs[-1]["metadata"]["name"])
    return {"status": status, "children": desired + jobs, "resyncAfterSeconds": src.refresh}


def sync(req: dict[str, Any], config: Config) -> dict[str, Any]:
    parsed = parse(req)
    return render(parsed, decide(parsed, config.namespace), config)


def customize(req: dict[str, Any], config: Config) -> dict[str, Any]:
    """The auth Secret and the (Cluster)Models: where to copy the credentials, and which
    catalog names to list first when the catalog is too long for one probe result. No Pods:
    the probe's result is on its Job (hooks/worker_jobs.py)."""
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
