"""``python -m jobs catalog-probe``: read a catalog index and report its revision and models.

The result is ``{catalogRevision, models}`` (entries without ``digest``, which
their ``reference`` carries) or an error whose reason says what
the administrator must fix: ``CatalogAuthFailed`` (401/403, or an unreadable
auth file), ``CatalogTLSInvalid`` (untrusted CA, wrong host, expired
certificate), ``CatalogSourceNotReady`` (unreachable, timeouts, 5xx) or
``CatalogInvalid`` (no index at the tag, or not a catalog index). The result
is the container's termination message (≤ 4096 bytes): ``lib.result`` keeps
the first models that fit and sets ``modelsTruncated``; ``--want NAME``
(repeated) puts the models that Models are asking for first, so they are kept
(docs/catalog.md).
"""

from __future__ import annotations

import argparse
import sys

from jobs.common import fail, finish
from lib import catalog
from lib.api.types import Reason
from lib.catalog_import import catalog_reason, upstream_client
from lib.oci.errors import DigestMismatch, NotFound, RegistryError
from lib.oci.reference import InvalidReference, Reference
from lib.sources.base import SourceError


def probe(
    ref: Reference,
    *,
    auth_file: str | None,
    ca_file: str | None,
    insecure: bool,
    wanted: list[str] | None = None,
) -> dict:
    """``{catalogRevision, models}`` of the index at ``ref``; SourceError with a catalog reason.

    Models named in ``wanted`` come first, so they survive the result's trimming.
    """
    where = f"{ref.registry}/{ref.repository}:{ref.ref}"
    with upstream_client(ref.registry, auth_file=auth_file, ca_file=ca_file, insecure=insecure) as client:
        try:
            manifest = client.get_manifest(ref.repository, ref.ref)
            layer_digest, layer_size = catalog.parse_index_manifest(manifest.body)
            with client.open_blob(ref.repository, layer_digest) as chunks:
                data = bytearray()
                for chunk in chunks:
                    data += chunk
                    if len(data) > layer_size:
                        raise catalog.CatalogError(f"the catalog layer is larger than its {layer_size} bytes")
            models = catalog.parse_document(bytes(data))
        except catalog.CatalogError as e:
            raise SourceError(Reason.CATALOG_INVALID, f"{where}: {e}") from e
        except NotFound as e:
            raise SourceError(
                Reason.CATALOG_INVALID,
                f"no catalog index at {where} ({e}); publish one with catalog-export or fix "
                "spec.repository/spec.tag",
            ) from e
        except DigestMismatch as e:
            raise SourceError(Reason.CATALOG_INVALID, f"{where}: {e}") from e
        except RegistryError as e:
            raise SourceError(catalog_reason(e), f"catalog {where}: {e}") from e
    # ``digest`` is implied by ``reference`` (the hook restores it): more models fit in 4096 bytes.
    return {
        "catalogRevision": manifest.digest,
        "models": [{k: v for k, v in m.items() if k != "digest"} for m in _prioritised(models, wanted or [])],
    }


def _prioritised(models: list, wanted: list[str]) -> list:
    rank = {name: i for i, name in enumerate(dict.fromkeys(wanted))}
    return sorted(models, key=lambda m: (rank.get(m["name"], len(rank)), m["name"]))


def run(args: argparse.Namespace) -> int:
    rf = args.result_file
    try:
        ref = Reference.parse(args.catalog)
    except InvalidReference as e:
        return fail(rf, Reason.CATALOG_INVALID, f"--catalog: {e}")
    print(f"probing catalog {ref}", file=sys.stderr, flush=True)
    try:
        result = probe(
            ref,
            auth_file=args.auth_file,
            ca_file=args.ca_file,
            insecure=args.insecure_registry,
            wanted=list(getattr(args, "want", None) or []),
        )
    except SourceError as e:
        return fail(rf, e.reason, e.message)
    print(f"catalog {result['catalogRevision']}: {len(result['models'])} models", file=sys.stderr, flush=True)
    return finish(rf, result)
