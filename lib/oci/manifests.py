"""Manifests, tags and the catalog: small JSON documents, read whole and checked by digest.

A manifest is read up to ``MAX_MANIFEST`` bytes (distribution's own limit),
hashed, and refused when the registry's ``Docker-Content-Digest`` or the
requested digest says otherwise. ``parse_image_manifest`` turns a single-image
manifest (OCI or Docker v2) into descriptors for callers that read images
made by others (the Ollama library).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from lib.oci import media_types as mt
from lib.oci import urls
from lib.oci.challenge import Scope, repository_scope
from lib.oci.descriptor import Descriptor, Manifest, sha256_digest
from lib.oci.errors import DigestMismatch, RegistryError
from lib.oci.exchange import Exchange

MAX_MANIFEST = 4 << 20  # distribution's own limit for manifests
IMAGE_MANIFESTS = (mt.DOCKER_MANIFEST, mt.OCI_MANIFEST)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def get_manifest(ex: Exchange, repo: str, ref: str, accept: Iterable[str]) -> Manifest:
    """GET a manifest by tag or digest; its digest checked against the answer and the request."""
    what = f"manifest {repo}:{ref}"
    resp = ex.call(
        "GET", urls.manifest_url(ex.transport.base, repo, ref), (repository_scope(repo, "pull"),),
        what=f"GET {what}", ok=(200,), headers={"Accept": ", ".join(accept)}, stream=True,
    )
    try:
        body = resp.raw.read(MAX_MANIFEST + 1, decode_content=True)
    finally:
        resp.close()
    if len(body) > MAX_MANIFEST:
        raise RegistryError(f"{what} is larger than {MAX_MANIFEST} bytes; refusing it")
    digest = sha256_digest(body)
    header = resp.headers.get("Docker-Content-Digest")
    if header and header.startswith("sha256:") and header != digest:
        raise DigestMismatch(f"{what} hashes to {digest}, which differs from the announced {header}")
    if ref.startswith("sha256:") and ref != digest:
        raise DigestMismatch(f"manifest {repo}@{ref} hashes to {digest}; the registry's copy is wrong")
    return Manifest(body=body, media_type=_media_type(resp.headers.get("Content-Type"), body), digest=digest)


def _media_type(content_type: str | None, body: bytes) -> str:
    """The Content-Type, or the body's ``mediaType`` when the registry sent a generic one."""
    media_type = (content_type or "").split(";")[0].strip()
    if media_type and media_type not in ("application/json", "text/plain"):
        return media_type
    try:
        return str(json.loads(body).get("mediaType") or media_type)
    except (ValueError, AttributeError):
        return media_type


def put_manifest(ex: Exchange, repo: str, ref: str, body: bytes, media_type: str) -> str:
    """PUT a manifest under a tag or its digest; returns the digest of ``body``."""
    digest = sha256_digest(body)
    if ref.startswith("sha256:") and ref != digest:
        raise DigestMismatch(f"manifest body hashes to {digest}, not {ref}")
    resp = ex.call(
        "PUT", urls.manifest_url(ex.transport.base, repo, ref), (repository_scope(repo, "pull", "push"),),
        what=f"PUT manifest {repo}:{ref}", ok=(201, 200, 202), data=body,
        headers={"Content-Type": media_type},
    )
    header = resp.headers.get("Docker-Content-Digest")
    if header and header.startswith("sha256:") and header != digest:
        raise DigestMismatch(f"registry stored manifest {repo}:{ref} as {header}, expected {digest}")
    return digest


def delete(ex: Exchange, url: str, repo: str, *, what: str, missing_ok: bool = False) -> bool:
    """DELETE a manifest or a blob link; False when it was not there (with ``missing_ok``)."""
    ok = (202, 200, 204, 404) if missing_ok else (202, 200, 204)
    resp = ex.call("DELETE", url, (repository_scope(repo, "delete"),), what=what, ok=ok)
    return resp.status_code != 404


def list_pages(ex: Exchange, url: str | None, scopes: tuple[Scope, ...], key: str, *, what: str,
               max_pages: int) -> list[str]:
    """Every string of ``key`` over a ``Link``-paginated listing (tags, catalog)."""
    out: list[str] = []
    pages = 0
    while url and pages < max_pages:
        resp = ex.call("GET", url, scopes, what=what, ok=(200,))
        out += [v for v in resp.json().get(key) or [] if isinstance(v, str)]
        url = urls.next_page(url, resp.headers.get("Link"))
        pages += 1
    return out


def parse_descriptor(raw: Any, what: str) -> Descriptor:
    """A sha256 descriptor from a manifest; ValueError naming ``what`` is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"{what} is not an object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ValueError(f"{what} has no mediaType")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValueError(f"{what} has an invalid digest {digest!r:.80} (expected sha256:<64 hex>)")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{what} has an invalid size {size!r:.40}")
    return Descriptor(media_type, digest, size)


def parse_image_manifest(body: bytes, media_type: str = "") -> tuple[Descriptor, list[Descriptor]]:
    """The config and layer descriptors of a single-image manifest; ValueError otherwise."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise ValueError(f"manifest is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError("manifest is not a JSON object")
    kind = doc.get("mediaType") or media_type.split(";")[0].strip()
    if doc.get("schemaVersion") != 2:
        raise ValueError(f"unsupported schemaVersion {doc.get('schemaVersion')!r}")
    if kind and kind not in IMAGE_MANIFESTS:
        raise ValueError(f"unsupported manifest media type {kind!r} (an index or a list?)")
    config = parse_descriptor(doc.get("config"), "config descriptor")
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ValueError("manifest has no layers")
    return config, [parse_descriptor(raw, f"layer {i}") for i, raw in enumerate(layers)]
