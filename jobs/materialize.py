"""``python -m jobs materialize``: pull one ModelPack artifact's files into a directory.

Runs as the init container the workload webhook injects. The engine (verified,
resumable, skip when already present) is ``lib.pull``; this module only parses
the arguments, builds the registry client and turns failures into one
actionable line on stderr with exit status 1 (the injected container uses
``FallbackToLogsOnError``, so that line becomes the pod's termination message).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jobs.own_job import pod_event_recorder
from lib.oci.client import RegistryClient
from lib.oci.errors import RegistryError
from lib.oci.reference import InvalidReference, Reference
from lib.pull import MaterializeError, Summary, materialize


def _stderr(msg: str) -> None:
    print(f"materialize: {msg}", file=sys.stderr, flush=True)


def _artifact(value: str) -> Reference | None:
    """The ``--artifact`` reference, pinned by digest; None (reported) otherwise."""
    try:
        ref = Reference.parse(value)
    except InvalidReference as e:
        _stderr(f"--artifact {value!r} is not REGISTRY/REPOSITORY@DIGEST: {e}")
        return None
    if not ref.digest:
        _stderr(f"--artifact {value!r} must be pinned by digest (…@sha256:…)")
        return None
    return ref


def _report(s: Summary, into: str, seconds: float) -> None:
    if s.skipped:
        _stderr(f"{into} already holds {s.digest}; nothing to do")
        return
    _stderr(
        f"{s.files} files of {s.digest} in {into}: {s.downloaded_bytes} bytes fetched, "
        f"{s.reused_bytes} reused, {seconds:.1f}s"
    )


def run(args: argparse.Namespace) -> int:
    """Materialize, and tell ``kubectl describe pod`` how it went (when the pod may record Events)."""
    record = pod_event_recorder()
    code, note = _run(args)
    if record is not None:
        reason = "ModelMaterialized" if code == 0 else "MaterializeFailed"
        record(reason, note, warning=code != 0)
    return code


def _run(args: argparse.Namespace) -> tuple[int, str]:
    ref = _artifact(args.artifact)
    if ref is None or ref.digest is None:
        return 1, f"--artifact {args.artifact!r} is not REGISTRY/REPOSITORY@sha256:DIGEST"
    try:
        client = RegistryClient.from_docker_config(
            ref.registry,
            getattr(args, "auth_file", None),
            ca_file=getattr(args, "ca_file", None),
            insecure=bool(getattr(args, "insecure_registry", False)),
        )
        started = time.monotonic()
        with client:
            summary = materialize(client, ref.repository, ref.digest, Path(args.into))
    except MaterializeError as e:
        _stderr(str(e))
        return 1, f"{args.artifact}: {e}"
    except RegistryError as e:
        _stderr(f"{args.artifact}: {e}")
        return 1, f"{args.artifact}: {e}"
    except OSError as e:
        message = f"cannot write into {args.into}: {e} (is the volume large enough and writable?)"
        _stderr(message)
        return 1, message
    seconds = time.monotonic() - started
    _report(summary, args.into, seconds)
    return 0, _note(summary, args.into, seconds)


def _note(s: Summary, into: str, seconds: float) -> str:
    if s.skipped:
        return f"{into} already holds {s.digest}"
    mib = s.downloaded_bytes / (1 << 20)
    return (f"{s.files} files of {s.digest} in {into}: {mib:.1f} MiB fetched from DMCR, "
            f"{s.reused_bytes / (1 << 20):.1f} MiB reused, {seconds:.1f} s")
