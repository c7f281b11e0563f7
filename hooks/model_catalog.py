"""The catalog seam of the Model hooks: what to import for ``spec.source.catalog``.

``plan(parent, related, config)`` is pure. It either refuses (``error``: a
reason, a human message and the phase to show) or names the exact upstream
artifact to copy into DMCR: ``source_url`` ``oci://REGISTRY/REPOSITORY@DIGEST``,
the Secret holding the upstream Docker config (it must live in the child
namespace: a pod can only mount Secrets of its own namespace), an optional PEM
CA bundle, and the ``frozen`` selection that goes to ``status.source.catalog``
so that retries keep importing the same revision and digest.

This module is a placeholder that always answers ``CatalogSourceNotReady``;
the catalog issue fills it in from the related ``ModelCatalogSource`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lib.api.types import Phase, Reason
from lib.config import Config


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
    auth_secret_name: str = ""  # a kubernetes.io/dockerconfigjson Secret ...
    auth_secret_namespace: str = ""  # ... in the child namespace
    ca_bundle: str = ""  # PEM
    frozen: CatalogFrozen | None = None
    error: PlanError | None = None


def plan(parent: dict[str, Any], related: dict[str, Any], config: Config) -> CatalogPlan:
    """Decide the catalog import for ``parent`` (placeholder: never ready yet)."""
    catalog = ((parent.get("spec") or {}).get("source") or {}).get("catalog") or {}
    name = catalog.get("name", "")
    source = catalog.get("sourceName") or "(the only Ready ModelCatalogSource)"
    return CatalogPlan(
        error=PlanError(
            Reason.CATALOG_SOURCE_NOT_READY,
            f"catalog import of {name!r} from {source} is not available yet: "
            "no Ready ModelCatalogSource lists it",
        )
    )
