"""Requests to one registry with credentials and bounded retries, around ``Transport.send``.

``Exchange.send`` is the only place that handles a 401: request → 401 →
``Authenticator.challenged`` (a token for the scopes, or basic credentials)
→ the same request again. A body that cannot be sent twice (a streamed
PATCH) is not resent: once new credentials are in place the attempt raises
``Transient`` and the upload resumes from the registry's offset.

``Exchange.call`` adds what most operations want: the statuses that count
as success, bounded retries (``lib.retry``) on transport errors and 5xx,
and every other answer mapped to a typed error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from lib.oci.auth import Authenticator
from lib.oci.challenge import Scope
from lib.oci.errors import AuthError, RegistryError, error_from_response, is_out_of_space
from lib.oci.transport import Transient, Transport
from lib.retry import Attempts, RetryPolicy

ERROR_BODY = 65536  # bytes of an error answer read for its errcode JSON


class Exchange:
    """Authenticated, retried requests to one registry."""

    def __init__(
        self,
        transport: Transport,
        auth: Authenticator,
        retry: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.transport = transport
        self.auth = auth
        self.retry = retry
        self.sleep = sleep

    @property
    def registry(self) -> str:
        return self.transport.registry

    def attempts(self) -> Attempts:
        """A fresh streak of tries under the client's policy."""
        return Attempts(self.retry, sleep=self.sleep)

    def send(
        self, method: str, url: str, scopes: tuple[Scope, ...], *, what: str, replayable: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """One request with credentials; on a 401 new ones are fetched and the request is sent again."""
        headers = dict(kwargs.pop("headers", None) or {})
        for attempt in range(3):
            auth = self.auth.header(scopes)
            if auth:
                headers["Authorization"] = auth
            else:
                headers.pop("Authorization", None)
            resp = self.transport.send(method, url, headers, what=what, **kwargs)
            # A 401 that new credentials cannot answer goes back to the caller as the refusal it is.
            if resp.status_code != 401 or attempt == 2 or not self.auth.challenged(resp, scopes):
                return resp
            resp.close()
            if not replayable:
                raise Transient(AuthError(f"credentials for {what} at {self.registry} expired", 401))
        raise AssertionError("unreachable")

    def call(
        self, method: str, url: str, scopes: tuple[Scope, ...], *, what: str, ok: tuple[int, ...],
        **kwargs: Any,
    ) -> requests.Response:
        """``send`` until an answer in ``ok``: transport errors and 5xx are retried, others raise."""
        tries = self.attempts()
        while True:
            try:
                resp = self.send(method, url, scopes, what=what, **kwargs)
                if resp.status_code in ok:
                    return resp
                raise self.failure(resp, what, streamed=bool(kwargs.get("stream")))
            except Transient as t:
                if not tries.failed():
                    raise t.error from None

    def failure(self, resp: requests.Response, what: str, *, streamed: bool = False) -> Exception:
        """The error for an unwanted answer: ``Transient`` for a 5xx worth another try, else typed."""
        body = resp.raw.read(ERROR_BODY) if streamed else resp.content[:ERROR_BODY]
        resp.close()
        err = self.error(resp.status_code, body, what)
        if resp.status_code >= 500 and not is_out_of_space(resp.status_code, body):
            return Transient(err)
        return err

    def error(self, status: int, body: bytes, what: str) -> RegistryError:
        return error_from_response(status, body, what=what, registry=self.registry)
