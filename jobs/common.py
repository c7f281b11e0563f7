"""What every worker command shares: registry clients, result writing, exit codes.

Exit codes: 0 success; 1 a failure worth retrying (reason in
``TRANSIENT_REASONS``: the Job's pod backoff retries it); 2 a permanent
failure (the Job's podFailurePolicy stops at once).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from jobs import events, own_job
from lib import result as results
from lib.api.types import TRANSIENT_REASONS, Reason
from lib.oci import errors as oci_errors
from lib.oci.client import RegistryClient

EXIT_OK, EXIT_TRANSIENT, EXIT_PERMANENT = 0, 1, 2


def registry_client(
    registry: str, *, auth_file: str | None, ca_file: str | None, insecure: bool
) -> RegistryClient:
    if auth_file:
        return RegistryClient.from_docker_config(registry, auth_file, ca_file=ca_file, insecure=insecure)
    return RegistryClient(registry, ca_file=ca_file, insecure=insecure)


def registry_reason(e: oci_errors.RegistryError, *, destination: bool) -> str:
    """Reason for a registry error; the destination (DMCR) has its own wording."""
    if isinstance(e, oci_errors.InsufficientStorage):
        return Reason.INSUFFICIENT_STORAGE
    if isinstance(e, oci_errors.DigestMismatch):
        return Reason.PUBLICATION_FAILED
    if isinstance(e, (oci_errors.Unreachable, oci_errors.UploadInterrupted)) or (e.status or 0) >= 500:
        return Reason.REGISTRY_UNAVAILABLE if destination else Reason.SOURCE_UNAVAILABLE
    if isinstance(e, oci_errors.AuthError) and destination:
        return Reason.REGISTRY_UNAVAILABLE
    return Reason.PUBLICATION_FAILED


def finish(result_file: str, result: dict[str, Any]) -> int:
    """Report the result (on the worker's own Job, as an Event, in the result file); the exit code."""
    job = own_job.current()
    if job is not None:
        if isinstance(result.get("artifact"), dict) and not result.get("error"):
            result = {**result, "stats": events.stats(result, job.elapsed())}
        # The Event first: the result makes the object Ready, and `kubectl describe` read right
        # after must already tell how it got there.
        reason, note, warning = events.finished(job.command, result)
        job.event(reason, note, warning=warning)
        job.report_result(results.encode(result))
    results.write(result_file, result)
    print(json.dumps(result, sort_keys=True), flush=True)
    err = result.get("error")
    if not err:
        return EXIT_OK
    print(f"error: {err['reason']}: {err['message']}", file=sys.stderr, flush=True)
    return EXIT_TRANSIENT if err["reason"] in {r.value for r in TRANSIENT_REASONS} else EXIT_PERMANENT


def fail(result_file: str, reason: str, message: str, **extra: Any) -> int:
    code = reason.value if isinstance(reason, Reason) else str(reason)
    return finish(result_file, results.error(code, message, **extra))
