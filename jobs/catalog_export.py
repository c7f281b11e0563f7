"""``python -m jobs catalog-export``: publish a catalog index listing existing model artifacts.

Each ``--model NAME=REGISTRY/REPOSITORY@DIGEST`` must live in the destination's
registry (a catalog's references are registry-relative) and must be a
ModelPack manifest that exists there; its format, family and size are read
from the artifact itself. The catalog layer and the empty config are pushed
first, the index manifest last (under the destination's tag), so a reader
never sees a tag pointing at missing blobs. The result is
``{catalogRevision, models}``, like a probe's.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.common import fail, finish, registry_client, registry_reason
from lib import catalog, modelpack
from lib.api.types import Reason
from lib.oci.client import RegistryClient
from lib.oci.errors import NotFound, RegistryError
from lib.oci.media_types import OCI_EMPTY_JSON, OCI_MANIFEST
from lib.oci.reference import InvalidReference, Reference


class ExportError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def parse_models(values: list[str], registry: str) -> list[tuple[str, Reference]]:
    out: list[tuple[str, Reference]] = []
    for v in values:
        name, sep, text = v.partition("=")
        if not sep or not name:
            raise ExportError(
                Reason.PUBLICATION_FAILED, f"--model {v!r}: expected NAME=REGISTRY/REPOSITORY@DIGEST"
            )
        try:
            ref = Reference.parse(text)
        except InvalidReference as e:
            raise ExportError(Reason.PUBLICATION_FAILED, f"--model {name}: {e}") from None
        if not ref.digest:
            raise ExportError(Reason.PUBLICATION_FAILED, f"--model {name}: {text} must be pinned to a digest")
        if ref.registry != registry:
            raise ExportError(
                Reason.PUBLICATION_FAILED,
                f"--model {name}: {ref.registry} is not the catalog's registry {registry}; "
                "a catalog lists artifacts of its own registry (copy the artifact there first)",
            )
        out.append((name, ref))
    return out


def describe(client: RegistryClient, name: str, ref: Reference) -> dict:
    """The catalog entry of one artifact, read from its manifest and config."""
    try:
        manifest = client.get_manifest(ref.repository, str(ref.digest))
    except NotFound as e:
        raise ExportError(Reason.PUBLICATION_FAILED, f"--model {name}: {ref} does not exist ({e})") from e
    if not modelpack.is_model_manifest(manifest.body):
        raise ExportError(Reason.MANIFEST_INVALID, f"--model {name}: {ref} is not a ModelPack model artifact")
    try:
        modelpack.parse_manifest(manifest.body)
        doc = json.loads(manifest.body)
        config = doc["config"]
        cfg_digest, cfg_size = str(config["digest"]), int(config["size"])
    except (modelpack.ManifestError, ValueError, KeyError, TypeError) as e:
        raise ExportError(Reason.MANIFEST_INVALID, f"--model {name}: {ref}: {e}") from e
    with client.open_blob(ref.repository, cfg_digest) as chunks:
        cfg = b"".join(chunks)
    resolved = modelpack.resolved_from_config(cfg)
    entry: dict = {
        "name": name,
        "reference": f"{ref.repository}@{ref.digest}",
        "digest": ref.digest,
        "sizeBytes": cfg_size + sum(int(layer["size"]) for layer in doc["layers"]),
    }
    for key in ("format", "family"):
        if resolved.get(key):
            entry[key] = resolved[key]  # type: ignore[literal-required]
    return entry


def export(client: RegistryClient, dest: Reference, models: list[tuple[str, Reference]]) -> dict:
    entries = [describe(client, name, ref) for name, ref in models]
    try:
        document = catalog.build_document(entries)
    except catalog.CatalogError as e:
        raise ExportError(Reason.PUBLICATION_FAILED, str(e)) from e
    repo = dest.repository
    layer = client.push_bytes(repo, document, catalog.MEDIA_TYPE)
    client.push_bytes(repo, catalog.EMPTY_CONFIG, OCI_EMPTY_JSON)
    body = catalog.build_index_manifest(layer.digest, layer.size)
    revision = client.put_manifest(repo, dest.tag or "latest", body, OCI_MANIFEST)
    return {"catalogRevision": revision, "models": catalog.parse_document(document)}


def run(args: argparse.Namespace) -> int:
    rf = args.result_file
    try:
        dest = Reference.parse(args.destination)
    except InvalidReference as e:
        return fail(rf, Reason.PUBLICATION_FAILED, f"--destination: {e}")
    if dest.digest:
        return fail(rf, Reason.PUBLICATION_FAILED, "--destination must name a tag, not a digest")
    try:
        models = parse_models(args.model or [], dest.registry)
        client = registry_client(
            dest.registry, auth_file=args.auth_file, ca_file=args.ca_file, insecure=args.insecure_registry
        )
        with client:
            result = export(client, dest, models)
    except ExportError as e:
        return fail(rf, e.reason, e.message)
    except RegistryError as e:
        return fail(rf, registry_reason(e, destination=True), f"registry {dest.registry}: {e}")
    print(f"catalog {dest} is {result['catalogRevision']}", file=sys.stderr, flush=True)
    return finish(rf, result)
