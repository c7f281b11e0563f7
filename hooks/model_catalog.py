"""The catalog seam of the Model hooks: what to import for ``spec.source.catalog``.

``plan(parent, related, config)`` is pure. It either refuses (``error``: a
reason, a human message and the phase to show) or names the exact upstream
artifact to copy into DMCR: ``source_url`` ``oci://REGISTRY/REPOSITORY@DIGEST`` and
the ``frozen`` selection that goes to ``status.source.catalog``. The import
itself, with the catalog's credential and CA, is run by the ModelCatalogSource
controller in the module namespace (``hooks/catalog_imports.py``): the
credential is never copied where a tenant could read it.

Selection rules (docs/catalog.md): a frozen selection in the parent's status
always wins (same source, revision and digest forever, even when the catalog
moves on); otherwise ``sourceName`` picks the source, or the only Ready one
(none Ready → ``CatalogSourceNotReady``; several → ``CatalogSourceAmbiguous``,
never a guess); a name the catalog does not list → ``CatalogModelNotFound``.
A source that is not Ready blocks a new import with its own reason when that
is ``CatalogAuthFailed`` / ``CatalogTLSInvalid`` (Failed, recoverable), else
``CatalogSourceNotReady`` (Pending); the Model retries by itself once the
source is Ready again (a change of a related source triggers a sync). An
import already in flight (phase Publishing) goes on: a probe flake must not
kill a long copy, and the Job reports the upstream's real errors itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hooks import catalogsource as cs
from hooks.model_status import CATALOG_SOURCE, at, objects
from lib import catalog
from lib.api import conditions as cond
from lib.api.types import ConditionType, Phase, Reason
from lib.config import Config

Obj = dict[str, Any]


@dataclass(frozen=True)
class CatalogFrozen:
    """``status.source.catalog``: the selection a retry must repeat."""

    sourceName: str
    catalogRevision: str
    remoteDigest: str
    reference: str

    def as_status(self) -> dict[str, str]:
        return {
            "sourceName": self.sourceName,
            "catalogRevision": self.catalogRevision,
            "remoteDigest": self.remoteDigest,
            "reference": self.reference,
        }


@dataclass(frozen=True)
class PlanError:
    reason: str
    message: str
    phase: str = Phase.PENDING


@dataclass(frozen=True)
class CatalogPlan:
    source_url: str = ""  # oci://REGISTRY/REPOSITORY@DIGEST
    frozen: CatalogFrozen | None = None
    error: PlanError | None = None


def _phase_and_reason(source: Obj) -> tuple[str, str, str]:
    """(phase, Ready-condition reason, message) of a ModelCatalogSource."""
    status = source.get("status") or {}
    c = cond.find(status.get("conditions"), ConditionType.READY) or {}
    return str(status.get("phase") or Phase.PENDING), str(c.get("reason") or ""), str(c.get("message") or "")


def _not_ready(name: str, source: Obj | None) -> PlanError:
    if source is None:
        return PlanError(
            Reason.CATALOG_SOURCE_NOT_READY,
            f"ModelCatalogSource {name!r} does not exist; create it or fix spec.source.catalog.sourceName",
        )
    phase, reason, message = _phase_and_reason(source)
    if reason in cs.PASS_THROUGH:
        return PlanError(reason, f"ModelCatalogSource {name!r}: {message}", Phase.FAILED)
    detail = f" ({reason}: {message})" if phase == Phase.FAILED and message else ""
    return PlanError(
        Reason.CATALOG_SOURCE_NOT_READY,
        f"ModelCatalogSource {name!r} is {phase}, not Ready{detail}; recoverable: the import starts "
        "when it is Ready",
        Phase.FAILED,
    )


def _is_ready(source: Obj) -> bool:
    return (source.get("status") or {}).get("phase") == Phase.READY


def _child_namespace(parent: Obj, config: Config) -> str:
    if parent.get("kind") == "ClusterModel":
        return config.namespace
    return str((parent.get("metadata") or {}).get("namespace") or "")


def _frozen(parent: Obj) -> CatalogFrozen | None:
    f = at(parent, "status", "source", "catalog")
    keys = ("sourceName", "catalogRevision", "remoteDigest", "reference")
    if all(isinstance(f.get(k), str) and f.get(k) for k in keys):
        return CatalogFrozen(**{k: f[k] for k in keys})
    return None


def plan(parent: dict[str, Any], related: dict[str, Any], config: Config) -> CatalogPlan:
    """Decide the catalog import for ``parent`` from the related ModelCatalogSources."""
    spec_cat = at(parent, "spec", "source", "catalog")
    name = spec_cat.get("name")
    if not isinstance(name, str) or not name:
        return CatalogPlan(
            error=PlanError(Reason.CATALOG_MODEL_NOT_FOUND, "spec.source.catalog.name is empty", Phase.FAILED)
        )
    wanted = spec_cat.get("sourceName") if isinstance(spec_cat.get("sourceName"), str) else ""
    sources = {
        str((s.get("metadata") or {}).get("name")): s
        for s in objects(related, CATALOG_SOURCE)
        if (s.get("metadata") or {}).get("name")
    }

    frozen = _frozen(parent)
    if frozen is not None:
        # Never move: the same source, revision and digest, whatever the catalog lists now.
        source = sources.get(frozen.sourceName)
        importing = (parent.get("status") or {}).get("phase") == Phase.PUBLISHING
        # A probe failure does not stop an import in flight: its Job reports the upstream's own errors.
        if source is not None and not _is_ready(source) and importing:
            return _import(parent, related, config, source, frozen)
        if source is None or not _is_ready(source):
            err = _not_ready(frozen.sourceName, source)
            return CatalogPlan(
                frozen=frozen,
                error=PlanError(
                    err.reason,
                    f"{err.message}; the import of {frozen.reference} (catalog revision "
                    f"{frozen.catalogRevision}) resumes when it is Ready",
                    err.phase,
                ),
            )
        return _import(parent, related, config, source, frozen)

    if wanted:
        source = sources.get(wanted)
        if source is None or not _is_ready(source):
            return CatalogPlan(error=_not_ready(wanted, source))
    else:
        ready = sorted(n for n, s in sources.items() if _is_ready(s))
        if not ready:
            if len(sources) == 1:
                # The only source: the Model shows its own reason (auth, TLS) as the user guide does.
                [(only, source)] = sources.items()
                err = _not_ready(only, source)
                message = f"{err.message}; {name!r} is imported then"
                return CatalogPlan(error=PlanError(err.reason, message, err.phase))
            others = ", ".join(f"{n} ({_phase_and_reason(s)[0]})" for n, s in sorted(sources.items()))
            return CatalogPlan(
                error=PlanError(
                    Reason.CATALOG_SOURCE_NOT_READY,
                    "no ModelCatalogSource is Ready"
                    + (f" ({others})" if others else " (none exists)")
                    + f"; recoverable: {name!r} is imported once one is",
                    Phase.FAILED,
                )
            )
        if len(ready) > 1:
            return CatalogPlan(
                error=PlanError(
                    Reason.CATALOG_SOURCE_AMBIGUOUS,
                    f"several ModelCatalogSources are Ready ({', '.join(ready)}); "
                    "set spec.source.catalog.sourceName to choose one",
                    Phase.FAILED,
                )
            )
        wanted, source = ready[0], sources[ready[0]]

    status = source.get("status") or {}
    entry = catalog.find(status.get("models") or [], name)
    if entry is None:
        hint = ""
        if _phase_and_reason(source)[1] == cs.REASON_TRUNCATED:
            hint = " (its status lists only part of the catalog: the probe result was truncated)"
        return CatalogPlan(
            error=PlanError(
                Reason.CATALOG_MODEL_NOT_FOUND,
                f"catalog {wanted!r} (revision {status.get('catalogRevision') or 'unknown'}) "
                f"does not list a model named {name!r}{hint}",
                Phase.FAILED,
            )
        )
    try:
        _, digest = catalog.split_reference(str(entry.get("reference") or ""))
    except catalog.CatalogError as e:
        return CatalogPlan(error=PlanError(Reason.CATALOG_INVALID, f"catalog {wanted!r}: {e}", Phase.FAILED))
    frozen = CatalogFrozen(
        sourceName=wanted,
        catalogRevision=str(status.get("catalogRevision") or ""),
        remoteDigest=digest,
        reference=str(entry["reference"]),
    )
    return _import(parent, related, config, source, frozen)


def _import(parent: Obj, related: Obj, config: Config, source: Obj, frozen: CatalogFrozen) -> CatalogPlan:
    spec = source.get("spec") or {}
    registry = str(spec.get("registry") or "")
    try:
        catalog.split_reference(frozen.reference)
        cs.decode_ca(spec.get("caBundle"))
    except (catalog.CatalogError, ValueError) as e:
        return CatalogPlan(frozen=frozen, error=PlanError(Reason.CATALOG_INVALID, str(e), Phase.FAILED))
    if frozen.reference.rpartition("@")[2] != frozen.remoteDigest or not registry:
        return CatalogPlan(
            frozen=frozen,
            error=PlanError(Reason.CATALOG_INVALID, f"frozen reference {frozen.reference!r} is inconsistent"),
        )
    return CatalogPlan(source_url=f"oci://{registry}/{frozen.reference}", frozen=frozen)
