"""The registry's storage as the GC sees it: list keys with their age, read small
objects, delete keys. Two backends, chosen by the registry's own ``config.yml``:
the filesystem driver's directory and the S3 driver's bucket.

S3 is spoken over ``requests`` with AWS Signature V4 (about 60 lines below)
rather than boto3: the worker image needs no second HTTP stack, and the GC
uses four calls (ListObjectsV2, GetObject, PutObject, DeleteObjects).
Paths are relative to the registry root (``docker/registry/v2/...``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import requests

S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
DELETE_BATCH = 1000  # DeleteObjects' limit


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the registry root
    size: int
    mtime: float  # seconds since the epoch (S3: LastModified)


class Storage(Protocol):
    def list(self, prefix: str) -> Iterator[Entry]: ...
    def read(self, path: str, limit: int) -> bytes | None: ...
    def write(self, path: str, data: bytes) -> None: ...
    def delete(self, paths: Sequence[str]) -> None: ...
    def close(self) -> None: ...


class FilesystemStorage:
    """distribution's ``filesystem`` driver: ``rootdirectory`` holds ``docker/registry/v2``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def list(self, prefix: str) -> Iterator[Entry]:
        base = self.root / prefix
        if not base.is_dir():
            return
        stack = [base]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except FileNotFoundError:  # removed meanwhile
                continue
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    yield Entry(str(Path(e.path).relative_to(self.root)), st.st_size, st.st_mtime)

    def read(self, path: str, limit: int) -> bytes | None:
        try:
            with open(self.root / path, "rb") as f:
                return f.read(limit)
        except FileNotFoundError:
            return None

    def write(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def delete(self, paths: Sequence[str]) -> None:
        """Remove files, then their directories as they become empty (as the driver leaves none)."""
        parents: set[Path] = set()
        for p in paths:
            target = self.root / p
            target.unlink(missing_ok=True)
            parents.add(target.parent)
        stop = self.root / "docker/registry/v2"
        for d in sorted(parents, key=lambda x: len(x.parts), reverse=True):
            while d != stop and d.is_relative_to(stop):
                try:
                    d.rmdir()
                except OSError:  # not empty (or gone): stop climbing
                    break
                d = d.parent

    def close(self) -> None:
        """Nothing to release (the protocol's ``close`` is for S3's connections)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _q(text: str, safe: str = "-_.~") -> str:
    return quote(text, safe=safe)


def sigv4_headers(
    method: str, host: str, path: str, query: Mapping[str, str], payload: bytes, *,
    access_key: str, secret_key: str, region: str, now: dt.datetime,
) -> dict[str, str]:
    """Headers that sign one S3 request (AWS Signature Version 4, service ``s3``).

    ``path`` is the already URI-encoded path; ``query`` the decoded parameters.
    """
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload_hash = _sha256(payload)
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    if method in ("POST", "PUT"):
        headers["content-md5"] = base64.b64encode(hashlib.md5(payload).digest()).decode()
    canonical_query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(query.items()))
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        method, path, canonical_query,
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload_hash,
    ])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, _sha256(canonical.encode())])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    del headers["host"]  # requests sets it from the URL
    return headers


class S3Storage:
    """distribution's ``s3`` driver layout: ``rootdirectory`` inside ``bucket``.

    With ``regionendpoint`` (MinIO, Ceph RGW, ...) URLs are path-style, as
    distribution 2.8 makes them; without it, AWS virtual-hosted style.
    """

    def __init__(
        self, *, bucket: str, region: str, access_key: str, secret_key: str,
        endpoint: str = "", rootdirectory: str = "", secure: bool = True,
        ca_file: str | None = None, session: requests.Session | None = None,
        timeout: tuple[float, float] = (10.0, 120.0),
    ):
        self.bucket, self.region = bucket, region
        self.access_key, self.secret_key = access_key, secret_key
        self.prefix = rootdirectory.strip("/") + "/" if rootdirectory.strip("/") else ""
        scheme = "https" if secure else "http"
        if endpoint:
            base = endpoint if "://" in endpoint else f"{scheme}://{endpoint}"
            self.base, self.bucket_path = base.rstrip("/"), "/" + _q(bucket)
        else:
            self.base, self.bucket_path = f"{scheme}://{bucket}.s3.{region}.amazonaws.com", ""
        self.host = self.base.split("://", 1)[1]
        self._owns_session = session is None
        self.session = session or requests.Session()
        self.verify: str | bool = ca_file or True
        self.timeout = timeout

    def close(self) -> None:
        """Close the pooled connections of the session this storage created (a given one is the caller's)."""
        if self._owns_session:
            self.session.close()

    def _request(
        self, method: str, key: str | None, query: Mapping[str, str] | None = None, body: bytes = b"",
        ok: tuple[int, ...] = (200,),
    ) -> requests.Response:
        path = self.bucket_path + ("/" + _q(key, safe="/-_.~") if key is not None else "/")
        q = dict(query or {})
        headers = sigv4_headers(
            method, self.host, path, q, body, access_key=self.access_key, secret_key=self.secret_key,
            region=self.region, now=dt.datetime.now(dt.UTC),
        )
        query_string = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(q.items()))
        url = self.base + path + ("?" + query_string if q else "")
        resp = self.session.request(
            method, url, data=body or None, headers=headers, timeout=self.timeout, verify=self.verify
        )
        if resp.status_code not in ok:
            raise OSError(
                f"S3 {method} {key or ''} in {self.bucket}: HTTP {resp.status_code} {resp.text[:300]}"
            )
        return resp

    def list(self, prefix: str) -> Iterator[Entry]:
        token = ""
        while True:
            q = {"list-type": "2", "prefix": self.prefix + prefix, "max-keys": "1000"}
            if token:
                q["continuation-token"] = token
            root = ET.fromstring(self._request("GET", None, q).content)
            for c in root.iter(S3_NS + "Contents"):
                key = c.findtext(S3_NS + "Key") or ""
                stamp = (c.findtext(S3_NS + "LastModified") or "").replace("Z", "+00:00")
                modified = dt.datetime.fromisoformat(stamp).timestamp()
                yield Entry(key[len(self.prefix):], int(c.findtext(S3_NS + "Size") or 0), modified)
            token = root.findtext(S3_NS + "NextContinuationToken") or ""
            if (root.findtext(S3_NS + "IsTruncated") or "false") != "true" or not token:
                return

    def read(self, path: str, limit: int) -> bytes | None:
        resp = self._request("GET", self.prefix + path, ok=(200, 404))
        return None if resp.status_code == 404 else resp.content[:limit]

    def write(self, path: str, data: bytes) -> None:
        self._request("PUT", self.prefix + path, body=data)

    def delete(self, paths: Sequence[str]) -> None:
        for i in range(0, len(paths), DELETE_BATCH):
            batch = paths[i : i + DELETE_BATCH]
            objects = "".join(f"<Object><Key>{_xml(self.prefix + p)}</Key></Object>" for p in batch)
            body = f'<Delete xmlns="{S3_NS[1:-1]}"><Quiet>true</Quiet>{objects}</Delete>'.encode()
            resp = self._request("POST", None, {"delete": ""}, body)
            errors = ET.fromstring(resp.content).findall(S3_NS + "Error")
            if errors:
                first = errors[0]
                raise OSError(
                    f"S3 DeleteObjects in {self.bucket}: {len(errors)} keys not deleted, e.g. "
                    f"{first.findtext(S3_NS + 'Key')}: {first.findtext(S3_NS + 'Code')}"
                )


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def from_registry_config(cfg: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Storage:
    """The storage a registry ``config.yml`` describes; ``REGISTRY_STORAGE_*`` variables override
    single keys as they do for the registry (credentials usually come that way, from a Secret)."""
    env = os.environ if env is None else env
    storage = dict(cfg.get("storage") or {})
    if "filesystem" in storage:
        fs = dict(storage["filesystem"] or {})
        default = fs.get("rootdirectory", "/var/lib/registry")
        root = env.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", default)
        return FilesystemStorage(root)
    if "s3" in storage:
        s3 = {str(k).lower(): v for k, v in dict(storage["s3"] or {}).items()}
        for k, v in env.items():
            if k.startswith("REGISTRY_STORAGE_S3_"):
                s3[k[len("REGISTRY_STORAGE_S3_"):].lower()] = v
        secure = str(s3.get("secure", True)).lower() not in ("false", "0")
        missing = [k for k in ("bucket", "region", "accesskey", "secretkey") if not s3.get(k)]
        if missing:
            raise ValueError(f"storage.s3 lacks {', '.join(missing)} (config.yml or REGISTRY_STORAGE_S3_*)")
        return S3Storage(
            bucket=str(s3["bucket"]), region=str(s3["region"]), access_key=str(s3["accesskey"]),
            secret_key=str(s3["secretkey"]), endpoint=str(s3.get("regionendpoint") or ""),
            rootdirectory=str(s3.get("rootdirectory") or ""), secure=secure,
            ca_file=env.get("AI_MODELS_GC_S3_CA_FILE") or None,
        )
    raise ValueError(f"storage driver {sorted(storage)} is not supported: filesystem or s3")
