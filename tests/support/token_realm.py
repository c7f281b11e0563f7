"""A tiny Docker token realm for tests: signs ES256 JWTs the real registry trusts.

The registry (``auth.token``) is given ``rootcertbundle`` = a self-signed
certificate for our key; tokens carry ``kid`` = the libtrust key ID of that
key, which is how distribution finds the verifying key. Knobs let a test make
tokens die early (``lifetime``, may be negative: distribution allows 60 s of
leeway) or lie about it (``expires_in``), and refuse bad basic credentials.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """base32 (no padding) of the first 240 bits of SHA-256(DER SPKI), in 12 groups of 4 joined by ':'."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


@dataclass
class TokenRealm:
    """``with TokenRealm(tmp) as realm: realm.url, realm.cert_path``; records every request."""

    workdir: Path
    service: str = "test-registry"
    issuer: str = "test-issuer"
    users: dict[str, str] | None = None  # None: anonymous allowed; else basic auth required
    lifetime: float = 300.0  # seconds until ``exp`` (distribution adds 60 s leeway)
    expires_in: int | None = None  # what to report; default = lifetime
    requests: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = libtrust_key_id(self.key.public_key())
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = self.workdir / "token-ca.pem"
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token signer")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def issue(self, subject: str, scopes: list[str]) -> tuple[str, int]:
        now = int(time.time())
        access = []
        for s in scopes:
            typ, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": typ, "name": name, "actions": [a for a in actions.split(",") if a]})
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + int(self.lifetime),
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})
        return token, int(self.expires_in if self.expires_in is not None else max(1, self.lifetime))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        realm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                q = parse_qs(parts.query)
                user = ""
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                    ok = realm.users is None or realm.users.get(user) == pw
                else:
                    ok = realm.users is None
                with realm._lock:
                    realm.requests.append(
                        {"user": user, "scope": q.get("scope", []), "service": q.get("service"), "ok": ok}
                    )
                if parts.path != "/token" or not ok:
                    self.send_response(401 if ok is False else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                token, expires_in = realm.issue(user or "anonymous", q.get("scope", []))
                body = json.dumps({"token": token, "access_token": token, "expires_in": expires_in}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def start(self) -> TokenRealm:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TokenRealm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
