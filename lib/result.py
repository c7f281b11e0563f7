"""The worker's result channel: one compact JSON document, ≤ 4096 bytes.

It is written to the container's termination-message file, which the Model's
sync hook reads from the related Pod. Messages are trimmed so the document
always fits: a truncated message is better than a lost result.
"""

from __future__ import annotations

import json
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
