"""The worker's result channel: one compact JSON document, ≤ 4096 bytes.

It is written to the container's termination-message file, which the Model's
sync hook reads from the related Pod. Messages are trimmed so the document
always fits: a truncated message is better than a lost result.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lib.api.types import WorkerResult

LIMIT = 4096


def encode(result: WorkerResult | dict[str, Any]) -> bytes:
    """Serialise compactly; shorten the error message, then drop lists, to fit."""
    doc: dict[str, Any] = json.loads(json.dumps(result))
    data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    if len(data) <= LIMIT:
        return data
    err = doc.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        over = len(data) - LIMIT
        msg = err["message"]
        err["message"] = msg[: max(0, len(msg) - over - 3)] + "..."
        data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        if len(data) <= LIMIT:
            return data
    # Catalog listings can be long: keep the first models that fit.
    models = doc.get("models")
    while isinstance(models, list) and models and len(data) > LIMIT:
        models.pop()
        doc["modelsTruncated"] = True
        data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return data[:LIMIT]


def write(path: str, result: WorkerResult | dict[str, Any]) -> None:
    """Write the result file; a missing directory (local runs) is not fatal."""
    data = encode(result)
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError:
        pass


def error(reason: str, message: str, **extra: Any) -> dict[str, Any]:
    return {**extra, "error": {"reason": str(reason), "message": message}}


# -- trusting a result -----------------------------------------------------------
#
# A result is read from objects in the Model's namespace, where the tenant can
# create Pods and Jobs with any labels, ownerReferences and termination
# messages. So a result is data to check, never a fact: its artifact must name
# exactly the repository the hook derives for the object (lib.api.naming) and a
# well-formed digest. docs/security.md lists what else is checked.

SHA256_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
INT64_MAX = 2**63 - 1  # the CRDs' integers are int64: a larger size is not one a worker measured
MANIFEST_MEDIA_TYPES = frozenset({"application/vnd.oci.image.manifest.v1+json"})


def artifact_problem(artifact: Any, destination: str) -> str | None:
    """Why ``artifact`` is not a publish of ``destination`` (``REGISTRY/REPOSITORY``); None if it is."""
    if not isinstance(artifact, dict):
        return "artifact is not an object"
    digest = artifact.get("digest")
    if not isinstance(digest, str) or not SHA256_DIGEST.match(digest):
        return "artifact.digest is not sha256:<64 hex>"
    uri = artifact.get("uri")
    # The messages never echo the values: a refused result is named, never copied.
    if uri != f"{destination}@{digest}":
        return f"artifact.uri is not {destination}@<its digest>"
    media_type = artifact.get("mediaType")
    if media_type is not None and media_type not in MANIFEST_MEDIA_TYPES:
        return "artifact.mediaType is not an OCI image manifest"
    size = artifact.get("sizeBytes")
    sane = isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= INT64_MAX
    if size is not None and not sane:
        return "artifact.sizeBytes is not a non-negative int64"
    return None
