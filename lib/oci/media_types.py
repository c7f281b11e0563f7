"""Media types the client sends in ``Accept`` and recognises in answers."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCTET_STREAM = "application/octet-stream"
OCI_EMPTY_JSON = "application/vnd.oci.empty.v1+json"

# What get_manifest accepts by default: single manifests and indexes, OCI and Docker.
MANIFEST_ACCEPT: tuple[str, ...] = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
