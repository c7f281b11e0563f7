"""What the worker tells ``kubectl describe``: Event reasons and notes from its command and result.

Pure functions; ``jobs/own_job.py`` records them. Notes name sources,
artifacts and numbers, never credentials: URLs lose their user-info and query
before they are shown.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit, urlunsplit

Obj = dict[str, Any]


def safe_url(value: str) -> str:
    """``value`` without user-info, query or fragment (where a token could hide)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return "<unparsable source>"
    if not parts.scheme or not parts.netloc:
        return value.split("?")[0]
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def started(command: str, args: argparse.Namespace) -> tuple[str, str] | None:
    """(reason, note) when a worker command starts; None for commands without a story to tell."""
    if command == "publish":
        return "PublishStarted", f"publishing {safe_url(args.source)} to {args.destination}"
    if command == "upload-server":
        return "UploadWaiting", f"upload session open for {args.destination}; waiting for the upload"
    if command == "cleanup":
        return "CleanupStarted", f"deleting {args.artifact}"
    if command == "catalog-probe":
        return "CatalogProbeStarted", f"reading catalog {args.catalog}"
    return None


def stats(result: Obj, seconds: float) -> Obj:
    """The final numbers of a publish: bytes, duration, throughput (also on the Job's result)."""
    size = (result.get("artifact") or {}).get("sizeBytes")
    out: Obj = {"seconds": round(seconds, 3)}
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        out["bytes"] = size
        out["mibPerSecond"] = round(size / (1 << 20) / seconds, 2) if seconds > 0 else 0.0
    mounted = (result.get("mounted") or {}).get("bytes")
    if isinstance(mounted, int) and not isinstance(mounted, bool) and mounted > 0:
        out["mountedBytes"] = mounted  # taken from DMCR itself: neither fetched nor uploaded
    return out


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


def finished(command: str, result: Obj) -> tuple[str, str, bool]:
    """(reason, note, warning) for a finished command's result."""
    err = result.get("error")
    if isinstance(err, dict):
        return str(err.get("reason") or "Failed"), str(err.get("message") or ""), True
    if command == "cleanup":
        return "ArtifactDeleted", f"deleted {(result.get('artifact') or '')!s}", False
    if command == "catalog-probe":
        n = len(result.get("models") or [])
        return "CatalogProbed", f"{n} models at revision {result.get('catalogRevision')}", False
    art = result.get("artifact") or {}
    note = f"published {art.get('uri')}"
    st = result.get("stats") or {}
    if "bytes" in st:
        note += f": {_size(st['bytes'])} in {st['seconds']:.1f} s ({st['mibPerSecond']:.1f} MiB/s)"
    if st.get("mountedBytes"):
        note += f", {_size(st['mountedBytes'])} mounted from DMCR"
    reason = "Imported" if str(result.get("source", {}).get("resolvedType")) == "Catalog" else "Published"
    return reason, note, False
