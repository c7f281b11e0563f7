"""Credentials and ``Authorization`` headers: anonymous, basic, Docker token flow.

``Exchange.send`` (lib/oci/exchange.py) asks ``Authenticator.header(scopes)``
before each request and hands every 401 to ``Authenticator.challenged``. A ``Basic`` challenge switches to
preemptive basic auth; a ``Bearer`` challenge fetches a token from the realm
(with basic credentials when we have them, anonymously otherwise) for the
challenge's scope, caches it per scope until ``expires_in`` (default 60 s,
per the token spec) minus a margin, and is refreshed on the next 401 (a token
can expire in the middle of a long upload).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from lib.oci.challenge import (
    Challenge,
    Scope,
    merge_scopes,
    parse_scopes,
    parse_www_authenticate,
    scopes_key,
)
from lib.oci.errors import AuthError, RegistryError, TLSError, Unreachable
from lib.oci.urls import registry_key

DEFAULT_EXPIRES_IN = 60  # seconds, when the realm does not say (token spec)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:  # never print the password
        return f"Credentials(username={self.username!r}, password=***)"


def credentials_from_docker_config(doc: dict, registry: str) -> Credentials | None:
    """The credentials for ``registry`` (host[:port]) in a parsed Docker config, or None.

    Keys may be ``host:port`` or URLs (``https://host:port``, ``https://host/v1/``);
    an entry holds ``auth`` (base64 ``user:password``) or ``username``/``password``.
    """
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        raise AuthError(
            'docker config has no \'auths\' object; provide {"auths": {"<registry>": {...}}}'
        )
    want = registry_key(registry)
    for key, entry in auths.items():
        if registry_key(str(key)) != want or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, sep, pw = base64.b64decode(str(entry["auth"]), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError) as e:
                raise AuthError(
                    f"docker config entry for {key!r}: 'auth' is not base64 of user:password"
                ) from e
            if not sep:
                raise AuthError(f"docker config entry for {key!r}: 'auth' must decode to user:password")
            return Credentials(user, pw)
        if entry.get("username") is not None and entry.get("password") is not None:
            return Credentials(str(entry["username"]), str(entry["password"]))
        raise AuthError(f"docker config entry for {key!r} has neither 'auth' nor 'username'/'password'")
    return None


def load_docker_config(path: str | Path, registry: str) -> Credentials | None:
    """Read a ``config.json`` / ``.dockerconfigjson`` file; None when it has no entry for ``registry``."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise AuthError(
            f"registry auth file {path} does not exist; mount the credentials Secret"
        ) from e
    except (OSError, ValueError) as e:
        raise AuthError(f"registry auth file {path} is not a readable Docker config JSON: {e}") from e
    if not isinstance(doc, dict):
        raise AuthError(f"registry auth file {path} must hold a JSON object with 'auths'")
    return credentials_from_docker_config(doc, registry)


@dataclass
class _Token:
    value: str
    expires_at: float  # monotonic


class Authenticator:
    """Holds what we learned about a registry's auth and the tokens per scope."""

    def __init__(
        self,
        session: requests.Session,
        credentials: Credentials | None,
        *,
        timeout: tuple[float, float] = (10.0, 60.0),
        clock: Callable[[], float] = time.monotonic,
        verify: str | bool = True,
    ) -> None:
        self._verify = verify
        self._session = session
        self.credentials = credentials
        self._timeout = timeout
        self._clock = clock
        self._basic = False
        self._tokens: dict[str, _Token] = {}
        self._lock = threading.Lock()
        self.token_fetches = 0  # for tests and diagnostics

    def header(self, scopes: tuple[Scope, ...]) -> str | None:
        """The ``Authorization`` value to send now for ``scopes`` (None: anonymous)."""
        if self._basic and self.credentials:
            return self.credentials.basic()
        with self._lock:
            tok = self._tokens.get(scopes_key(scopes))
        if tok and self._clock() < tok.expires_at:
            return f"Bearer {tok.value}"
        if tok:  # expired by its own expires_in: refresh before sending, not after a 401
            return self._refresh(scopes)
        return None

    def challenged(self, response: requests.Response, scopes: tuple[Scope, ...]) -> bool:
        """Handle a 401; True when a retry with new credentials makes sense."""
        challenges = parse_www_authenticate(response.headers.get("WWW-Authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None and bearer.realm:
            with self._lock:
                self._challenge = bearer
            self._fetch(bearer, scopes)
            return True
        if basic is not None:
            if self.credentials is None:
                return False
            if self._basic:
                return False  # already sent basic credentials: they are wrong
            self._basic = True
            return True
        return False

    _challenge: Challenge | None = None

    def _refresh(self, scopes: tuple[Scope, ...]) -> str | None:
        if self._challenge is None:
            return None
        return "Bearer " + self._fetch(self._challenge, scopes)

    def _fetch(self, challenge: Challenge, scopes: tuple[Scope, ...]) -> str:
        realm = challenge.params["realm"]
        wanted = parse_scopes(challenge.params.get("scope")) or scopes
        params: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        params += [("scope", str(s)) for s in merge_scopes(tuple(wanted) + tuple(scopes))]
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        try:
            r = self._session.get(
                realm, params=params, headers=headers, timeout=self._timeout, verify=self._verify
            )
        except requests.exceptions.SSLError as e:
            raise TLSError(
                f"TLS verification failed for the token realm {realm}: {e}; check the CA file"
            ) from e
        except requests.RequestException as e:
            raise Unreachable(
                f"token realm {realm} unreachable: {e}; check the registry's auth service"
            ) from e
        if r.status_code in (401, 403):
            raise AuthError(
                f"token realm {realm} refused the credentials (HTTP {r.status_code}); "
                "check the registry auth file",
                r.status_code,
            )
        if r.status_code != 200:
            raise RegistryError(
                f"token realm {realm} answered HTTP {r.status_code}: {r.text[:200]}", r.status_code
            )
        try:
            doc = r.json()
            token = doc.get("token") or doc.get("access_token")
            expires_in = int(doc.get("expires_in") or DEFAULT_EXPIRES_IN)
        except (ValueError, AttributeError, TypeError) as e:
            raise RegistryError(f"token realm {realm} answered with invalid JSON") from e
        if not token or not isinstance(token, str):
            raise RegistryError(f"token realm {realm} answered without 'token' or 'access_token'")
        # Refresh a little before the stated expiry so a request never starts with a dying token.
        margin = min(30.0, expires_in * 0.1)
        with self._lock:
            self._tokens[scopes_key(scopes)] = _Token(token, self._clock() + max(0.0, expires_in - margin))
            self.token_fetches += 1
        return token
