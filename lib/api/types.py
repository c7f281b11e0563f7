"""Phases, reasons and the typed shapes that cross process boundaries.

Reasons and phases are ``str`` enums so that they serialise as plain strings
in status and in the worker's result JSON, and so that a typo is a NameError
instead of a silently wrong condition.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypedDict

GROUP = "ai.deckhouse.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Labels and annotations owned by the module.
LABEL_MODEL_UID = "ai.deckhouse.io/model-uid"
ANNOTATION_PROGRESS = "ai.deckhouse.io/progress"
# The worker's result JSON, patched onto its own Job before it exits (jobs/own_job.py).
ANNOTATION_RESULT = "ai.deckhouse.io/result"
ANNOTATION_MODEL = "ai.deckhouse.io/model"
ANNOTATION_CLUSTERMODEL = "ai.deckhouse.io/clustermodel"
SCHEDULING_GATE = "ai.deckhouse.io/model-delivery"

MODELS_DIR = "/data/modelcache/models"


class Phase(StrEnum):
    PENDING = "Pending"
    WAIT_FOR_UPLOAD = "WaitForUpload"
    PUBLISHING = "Publishing"
    READY = "Ready"
    FAILED = "Failed"
    DELETING = "Deleting"


class ConditionType(StrEnum):
    ARTIFACT_RESOLVED = "ArtifactResolved"
    METADATA_RESOLVED = "MetadataResolved"
    READY = "Ready"


class Reason(StrEnum):
    """Every reason the module writes into conditions or result JSON."""

    PENDING = "Pending"
    WAITING_FOR_USER_UPLOAD = "WaitingForUserUpload"
    PUBLISHING = "Publishing"
    ARTIFACT_PUBLISHED = "ArtifactPublished"
    PUBLICATION_FAILED = "PublicationFailed"
    UNSUPPORTED_SOURCE = "UnsupportedSource"
    INSUFFICIENT_STORAGE = "InsufficientStorage"
    MODEL_METADATA_CALCULATED = "ModelMetadataCalculated"
    MODEL_METADATA_PARTIAL = "ModelMetadataPartial"
    AUTH_SECRET_MISSING = "AuthSecretMissing"
    AUTH_SECRET_INVALID = "AuthSecretInvalid"
    UPLOAD_EXPIRED = "UploadExpired"
    UPLOAD_REJECTED = "UploadRejected"
    SOURCE_UNAVAILABLE = "SourceUnavailable"
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"
    WORKER_FAILED = "WorkerFailed"
    CLEANUP_FAILED = "CleanupFailed"
    DELETING = "Deleting"
    # catalog
    CATALOG_AUTH_FAILED = "CatalogAuthFailed"
    CATALOG_TLS_INVALID = "CatalogTLSInvalid"
    CATALOG_SOURCE_NOT_READY = "CatalogSourceNotReady"
    CATALOG_INVALID = "CatalogInvalid"
    CATALOG_SOURCE_AMBIGUOUS = "CatalogSourceAmbiguous"
    CATALOG_MODEL_NOT_FOUND = "CatalogModelNotFound"
    MANIFEST_INVALID = "ManifestInvalid"
    CATALOG_PROBED = "CatalogProbed"
    CATALOG_LIST_TRUNCATED = "CatalogListTruncated"


# Reasons after which a new attempt may succeed without the user changing the
# Model: the hook retries them with backoff. Everything else is permanent.
TRANSIENT_REASONS = frozenset(
    {
        Reason.SOURCE_UNAVAILABLE,
        Reason.REGISTRY_UNAVAILABLE,
        Reason.INSUFFICIENT_STORAGE,
        Reason.WORKER_FAILED,
        Reason.CATALOG_AUTH_FAILED,
        Reason.CATALOG_TLS_INVALID,
        Reason.CATALOG_SOURCE_NOT_READY,
    }
)


class ArtifactInfo(TypedDict, total=False):
    uri: str
    digest: str
    mediaType: str
    sizeBytes: int


class ResolvedInfo(TypedDict, total=False):
    format: str
    family: str
    architecture: str
    parameterCount: int
    quantization: str
    contextWindowTokens: int
    supportedEndpointTypes: list[str]
    supportedFeatures: list[str]


class SourceInfo(TypedDict, total=False):
    resolvedType: str  # HuggingFace | Ollama | Upload | Catalog | Local
    resolvedRevision: str
    remoteDigest: str


class ErrorInfo(TypedDict):
    reason: str
    message: str


class WorkerResult(TypedDict, total=False):
    """The worker's one JSON result (DESIGN.md); must fit 4096 bytes."""

    artifact: ArtifactInfo
    resolved: ResolvedInfo
    source: SourceInfo
    error: ErrorInfo
    # catalog-probe only
    catalogRevision: str
    models: list[dict[str, Any]]


class Condition(TypedDict):
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int
