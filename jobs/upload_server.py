"""``python -m jobs upload-server``: receive one model upload and publish it while it arrives.

One process serves one upload session (docs/upload.md). The session, its
HTTP framing and the byte pipe are ``lib.upload``; this module reads the
arguments (token file, destination, expiry, limits), wires the session to
the publish pipeline and the registry, and turns the end of the session into
the result file and exit code: the published result (0), or
``UploadExpired`` once ``--expires-at`` has passed with no request feeding an
upload (a request in flight at that moment is allowed to finish).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from datetime import UTC, datetime

from jobs import own_job
from jobs.capacity import from_args as capacity_from_args
from jobs.common import fail, finish, registry_client, registry_reason
from jobs.own_job import reporter
from lib.api.types import Reason, WorkerResult
from lib.capacity import Capacity
from lib.oci import errors as oci_errors
from lib.oci.client import RegistryClient
from lib.oci.reference import Reference
from lib.publish import publish
from lib.sources.base import SourceSnapshot
from lib.upload.server import UPLOAD_PATH, make_server, serve
from lib.upload.session import Publisher, Session, SessionConfig


class Usage(Exception):
    """A bad argument: the reason and the message for the result file."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_expiry(value: str) -> datetime | None:
    """An RFC 3339 time (``Z`` or an offset; naive means UTC), or None for ``""``."""
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def _token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise Usage(Reason.WORKER_FAILED, f"--token-file: {e}") from None
    if not token:
        raise Usage(Reason.WORKER_FAILED, f"--token-file {path} is empty")
    return token


def _config(args: argparse.Namespace) -> SessionConfig:
    """The session's settings from the arguments; ``Usage`` on a bad one."""
    token = _token(args.token_file)
    try:
        os.makedirs(args.scratch_dir, mode=0o700, exist_ok=True)  # the zip spool, and the free-space check
    except OSError as e:
        raise Usage(Reason.WORKER_FAILED, f"--scratch-dir: {e}") from None
    try:
        expires_at = parse_expiry(args.expires_at or "")
    except ValueError:
        message = f"--expires-at {args.expires_at!r} is not an RFC 3339 time"
        raise Usage(Reason.WORKER_FAILED, message) from None
    return SessionConfig(
        token=token,
        scratch_dir=args.scratch_dir,
        max_spool_bytes=args.max_spool_bytes,
        max_upload_bytes=args.max_upload_bytes,
        expires_at=expires_at,
        capacity=capacity_from_args(args),
    )


def _publisher(args: argparse.Namespace, dest: Reference, capacity: Capacity | None) -> Publisher:
    try:
        client: RegistryClient = registry_client(
            dest.registry,
            auth_file=args.registry_auth_file,
            ca_file=args.registry_ca_file,
            insecure=args.insecure_registry,
        )
    except (OSError, ValueError, oci_errors.RegistryError) as e:
        raise Usage(Reason.PUBLICATION_FAILED, f"destination registry credentials: {e}") from None

    def publisher(snapshot: SourceSnapshot) -> WorkerResult:
        # Progress counts the request bytes (compressed, for archives) in the session.
        # The Model's name names the model when the upload does not (a GGUF's general.name).
        job = own_job.current()
        if job is not None:  # kubectl describe: the upload is arriving (each attempt of a session)
            job.event("UploadReceiving", f"an upload arrived; publishing it to {dest}")
        return publish(snapshot, dest, client, name=getattr(args, "model_name", "") or "",
                       commit_check=commit_check)

    # The namespace quota once more at the commit point: a streamed upload's size is known only
    # then, and a concurrent publish may have finished meanwhile.
    commit_check = capacity.admit_quota if capacity is not None else None
    return publisher


def run(args: argparse.Namespace) -> int:
    return run_session(args)


def run_session(args: argparse.Namespace, *, stop: threading.Event | None = None) -> int:
    """``run`` with a ``stop`` event that ends the session early (``lib.upload.server.serve``)."""
    rf = args.result_file
    try:
        dest = Reference.parse(args.destination)
    except ValueError as e:
        return fail(rf, Reason.PUBLICATION_FAILED, f"--destination: {e}")
    try:
        config = _config(args)
        session = Session(
            config,
            _publisher(args, dest, config.capacity),
            on_percent=reporter(),
            registry_reason=lambda e: registry_reason(e, destination=True),
        )
    except Usage as e:
        return fail(rf, e.reason, e.message)
    try:
        server = make_server(args.listen, session)
    except (OSError, ValueError) as e:
        return fail(rf, Reason.WORKER_FAILED, f"--listen {args.listen}: {e}")
    host, port = server.server_address[:2]
    print(
        f"upload-server: listening on {host!s}:{port}{UPLOAD_PATH} for {dest.registry}/{dest.repository}"
        + (f", session expires at {config.expires_at.isoformat()}" if config.expires_at else ""),
        file=sys.stderr,
        flush=True,
    )
    result = serve(session, server, stop=stop)
    if result is None:
        when = config.expires_at.isoformat() if config.expires_at else "?"
        return fail(
            rf,
            Reason.UPLOAD_EXPIRED,
            f"the upload session expired at {when} before a model was uploaded; a new session with a "
            "new token is offered in the Model's status.upload",
        )
    return finish(rf, dict(result))
