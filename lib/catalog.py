"""The catalog index: one OCI manifest that lists the models of a catalog registry.

Pinned format (docs/catalog.md): an OCI image manifest with ``artifactType``
``application/vnd.ai-models.catalog.v1+json``, the empty config
(``application/vnd.oci.empty.v1+json``, ``{}``) and exactly one layer of the
catalog media type holding ``{"models": [{name, reference, digest, format,
family, sizeBytes}]}``. ``reference`` is ``<repository>@<digest>`` in the
catalog's own registry, so a catalog can be mirrored to another host without
rewriting it. The catalog revision is the digest of the index manifest.

Builders are pure and canonical (sorted keys, models sorted by name), so the
same model list always gives the same revision. Parsers refuse anything else
with ``CatalogError`` (→ ``CatalogInvalid``): a probe must never report a
half-understood catalog as Ready.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, NotRequired, TypedDict

from lib.oci.descriptor import sha256_digest
from lib.oci.media_types import OCI_EMPTY_JSON, OCI_MANIFEST
from lib.oci.reference import InvalidReference, is_digest, validate_repository

MEDIA_TYPE = "application/vnd.ai-models.catalog.v1+json"
EMPTY_CONFIG = b"{}"
MAX_DOCUMENT = 16 << 20  # a catalog of ~50k models; larger is refused, not streamed into memory
MAX_NAME = 253
# Names users type in spec.source.catalog.name: no whitespace, '/', '=' or '@'.
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._:-]*[A-Za-z0-9])?$")


class CatalogError(ValueError):
    """The bytes are not a catalog index (or a catalog entry is malformed)."""


class CatalogEntry(TypedDict):
    name: str
    reference: str  # repository@sha256:...
    digest: str
    format: NotRequired[str]
    family: NotRequired[str]
    sizeBytes: NotRequired[int]


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def split_reference(reference: str) -> tuple[str, str]:
    """``repository@digest`` → ``(repository, digest)``; CatalogError when malformed."""
    repo, sep, digest = reference.partition("@")
    try:
        validate_repository(repo)
    except InvalidReference as e:
        raise CatalogError(f"reference {reference!r}: {e}") from None
    if not sep or not is_digest(digest) or not digest.startswith("sha256:"):
        raise CatalogError(f"reference {reference!r} must be <repository>@sha256:<64 hex digits>")
    return repo, digest


def validate_entry(raw: Any, index: int = 0) -> CatalogEntry:
    """One catalog entry, normalised (empty optional fields dropped)."""
    if not isinstance(raw, Mapping):
        raise CatalogError(f"models[{index}] is not an object")
    name = raw.get("name")
    if not isinstance(name, str) or len(name) > MAX_NAME or not NAME_RE.match(name):
        raise CatalogError(
            f"models[{index}].name {name!r} is invalid: use letters, digits and . _ : - (at most {MAX_NAME})"
        )
    ref = raw.get("reference")
    if not isinstance(ref, str):
        raise CatalogError(f"models[{index}] ({name}) has no reference")
    _, ref_digest = split_reference(ref)
    digest = raw.get("digest", ref_digest)
    if digest != ref_digest:
        raise CatalogError(f"models[{index}] ({name}): digest {digest!r} differs from the reference's")
    entry = CatalogEntry(name=name, reference=ref, digest=ref_digest)
    for key in ("format", "family"):
        value = raw.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value) > 256:
            raise CatalogError(f"models[{index}] ({name}).{key} must be a short string")
        entry[key] = value  # type: ignore[literal-required]
    size = raw.get("sizeBytes")
    if size is not None:
        if type(size) is not int or size < 0:
            raise CatalogError(f"models[{index}] ({name}).sizeBytes must be a non-negative integer")
        entry["sizeBytes"] = size
    return entry


def build_document(entries: Iterable[Mapping[str, Any]]) -> bytes:
    """The catalog layer: validated entries sorted by name; duplicate names are refused."""
    models = [validate_entry(e, i) for i, e in enumerate(entries)]
    names = [m["name"] for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CatalogError(f"model names must be unique; repeated: {', '.join(dupes)}")
    return _canonical({"models": sorted(models, key=lambda m: m["name"])})


def parse_document(data: bytes) -> list[CatalogEntry]:
    """The entries of a catalog layer (same checks as ``build_document``)."""
    if len(data) > MAX_DOCUMENT:
        raise CatalogError(f"catalog document is larger than {MAX_DOCUMENT} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CatalogError(f"catalog document is not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise CatalogError('catalog document must be {"models": [...]}')
    models = [validate_entry(e, i) for i, e in enumerate(doc["models"])]
    names = [m["name"] for m in models]
    if len(set(names)) != len(names):
        raise CatalogError("catalog document lists a model name twice")
    return sorted(models, key=lambda m: m["name"])


def empty_config_descriptor() -> dict[str, Any]:
    return {"mediaType": OCI_EMPTY_JSON, "digest": sha256_digest(EMPTY_CONFIG), "size": len(EMPTY_CONFIG)}


def build_index_manifest(document_digest: str, document_size: int) -> bytes:
    """The index manifest for a catalog layer already pushed as ``document_digest``."""
    return _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": MEDIA_TYPE,
            "config": empty_config_descriptor(),
            "layers": [{"mediaType": MEDIA_TYPE, "digest": document_digest, "size": document_size}],
        }
    )


def parse_index_manifest(body: bytes) -> tuple[str, int]:
    """``(digest, size)`` of the catalog layer of an index manifest; CatalogError otherwise."""
    try:
        m = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CatalogError("the catalog tag does not hold a JSON manifest") from None
    if not isinstance(m, dict):
        raise CatalogError("the catalog manifest is not a JSON object")
    if m.get("mediaType", OCI_MANIFEST) != OCI_MANIFEST or m.get("schemaVersion") != 2:
        raise CatalogError(
            f"the catalog tag holds a {m.get('mediaType') or 'non-OCI'} manifest, not an OCI image manifest"
        )
    raw_config = m.get("config")
    config = raw_config if isinstance(raw_config, dict) else {}
    if m.get("artifactType") != MEDIA_TYPE and config.get("mediaType") != MEDIA_TYPE:
        raise CatalogError(
            f"the manifest's artifactType is {m.get('artifactType')!r}, not {MEDIA_TYPE!r}: "
            "this is not a catalog index (publish one with `python -m jobs catalog-export`)"
        )
    layers = [x for x in m.get("layers") or [] if isinstance(x, dict) and x.get("mediaType") == MEDIA_TYPE]
    if len(layers) != 1:
        raise CatalogError(f"a catalog index needs exactly one {MEDIA_TYPE} layer, found {len(layers)}")
    digest, size = layers[0].get("digest"), layers[0].get("size")
    if not isinstance(digest, str) or not is_digest(digest) or type(size) is not int or size < 0:
        raise CatalogError("the catalog layer descriptor has no valid digest/size")
    if size > MAX_DOCUMENT:
        raise CatalogError(f"the catalog layer is {size} bytes; at most {MAX_DOCUMENT} are accepted")
    return digest, size


def find(models: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    for m in models:
        if isinstance(m, Mapping) and m.get("name") == name:
            return m
    return None
