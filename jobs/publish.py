"""``python -m jobs publish``: any source → DMCR, with a result JSON either way.

The source registry (``lib.sources.registry``) picks the adapter for
``--source``; what it opens is either files for the publish pipeline or an
existing artifact to copy (a catalog import). With ``--registry-capacity-bytes``
either is refused (``InsufficientStorage``) before any byte moves when its
known size does not fit DMCR (``lib.capacity``).
"""

from __future__ import annotations

import argparse
import os
import sys

from jobs.capacity import from_args as capacity_from_args
from jobs.common import fail, finish, registry_client, registry_reason
from jobs.own_job import reporter
from lib.api.types import Reason
from lib.oci import errors as oci_errors
from lib.oci.reference import Reference
from lib.progress import Progress
from lib.publish import PublishError, publish
from lib.sources import registry as sources
from lib.sources.adapter import ArtifactCopy, SourceOptions
from lib.sources.base import SourceError


def run(args: argparse.Namespace) -> int:
    rf = args.result_file
    try:
        dest = Reference.parse(args.destination)
    except ValueError as e:
        return fail(rf, Reason.PUBLICATION_FAILED, f"--destination: {e}")
    progress = Progress(on_percent=reporter())
    capacity = capacity_from_args(args)
    admit = capacity.admit if capacity is not None else None
    # The quota once more at the commit point: a concurrent publish may have finished meanwhile.
    commit_check = capacity.admit_quota if capacity is not None else None
    try:
        client = registry_client(
            dest.registry,
            auth_file=args.registry_auth_file,
            ca_file=args.registry_ca_file,
            insecure=args.insecure_registry,
        )
        with client:  # its pooled connections to DMCR are closed on every way out
            where = f"{dest.registry}/{dest.repository}"
            print(f"publishing {args.source} to {where}", file=sys.stderr, flush=True)
            options = SourceOptions(
                auth_file=args.auth_file, ca_file=args.ca_file, insecure=args.insecure_source, env=os.environ
            )
            opened = sources.open_source(args.source, options)
            if isinstance(opened, ArtifactCopy):
                # A catalog import copies a ModelPack artifact as it is (same digest).
                from lib.catalog_import import import_artifact

                result = import_artifact(
                    opened.reference, dest, client,
                    auth_file=options.auth_file, ca_file=options.ca_file, progress=progress,
                    insecure=options.insecure, admit=admit,
                )
            else:
                try:
                    result = publish(
                        opened, dest, client, progress=progress, name=args.model_name, admit=admit,
                        mount_from=getattr(args, "mount_from", None) or (), commit_check=commit_check,
                    )
                finally:
                    opened.close()  # the source's connections too, on every way out
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
