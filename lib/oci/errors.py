"""Typed registry errors, each with a message that says what to do.

``error_from_response`` maps an HTTP answer (status + the registry's errcode
JSON body) to the right subclass; transport failures are mapped by the
transport (``TLSError``, ``Unreachable``). The classes carry no CRD reason:
what a failure means for a Model is decided at the command-line edge
(``jobs.common.registry_reason``), where the caller knows which registry —
the source or the destination — failed.
"""

from __future__ import annotations

import json
from typing import Any

_NO_SPACE_MARKERS = ("no space left on device", "disk quota exceeded", "insufficient storage")


class RegistryError(Exception):
    """Any failure talking to a registry; ``status`` is the HTTP status when there was an answer."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


class AuthError(RegistryError):
    """401/403: missing or wrong credentials, or a token without the needed scope."""


class NotFound(RegistryError):
    """404, ``MANIFEST_UNKNOWN``, ``BLOB_UNKNOWN``, ``NAME_UNKNOWN``."""


class DigestMismatch(RegistryError):
    """The bytes hash (or count) to something other than promised; nothing was committed."""


class InsufficientStorage(RegistryError):
    """The registry is out of space (507, 413, or a 5xx saying so)."""


class TLSError(RegistryError):
    """The registry's certificate could not be verified."""


class Unreachable(RegistryError):
    """Connection refused, DNS failure or timeouts, after retries: worth retrying later."""


class UploadInterrupted(RegistryError):
    """An upload session was lost and the bytes needed to resume are gone: retry the publish."""


def parse_error_body(body: bytes | str | None) -> list[dict[str, Any]]:
    """The ``errors`` list of a registry errcode body (``[]`` when absent or not JSON)."""
    if not body:
        return []
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    errs = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errs, list):
        return []
    return [e for e in errs if isinstance(e, dict)]


def describe_errors(errors: list[dict[str, Any]]) -> str:
    """``CODE: message (detail)`` for each errcode entry, joined by '; '."""
    parts = []
    for e in errors:
        s = str(e.get("code", "UNKNOWN"))
        if e.get("message"):
            s += f": {e['message']}"
        detail = e.get("detail")
        if detail not in (None, "", {}, []):
            d = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
            s += f" ({d[:300]})"
        parts.append(s)
    return "; ".join(parts)


def _text(body: bytes | str | None) -> str:
    if body is None:
        return ""
    if isinstance(body, bytes):
        return body[:4096].decode("utf-8", "replace")
    return body[:4096]


def is_out_of_space(status: int, body: bytes | str | None) -> bool:
    if status in (507, 413):
        return True
    return status >= 500 and any(m in _text(body).lower() for m in _NO_SPACE_MARKERS)


def error_from_response(status: int, body: bytes | str | None, *, what: str, registry: str) -> RegistryError:
    """Map a failed registry answer to a typed error naming ``what`` was attempted."""
    errors = parse_error_body(body)
    codes = {str(e.get("code", "")) for e in errors}
    detail = describe_errors(errors) or _text(body).strip()[:300] or "no details in the answer"
    where = f"{what} at {registry}: HTTP {status}: {detail}"
    if is_out_of_space(status, body):
        return InsufficientStorage(
            f"registry out of space during {where}; "
            "free space in the registry storage (or grow it) and retry",
            status,
        )
    if status in (401, 403) or codes & {"UNAUTHORIZED", "DENIED"}:
        return AuthError(
            f"access denied for {where}; check the registry credentials (auth file) and their scope",
            status,
        )
    if status == 404 or codes & {"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN", "BLOB_UPLOAD_UNKNOWN"}:
        return NotFound(f"not found: {where}; check the repository, tag or digest", status)
    if codes & {"DIGEST_INVALID", "SIZE_INVALID"}:
        return DigestMismatch(f"registry rejected the content of {where}", status)
    if status >= 500:  # a server-side failure: worth retrying the publish later
        return RegistryError(f"registry failed during {where}; retry later", status)
    return RegistryError(where, status)
