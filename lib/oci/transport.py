"""The one seam where the registry client touches the network.

``Transport.send`` makes one HTTP request with ``requests`` and turns what
can go wrong below HTTP into typed errors: a certificate problem is a
``TLSError`` (permanent), a refused connection or a timeout is an
``Unreachable`` wrapped in ``Transient`` (the caller may try again). It knows
nothing about credentials or upload bodies: ``Authorization`` is a header
the caller passes, and a body is whatever ``requests`` accepts.

Redirects (blob downloads to object storage, DMCR on S3) are followed here
for GET and HEAD, at most ``MAX_REDIRECTS`` hops, with ``Authorization``
removed on every hop whatever the host: the presigned URL is the only
authority the store needs. Another origin than the registry's is verified
against the system trust store (plus ``REQUESTS_CA_BUNDLE``), not the
registry's CA file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from lib.oci.errors import RegistryError, TLSError, Unreachable

CONNECT_TIMEOUT = 10.0  # also bounds each blocking send: a registry that stops reading fails
READ_TIMEOUT = 120.0  # a PUT that commits a resumed blob may re-hash it server-side
MAX_REDIRECTS = 5  # blob GET/HEAD → object storage (S3 presigned URL); never more than one in practice
TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class Transient(Exception):
    """The attempt failed in a way worth retrying; carries the error to raise when retries run out."""

    def __init__(self, error: RegistryError):
        super().__init__(str(error))
        self.error = error


def brief(e: BaseException) -> str:
    """A transport error without the URLs urllib3 quotes (upload URLs carry signed state)."""
    text = re.sub(r"https?://\S+|url: \S+", "<url>", str(e))
    text = re.sub(r"\(Caused by (\w+)\(.*", r"(\1)", text)
    return text[:300]


class Transport:
    """HTTP to one registry (and the object stores it redirects to); no auth, no retries."""

    def __init__(
        self,
        registry: str,
        base: str,
        *,
        session: requests.Session,
        verify: str | bool,
        timeout: tuple[float, float],
    ) -> None:
        self.registry = registry
        self.base = base
        self.session = session
        # Passed on every request: requests lets REQUESTS_CA_BUNDLE override a session-level verify.
        self.verify = verify
        self.timeout = timeout

    def send(
        self, method: str, url: str, headers: Mapping[str, str], *, what: str, **kwargs: Any
    ) -> requests.Response:
        """One request to the registry; GET and HEAD redirects are followed without credentials."""
        follow = kwargs.pop("allow_redirects", method in ("GET", "HEAD"))
        resp = self._request(
            method, url, headers, self.verify, kwargs,
            tls=lambda e: f"TLS verification failed for {what} at {self.registry}: {e}; "
            "pass the registry's CA file (--registry-ca-file), fix its certificate, "
            "or use --insecure-registry if it serves plain HTTP",
            down=lambda e: f"registry {self.registry} unreachable during {what}: {brief(e)}; "
            "check it is running",
        )
        if follow and resp.is_redirect:
            return self._follow_redirects(resp, method, headers, what=what, kwargs=kwargs)
        return resp

    def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        verify: str | bool,
        kwargs: dict[str, Any],
        *,
        tls: Callable[[BaseException], str],
        down: Callable[[BaseException], str],
    ) -> requests.Response:
        """One request, redirects not followed; TLS and transport failures become typed errors."""
        try:
            return self.session.request(
                method, url, headers=dict(headers), timeout=self.timeout, verify=verify,
                allow_redirects=False, **kwargs,
            )
        except requests.exceptions.SSLError as e:
            raise TLSError(tls(e)) from e
        except TRANSPORT_ERRORS as e:
            raise Transient(Unreachable(down(e))) from e

    def _follow_redirects(
        self, resp: requests.Response, method: str, headers: Mapping[str, str], *, what: str,
        kwargs: dict[str, Any],
    ) -> requests.Response:
        """Follow a blob redirect with no credentials, verifying a foreign origin with the system CAs."""
        plain = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        origin = urlsplit(self.base)[:2]
        for _ in range(MAX_REDIRECTS):
            target = urljoin(resp.url, resp.headers["Location"])
            resp.close()
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https"):
                raise RegistryError(f"{what}: registry {self.registry} redirected to a {parts.scheme!r} URL")
            verify = self.verify if parts[:2] == origin else True
            tls, down = self._store_errors(what, parts.hostname)
            resp = self._request(method, target, plain, verify, kwargs, tls=tls, down=down)
            if not resp.is_redirect:
                return resp
        resp.close()
        raise RegistryError(f"{what}: more than {MAX_REDIRECTS} redirects from {self.registry}")

    def _store_errors(
        self, what: str, host: str | None
    ) -> tuple[Callable[[BaseException], str], Callable[[BaseException], str]]:
        """Messages for failures at an object store the registry redirected to."""

        def tls(e: BaseException) -> str:
            return (f"TLS verification failed for {what} at the object store {host} that {self.registry} "
                    f"redirected to: {brief(e)}; trust its CA (REQUESTS_CA_BUNDLE) or turn the "
                    "registry's storage redirect off")

        def down(e: BaseException) -> str:
            return f"object store {host} that {self.registry} redirected {what} to is unreachable: {brief(e)}"

        return tls, down
