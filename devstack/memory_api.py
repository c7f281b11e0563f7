"""The slice of the API server a worker pod talks to, over the in-memory store (``make run``).

A worker patches its progress and result annotations onto its own Job
(``jobs/own_job.py``) with the ``kubernetes`` client, over HTTPS, with the
projected service-account token the kubelet wrote for it. The real backend
(``devstack/control_plane.py``) is a real kube-apiserver; this is its stand-in
for the in-memory ``Cluster``: ``GET`` and ``PATCH`` (JSON merge or
strategic merge patch of ``metadata.annotations`` only) of
``/apis/batch/v1/namespaces/NS/jobs/NAME``, ``POST`` of
``events.k8s.io/v1`` Events (namespace rules as the API server's), Bearer
tokens it issued itself
(TokenRequest), and RBAC judged from the namespace's Roles and RoleBindings
as the real authorizer would for these requests (verb, apiGroup, resource,
resourceNames). Anything else answers 404 or 403, never more than the real
server would allow.
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devstack.tls import make_ca_and_cert

Obj = dict[str, Any]
JOB_PATH = re.compile(r"^/apis/batch/v1/namespaces/([a-z0-9-]+)/jobs/([a-z0-9.-]+)$")
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
EVENTS_PATH = re.compile(r"^/apis/events.k8s.io/v1/namespaces/([a-z0-9-]+)/events$")
PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


def allowed(store: Any, who: tuple[str, str], verb: str, group: str, resource: str, namespace: str,
            name: str = "") -> bool:
    """RBAC for service account ``who`` (namespace, name) in ``namespace``: RoleBindings there
    naming it, or its namespace's service-account group, to Roles or ClusterRoles."""
    sa_ns, account = who
    for rb in store.list("RoleBinding", namespace):
        subjects = rb.get("subjects") or []
        if not any((s.get("kind") == "ServiceAccount" and s.get("name") == account
                    and (s.get("namespace") or namespace) == sa_ns)
                   or (s.get("kind") == "Group" and s.get("name") in (
                       f"system:serviceaccounts:{sa_ns}", "system:serviceaccounts"))
                   for s in subjects):
            continue
        ref = rb.get("roleRef") or {}
        role = (store.get("Role", ref.get("name", ""), namespace) if ref.get("kind") == "Role"
                else store.get("ClusterRole", ref.get("name", "")))
        for rule in (role or {}).get("rules") or []:
            if (_has(rule.get("verbs"), verb) and _has(rule.get("apiGroups"), group)
                    and _has(rule.get("resources"), resource)
                    and (not rule.get("resourceNames") or name in rule["resourceNames"])):
                return True
    return False


def _has(values: list[str] | None, value: str) -> bool:
    return values is not None and ("*" in values or value in values)


@dataclass
class MemoryApi:
    store: Any  # devstack.cluster.Cluster
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # token -> (namespace, account)
    host: str = "127.0.0.1"
    port: int = 0
    ca_pem: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> MemoryApi:
        certs = make_ca_and_cert(Path(tempfile.mkdtemp(prefix="ai-models-memory-api-")))
        self.ca_pem = certs.ca_cert.read_text()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                api._serve(self, "get")

            def do_PATCH(self) -> None:
                api._serve(self, "patch")

            def do_POST(self) -> None:
                api._serve(self, "create")

        server = ThreadingHTTPServer((self.host, 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs.cert, certs.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def issue_token(self, namespace: str, account: str) -> str:
        """TokenRequest: only for a ServiceAccount that exists."""
        if self.store.get("ServiceAccount", account, namespace) is None:
            raise LookupError(f"serviceaccount {namespace}/{account} not found")
        token = secrets.token_urlsafe(32)
        self.tokens[token] = (namespace, account)
        return token

    # -- requests ------------------------------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler, verb: str) -> None:
        scheme, _, token = h.headers.get("Authorization", "").partition(" ")
        who = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None  # as the API server
        if who is None:
            return _reply(h, 401, _status(401, "Unauthorized", "Unauthorized"))
        path = h.path.split("?")[0]
        if verb == "create" and EVENTS_PATH.match(path):
            return self._create_event(h, who, EVENTS_PATH.match(path).group(1))  # type: ignore[union-attr]
        m = JOB_PATH.match(path)
        if not m or verb == "create":
            return _reply(h, 404, _status(404, "NotFound", "the server could not find the requested resource"))
        namespace, name = m.groups()
        sa_ns, account = who
        if not allowed(self.store, who, verb, "batch", "jobs", namespace, name):
            user = f"system:serviceaccount:{sa_ns}:{account}"
            return _reply(h, 403, _status(403, "Forbidden", f'jobs.batch "{name}" is forbidden: User "{user}" '
                                                       f'cannot {verb} resource "jobs" in API group "batch" '
                                                       f'in the namespace "{namespace}"'))
        if verb == "patch":
            ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip()
            try:
                body = json.loads(h.rfile.read(int(h.headers.get("Content-Length") or 0)) or b"null")
            except ValueError:
                return _reply(h, 400, _status(400, "BadRequest", "the body is not JSON"))
            if ctype not in PATCH_TYPES or not isinstance(body, dict):
                return _reply(h, 415, _status(415, "UnsupportedMediaType", f"unsupported patch type {ctype}"))
            annotations = (body.get("metadata") or {}).get("annotations")
            if set(body) - {"metadata"} or set(body.get("metadata") or {}) - {"annotations"} or not isinstance(
                annotations, dict
            ):
                return _reply(h, 422, _status(422, "Invalid", "this stand-in patches metadata.annotations only"))
            job = self.store.patch_metadata("Job", name, namespace, annotations=annotations)
        else:
            job = self.store.get("Job", name, namespace)
        if job is None:
            return _reply(h, 404, _status(404, "NotFound", f'jobs.batch "{name}" not found'))
        _reply(h, 200, job)


    def _create_event(self, h: BaseHTTPRequestHandler, who: tuple[str, str], namespace: str) -> None:
        """POST an events.k8s.io/v1 Event: RBAC, then the API server's namespace rule."""
        if not allowed(self.store, who, "create", "events.k8s.io", "events", namespace):
            user = f"system:serviceaccount:{who[0]}:{who[1]}"
            return _reply(h, 403, _status(403, "Forbidden", f'User "{user}" cannot create resource "events" in '
                                                       f'API group "events.k8s.io" in the namespace "{namespace}"'))
        try:
            ev = json.loads(h.rfile.read(int(h.headers.get("Content-Length") or 0)) or b"null")
        except ValueError:
            return _reply(h, 400, _status(400, "BadRequest", "the body is not JSON"))
        if not isinstance(ev, dict) or not isinstance(ev.get("regarding"), dict):
            return _reply(h, 422, _status(422, "Invalid", "an Event needs regarding"))
        problem = event_problem(ev)
        if problem:
            return _reply(h, 422, _status(422, "Invalid", problem))
        md = ev.setdefault("metadata", {})
        if md.get("namespace", namespace) != namespace:
            return _reply(h, 400, _status(400, "BadRequest", "the namespace of the provided object does not match "
                                                             "the namespace sent on the request"))
        # pkg/apis/core/validation/events.go: the Event lives beside its object (or in default).
        reg_ns = ev["regarding"].get("namespace") or ""
        if reg_ns != namespace and not (reg_ns == "" and namespace == "default"):
            return _reply(h, 422, _status(422, "Invalid", f'involvedObject.namespace: Invalid value: "{reg_ns}": '
                                                          "does not match event.namespace"))
        md["namespace"] = namespace
        if md.get("generateName") and not md.get("name"):
            md["name"] = md["generateName"] + secrets.token_hex(3)
        if not SUBDOMAIN.match(str(md.get("name") or "")):
            return _reply(h, 422, _status(422, "Invalid", "metadata.name: a lowercase RFC 1123 subdomain"))
        ev["kind"], ev["apiVersion"] = "Event", "events.k8s.io/v1"
        _reply(h, 201, self.store.create(ev))


def event_problem(ev: Obj) -> str:
    """What the API server refuses in a new events.k8s.io/v1 Event (kubernetes 1.34,
    pkg/apis/core/validation/events.go ValidateEventCreate: eventTime, reportingController,
    reportingInstance, action and reason required; type Normal or Warning; note ≤ 1 KiB)."""
    for key in ("eventTime", "reportingController", "reportingInstance", "action", "reason"):
        if not ev.get(key):
            return f"{key}: Required value"
    if ev.get("type") not in ("Normal", "Warning"):
        return f"type: Unsupported value: {ev.get('type')!r}"
    if len(str(ev.get("note") or "").encode()) > 1024:
        return "note: Too long: must have at most 1024 bytes"
    return ""


def _status(code: int, reason: str, message: str) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}


def _reply(h: BaseHTTPRequestHandler, code: int, body: Obj) -> None:
    data = json.dumps(body).encode()
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)
