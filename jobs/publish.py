"""``python -m jobs publish``: any source → DMCR, with a result JSON either way."""

from __future__ import annotations

import argparse
import os
import sys

from jobs.common import fail, finish, registry_client, registry_reason
from jobs.progress_annotation import reporter
from lib.api.types import Reason
from lib.oci import errors as oci_errors
from lib.oci.reference import Reference
from lib.progress import Progress
from lib.publish import PublishError, publish
from lib.sources.base import SourceError, SourceSnapshot


def open_source(source: str, *, auth_file: str | None, ca_file: str | None) -> SourceSnapshot:
    """Pick the adapter for ``--source`` and resolve it (no model bytes move yet)."""
    if source.startswith(("http://", "https://")) or "://" in source:
        from lib.sources.urls import parse_source_url

        parsed = parse_source_url(source)
        if parsed.kind == "huggingface":
            from lib.sources import huggingface

            token = huggingface.read_hf_token(auth_file) if auth_file else None
            return huggingface.HuggingFaceSource(
                parsed, token=token, endpoint=os.environ.get("HF_ENDPOINT")
            ).snapshot()
        from lib.sources import ollama

        return ollama.OllamaSource(
            parsed, registry=os.environ.get("OLLAMA_REGISTRY"), ca_file=ca_file
        ).snapshot()
    from lib.sources import local

    return local.snapshot(source)


def run(args: argparse.Namespace) -> int:
    rf = args.result_file
    try:
        dest = Reference.parse(args.destination)
    except ValueError as e:
        return fail(rf, Reason.PUBLICATION_FAILED, f"--destination: {e}")
    progress = Progress(on_percent=reporter())
    try:
        client = registry_client(
            dest.registry,
            auth_file=args.registry_auth_file,
            ca_file=args.registry_ca_file,
            insecure=args.insecure_registry,
        )
        print(f"publishing {args.source} to {dest.registry}/{dest.repository}", file=sys.stderr, flush=True)
        if args.source.startswith("oci://"):
            # A catalog import copies a ModelPack artifact as it is (same digest).
            from lib.catalog_import import import_artifact

            result = import_artifact(
                args.source[len("oci://") :], dest, client,
                auth_file=args.auth_file, ca_file=args.ca_file, progress=progress,
                insecure=args.insecure_source,
            )
        else:
            snapshot = open_source(args.source, auth_file=args.auth_file, ca_file=args.ca_file)
            result = publish(snapshot, dest, client, progress=progress, name=args.model_name)
        progress.emit()
        return finish(rf, dict(result))
    except SourceError as e:
        return fail(rf, e.reason, e.message)
    except PublishError as e:
        return fail(rf, e.reason, e.message)
    except oci_errors.RegistryError as e:
        return fail(rf, registry_reason(e, destination=True), f"registry {dest.registry}: {e}")
    except OSError as e:
        return fail(rf, Reason.PUBLICATION_FAILED, f"cannot read the source: {e}")
