"""RegistryClient: the OCI distribution API over ``requests``, built for large blobs.

Why not oras-py: its single-PUT upload reads the whole blob into memory
(2.1 GB RSS for a 2 GiB file) and it hashes every file in a separate pass
before uploading, so each byte is read twice. Here a blob is streamed once
through a ``BlobWriter`` (lib/oci/blobs.py), hashed and counted on its way to
the socket, with memory bounded by a window (docs/oci-client.md).

The client is a facade over small parts, each with one job:

- ``transport.Transport`` — one HTTP request, TLS and redirects, typed transport errors;
- ``exchange.Exchange`` — credentials around that single send (401 → token → again),
  and bounded retries (``lib.retry``) with typed errors for every other answer;
- ``blobs`` — ``BlobWriter`` (write / commit / cancel), ``Mounted``, blob reads;
- ``manifests`` — manifests, tags, the catalog.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from lib.oci import blobs, manifests, urls
from lib.oci import media_types as mt
from lib.oci.auth import Authenticator, Credentials, load_docker_config
from lib.oci.blobs import READ_CHUNK, BlobWriter, Mounted
from lib.oci.challenge import Scope, repository_scope
from lib.oci.descriptor import Descriptor, Manifest, sha256_digest
from lib.oci.errors import (
    AuthError,
    DigestMismatch,
    InsufficientStorage,
    NotFound,
    RegistryError,
    TLSError,
    Unreachable,
    UploadInterrupted,
)
from lib.oci.exchange import Exchange
from lib.oci.manifests import MAX_MANIFEST
from lib.oci.reference import validate_digest, validate_repository
from lib.oci.transport import CONNECT_TIMEOUT, READ_TIMEOUT, Transport
from lib.retry import RetryPolicy

__all__ = [
    "MAX_MANIFEST",
    "READ_CHUNK",
    "AuthError",
    "BlobWriter",
    "Descriptor",
    "DigestMismatch",
    "InsufficientStorage",
    "Manifest",
    "Mounted",
    "NotFound",
    "RegistryClient",
    "RegistryError",
    "RetryPolicy",
    "TLSError",
    "Unreachable",
    "UploadInterrupted",
]

# Bytes per PATCH. Large, because distribution finishes each PATCH (flush, hash state) before it
# answers, a stall per request; the PATCH body streams, so its size costs no memory.
SEGMENT_SIZE = 1 << 30
# Unacknowledged bytes kept for a resume (and read ahead when the size is unknown): the memory bound.
WINDOW = 64 << 20


class RegistryClient:
    """One registry (``host[:port]``), optionally authenticated; thread-compatible, not thread-safe."""

    def __init__(
        self,
        registry: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | Path | None = None,
        insecure: bool = False,
        retry: RetryPolicy | None = None,
        segment_size: int = SEGMENT_SIZE,
        window: int = WINDOW,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if segment_size <= 0 or not 0 < window <= WINDOW:
            raise ValueError(f"segment_size must be > 0 and window in 1..{WINDOW}")
        if ca_file is not None and not Path(ca_file).is_file():
            raise TLSError(f"registry CA file {ca_file} does not exist; mount the CA bundle")
        self.registry = registry
        self.base = urls.base_url(registry, insecure=insecure)
        self.session = session or requests.Session()
        self.verify: str | bool = str(ca_file) if ca_file is not None else True
        self.retry = retry or RetryPolicy()
        self.segment_size = segment_size
        self.window = window
        creds = Credentials(username, password or "") if username is not None else None
        self.auth = Authenticator(self.session, creds, timeout=timeout, verify=self.verify)
        transport = Transport(registry, self.base, session=self.session, verify=self.verify, timeout=timeout)
        self.exchange = Exchange(transport, self.auth, self.retry, sleep)

    @classmethod
    def from_docker_config(
        cls,
        registry: str,
        auth_file: str | Path | None,
        *,
        ca_file: str | Path | None = None,
        insecure: bool = False,
        **kwargs: Any,
    ) -> RegistryClient:
        """Credentials for ``registry`` from a Docker config JSON (anonymous when the file has none)."""
        creds = load_docker_config(auth_file, registry) if auth_file else None
        return cls(
            registry,
            username=creds.username if creds else None,
            password=creds.password if creds else None,
            ca_file=ca_file,
            insecure=insecure,
            **kwargs,
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ blobs: writing

    def blob_writer(self, repo: str) -> BlobWriter:
        """Open an upload session in ``repo``; use it as a context manager (cancelled unless committed)."""
        validate_repository(repo)
        location = blobs.open_session(self.exchange, repo)
        return BlobWriter(self.exchange, repo, location, segment_size=self.segment_size, window=self.window)

    def mount(self, repo: str, digest: str, from_repo: str) -> Mounted | BlobWriter:
        """Cross-repository mount: ``Mounted`` (201), or a writer on the session opened instead (202)."""
        validate_repository(repo)
        validate_repository(from_repo)
        validate_digest(digest)
        return blobs.mount(
            self.exchange, repo, digest, from_repo, segment_size=self.segment_size, window=self.window
        )

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """``mount`` for callers that only ask whether it worked: an opened session is cancelled."""
        outcome = self.mount(repo, digest, from_repo)
        if isinstance(outcome, BlobWriter):
            outcome.cancel()
            return False
        return True

    def push_blob(
        self,
        repo: str,
        chunks: Iterable[bytes],
        *,
        digest: str | None = None,
        size: int | None = None,
        media_type: str = mt.OCTET_STREAM,
    ) -> Descriptor:
        """Stream ``chunks`` into a new blob of ``repo``, hashing on the way; returns its descriptor.

        With ``digest`` the blob is skipped when present (HEAD), and the upload is cancelled
        (``DigestMismatch``, nothing committed) when the bytes hash otherwise; likewise for ``size``.
        """
        validate_repository(repo)
        if size is not None and size < 0:
            raise ValueError("size must be >= 0")
        if digest is not None:
            have = self.blob_exists(repo, digest)
            if have is not None:
                if size is not None and have != size:
                    raise DigestMismatch(
                        f"blob {digest} in {repo} has {have} bytes, but {size} were expected; "
                        "the source's size or digest is wrong"
                    )
                return Descriptor(media_type, digest, have)
        with self.blob_writer(repo) as writer:
            writer.write(chunks, size=size)
            return writer.commit(digest, media_type=media_type)

    def push_bytes(self, repo: str, data: bytes, media_type: str) -> Descriptor:
        """A small blob held in memory (configs); skipped when present."""
        return self.push_blob(repo, [data], digest=sha256_digest(data), size=len(data), media_type=media_type)

    # ------------------------------------------------------------------ blobs: reading

    def blob_exists(self, repo: str, digest: str) -> int | None:
        """The blob's size when ``repo`` has it, else None."""
        validate_repository(repo)
        validate_digest(digest)
        return blobs.blob_size(self.exchange, repo, digest)

    @contextmanager
    def open_blob(
        self, repo: str, digest: str, *, offset: int = 0, verify: bool = True, length: int | None = None
    ) -> Iterator[Iterator[bytes]]:
        """Stream a blob from ``offset``; from 0 the digest is verified when the iterator is drained.

        ``verify=False`` leaves hashing to a caller that does it elsewhere (materialize hashes in
        its writer thread; the publish pipeline checks a source's files itself). ``length`` asks
        for that many bytes only (a ranged GET, never verified): the registry sends no more than
        the caller reads. Redirects to storage are followed without our Authorization header,
        whatever the host.
        """
        validate_repository(repo)
        validate_digest(digest)
        headers: dict[str, str] = {}
        if length is not None:
            headers["Range"] = f"bytes={offset}-{offset + max(length, 1) - 1}"
            verify = False
        elif offset:
            headers["Range"] = f"bytes={offset}-"
        resp = self.exchange.call(
            "GET", urls.blob_url(self.base, repo, digest), self._pull(repo),
            what=f"GET blob {digest} from {repo}", ok=(200, 206), stream=True, headers=headers,
        )
        try:
            # A 200 to a ranged GET is the whole blob: skip to the offset, and it can be verified.
            whole = resp.status_code == 200
            yield blobs.iter_blob(
                resp, digest, registry=self.registry, verify=whole and verify, skip=offset if whole else 0
            )
        finally:
            resp.close()

    def delete_blob(self, repo: str, digest: str) -> bool:
        """Unlink a blob from ``repo`` (its data stays for GC); False when it was not linked."""
        validate_repository(repo)
        validate_digest(digest)
        url = urls.blob_url(self.base, repo, digest)
        what = f"DELETE blob {digest} in {repo}"
        return manifests.delete(self.exchange, url, repo, what=what, missing_ok=True)

    # ------------------------------------------------------------------ manifests and tags

    def get_manifest(self, repo: str, ref: str, accept: Iterable[str] = mt.MANIFEST_ACCEPT) -> Manifest:
        validate_repository(repo)
        return manifests.get_manifest(self.exchange, repo, ref, accept)

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or its digest; returns the digest of ``body``."""
        validate_repository(repo)
        return manifests.put_manifest(self.exchange, repo, ref, body, media_type)

    def delete_manifest(self, repo: str, digest: str) -> None:
        validate_repository(repo)
        validate_digest(digest)
        url = urls.manifest_url(self.base, repo, digest)
        manifests.delete(self.exchange, url, repo, what=f"DELETE manifest {repo}@{digest}")

    def list_repositories(self, page_size: int = 1000) -> list[str]:
        """Every repository (``/v2/_catalog``, paginated); needs ``registry:catalog:*``."""
        scopes = (Scope("registry", "catalog", ("*",)),)
        return manifests.list_pages(
            self.exchange, urls.catalog_url(self.base, n=page_size), scopes, "repositories",
            what="list repositories", max_pages=100_000,
        )

    def list_tags(self, repo: str) -> list[str]:
        validate_repository(repo)
        return manifests.list_pages(
            self.exchange, urls.tags_url(self.base, repo), self._pull(repo), "tags",
            what=f"list tags of {repo}", max_pages=1000,
        )

    @staticmethod
    def _pull(repo: str) -> tuple[Scope, ...]:
        return (repository_scope(repo, "pull"),)
