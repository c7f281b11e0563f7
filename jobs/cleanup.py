"""``python -m jobs cleanup``: delete a published artifact from DMCR.

Deletes the manifest by digest and every tag in that repository that points
to it, after unlinking the manifest's blobs from the repository (the blob
data stays: other repositories may share it). ``python -m jobs gc`` then
reclaims the data no manifest references and no young link holds, and the
emptied repository, at its next run (docs/dmcr.md). Idempotent: a manifest
(or repository) that is already gone is success, so a retried or repeated
cleanup Job converges.

Result JSON: ``{"artifact": {"uri", "digest"},
"cleanup": {"deleted", "alreadyAbsent", "tags", "blobsUnlinked"}}``
or ``{"error": {"reason", "message"}, "registryError": {"type", "status"}}``.
Exit codes as in ``jobs.common``: 0 done, 1 retry (registry unavailable),
2 permanent (bad reference, refused credential, TLS).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from jobs.common import fail, finish, registry_client
from lib.api.types import Reason
from lib.oci import errors as oci_errors
from lib.oci.client import Manifest, RegistryClient
from lib.oci.reference import Reference


def _reason(e: oci_errors.RegistryError) -> Reason:
    if isinstance(e, oci_errors.Unreachable) or (getattr(e, "status", 0) or 0) >= 500:
        return Reason.REGISTRY_UNAVAILABLE
    return Reason.CLEANUP_FAILED


def _tagged(client: RegistryClient, repository: str) -> dict[str, Manifest]:
    """Every tag of ``repository`` with its manifest (an unknown repository has none)."""
    try:
        tags = client.list_tags(repository)
    except oci_errors.NotFound:
        return {}
    found = {}
    for tag in sorted(tags or []):
        try:
            found[tag] = client.get_manifest(repository, tag)
        except oci_errors.NotFound:  # deleted meanwhile
            continue
    return found


def _tags_pointing_to(client: RegistryClient, repository: str, digest: str) -> list[str]:
    return [t for t, m in _tagged(client, repository).items() if m.digest == digest]


def _blob_refs(body: bytes) -> set[str]:
    try:
        doc = json.loads(body)
    except ValueError:
        return set()
    if not isinstance(doc, dict):
        return set()
    descriptors = [doc.get("config"), *(doc.get("layers") or []), *(doc.get("blobs") or [])]
    return {d["digest"] for d in descriptors if isinstance(d, dict) and isinstance(d.get("digest"), str)}


def _unlink_blobs(client: RegistryClient, repository: str, digest: str, kept: list[Manifest]) -> int:
    """Unlink the blobs of manifest ``digest`` from ``repository``, but not those a manifest
    that stays (``kept``: still tagged) uses; how many were linked. Done before the manifest
    goes, so a retried Job still knows them; the data stays for GC to judge."""
    try:
        blobs = _blob_refs(client.get_manifest(repository, digest).body)
    except oci_errors.NotFound:
        return 0
    for m in kept:
        blobs -= _blob_refs(m.body)
    return sum(client.delete_blob(repository, b) for b in sorted(blobs))


def delete_artifact(client: RegistryClient, repository: str, digest: str) -> dict[str, Any]:
    """Unlink its blobs, delete the manifest and its tags;
    ``{"deleted", "alreadyAbsent", "tags", "blobsUnlinked"}``.

    Distribution removes the tags of a manifest deleted by digest itself (and
    cannot delete by tag); a tag still resolving to the digest afterwards means
    a registry that does not, and is reported instead of claiming success.
    """
    tagged = _tagged(client, repository)
    tags = [t for t, m in tagged.items() if m.digest == digest]
    unlinked = _unlink_blobs(client, repository, digest, [m for m in tagged.values() if m.digest != digest])
    try:
        client.delete_manifest(repository, digest)
        deleted = True
    except oci_errors.NotFound:
        deleted = False
    left = _tags_pointing_to(client, repository, digest)
    if left:
        raise oci_errors.RegistryError(
            f"tags {', '.join(left)} of {repository} still point to {digest} after deleting it; "
            "delete them with the registry's own tools",
        )
    return {"deleted": deleted, "alreadyAbsent": not deleted, "tags": tags, "blobsUnlinked": unlinked}


def run(args: argparse.Namespace) -> int:
    rf = args.result_file
    try:
        ref = Reference.parse(args.artifact)
    except ValueError as e:
        return fail(rf, Reason.CLEANUP_FAILED, f"--artifact: {e}")
    if not ref.digest:
        return fail(
            rf, Reason.CLEANUP_FAILED, f"--artifact {args.artifact} must name a digest (REPO@sha256:...)"
        )
    artifact = {"uri": f"{ref.registry}/{ref.repository}@{ref.digest}", "digest": ref.digest}
    try:
        client = registry_client(
            ref.registry, auth_file=args.auth_file, ca_file=args.ca_file, insecure=args.insecure_registry
        )
        with client:
            print(f"deleting {artifact['uri']}", file=sys.stderr, flush=True)
            outcome = delete_artifact(client, ref.repository, ref.digest)
    except oci_errors.RegistryError as e:
        kind = type(e).__name__
        return fail(
            rf,
            _reason(e),
            f"{kind}: registry {ref.registry}: {e}",
            artifact=artifact,
            registryError={"type": kind, "status": getattr(e, "status", None)},
        )
    except OSError as e:  # unreadable --auth-file / --ca-file
        return fail(rf, Reason.CLEANUP_FAILED, f"cannot read credentials: {e}", artifact=artifact)
    return finish(rf, {"artifact": artifact, "cleanup": outcome})
