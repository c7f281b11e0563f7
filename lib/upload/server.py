"""The upload session's HTTP routes and serve loop.

``PUT /upload`` with the session's bearer token streams the body through
the upload's ``Feed`` into its publishing thread; the request that completes
the body is answered with the pipeline's outcome (201 and the result, or a
4xx/5xx after which the session waits for a better upload). A request cut
mid-body detaches from its upload, which waits for a ``Content-Range``
resume. ``HEAD /upload`` reports the state and offset, ``GET /healthz`` is
for probes. Refusals from the headers (token, size, state) are answered
before ``100 Continue`` and before a body byte is read, then the connection
lingers briefly and closes (``Connection.linger``).

Size: a chunked body, or a resumed part, is counted as it arrives and the
upload is dropped at the first piece past ``--max-upload-bytes``, before it
reaches the pipeline (nothing is tagged).
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
from typing import Any

from lib import result as results
from lib.api.types import Reason, WorkerResult
from lib.archive import ArchiveError
from lib.upload.connection import Connection, Cut, ProtocolError
from lib.upload.framing import PutRequest, RequestHead, parse_put, protocol_message
from lib.upload.session import ABANDON_WAIT, Outcome, Refusal, Session, Upload

UPLOAD_PATH = "/upload"
SERVE_POLL = 0.2  # seconds between checks for a shutdown request


def log(message: str) -> None:
    print(f"upload-server: {message}", file=sys.stderr, flush=True)


class Exchange:
    """One request on a connection: route it, answer it, log it."""

    def __init__(self, conn: Connection, head: RequestHead, session: Session, client: str):
        self.conn, self.head, self.session, self.client = conn, head, session, client

    # -- answers
    def send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.conn.send_json(status, body, headers or {}, head=self.head.method == "HEAD")
        log(f'{self.client} "{self.head.method} {self.head.path}" {status}')

    def refuse(
        self, status: int, message: str, headers: dict[str, str] | None = None, *, reason: str = ""
    ) -> None:
        """Answer without reading the body, then close (never drain a large body)."""
        self.conn.close_after = True
        reason = reason or (Reason.UPLOAD_EXPIRED if status == 410 else Reason.UPLOAD_REJECTED)
        self.send(status, results.error(reason, message), headers)
        self.conn.linger()

    def authorized(self) -> bool:
        if self.session.authorized(self.head.get("authorization")):
            return True
        self.refuse(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="upload"'})
        return False

    # -- routes
    def route(self) -> None:
        path, method = self.head.path, self.head.method
        if method == "GET" and path == "/healthz":
            self.send(200, {"status": "ok"})
        elif method in ("GET", "HEAD", "PUT") and path != UPLOAD_PATH:
            self.refuse(404, "use PUT /upload")
        elif method == "HEAD":
            self.report_state()
        elif method == "PUT":
            self.put()
        else:
            self.refuse(405, "use PUT /upload")

    def report_state(self) -> None:
        if not self.authorized():
            return
        state, offset, total = self.session.state()
        headers = {"Upload-Offset": str(offset), "Upload-State": state}
        if total is not None:
            headers["Upload-Length"] = str(total)
        if offset:
            headers["Range"] = f"bytes=0-{offset - 1}"
        self.send(200, {"state": state, "offset": offset}, headers)

    def put(self) -> None:
        if not self.authorized():
            return
        try:
            req = parse_put(self.head)
            up = self.session.begin(req)
        except ArchiveError as e:
            self.refuse(e.status, e.message)
            return
        except Refusal as e:
            self.refuse(e.status, e.message, e.headers, reason=e.reason)
            return
        # The 100 comes only now, so a refused client never starts sending its multi-GB body.
        self.conn.send_continue()
        self.receive(up, req)

    # -- the body
    def drop(self, up: Upload, status: int, message: str) -> None:
        """Abandon the upload (the pipeline stops before tagging anything) and refuse the request."""
        up.feed.abort(message)
        up.done.wait(ABANDON_WAIT)
        self.session.detach(up)
        self.refuse(status, message)

    def feed(self, up: Upload) -> tuple[bool, bool]:
        """Move the body into the upload's feed: ``(complete, stopped)``; ``Refusal`` past a size."""
        for chunk in self.conn.body():
            held = up.feed.received + len(chunk)
            if up.total is not None and held > up.total:
                raise Refusal(400, f"the body has more than the announced {up.total} bytes")
            if self.session.over_limit(held):  # chunked, or parts that add up
                raise Refusal(413, self.session.too_large())
            if not up.feed.write(chunk):
                return False, True  # the pipeline refused the upload: answer now
            up.progress.advance(len(chunk))
        return True, False

    def receive(self, up: Upload, req: PutRequest) -> None:
        try:
            complete, stopped = self.feed(up)
        except (ArchiveError, Refusal) as e:  # malformed chunked encoding, too many bytes
            self.drop(up, e.status, e.message)
            return
        except (Cut, OSError) as e:
            # Disconnected or silent: keep everything received; HEAD + Content-Range resume it.
            self.conn.close_after = True
            self.session.detach(up)
            log(f"{self.client} upload interrupted at byte {up.feed.received} ({e}); waiting for a resume")
            return
        if complete and (up.total is None or up.feed.received == up.total):
            up.feed.end()
        elif complete:
            # This request carried a part; the upload continues with the next Content-Range.
            self.session.detach(up)
            if not up.done.is_set():
                self.send(202, {"offset": up.feed.received}, {"Upload-Offset": str(up.feed.received)})
                return
        up.done.wait()
        self.answer(up, stopped)

    def answer(self, up: Upload, stopped: bool) -> None:
        """The pipeline's outcome, once the body is in (or the pipeline stopped reading it)."""
        outcome = up.outcome or Outcome(500, results.error(Reason.WORKER_FAILED, "no outcome"))
        if outcome.ok:
            up.progress.emit()
            self.conn.close_after = True
            self.send(outcome.status, outcome.body)
            self.session.complete(up, outcome.body)  # type: ignore[arg-type]
            return
        self.session.detach(up)
        if stopped:  # the client is still sending: answer, then close
            err = outcome.body["error"]
            self.refuse(outcome.status, err["message"], reason=err["reason"])
            return
        self.send(outcome.status, outcome.body)


def handle_connection(sock: socket.socket, session: Session, client: str) -> None:
    """Serve the requests of one connection until it closes or must close."""
    conn = Connection(sock)
    while True:
        try:
            head = conn.next_request()
        except ProtocolError as e:
            log(f"{client} malformed request: {e.message}")
            conn.send_json(e.status, results.error(Reason.UPLOAD_REJECTED, protocol_message(e.message)), {},
                           head=False)  # fmt: skip
            conn.linger()
            return
        if head is None:
            return
        Exchange(conn, head, session, client).route()
        if not conn.next_cycle():
            return


class Server(socketserver.ThreadingTCPServer):
    """A thread per connection; every connection serves ``session``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], session: Session):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.session = session
        super().__init__(address, _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: Server

    def handle(self) -> None:
        handle_connection(self.request, self.server.session, str(self.client_address[0]))


def make_server(listen: str, session: Session) -> Server:
    """A server bound to ``HOST:PORT`` (``[v6]:PORT``; an empty host is every IPv4 address)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return Server((host, int(port)), session)


def serve(
    session: Session, server: Server, *, poll: float = 0.5, stop: threading.Event | None = None
) -> WorkerResult | None:
    """Serve until a model is published (its result) or the session expires (None).

    ``stop`` ends the session as if it expired (tests, signal handlers).
    """
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SERVE_POLL}, daemon=True)
    thread.start()
    try:
        while not session.finished.wait(poll):
            due = session.due() or (stop is not None and stop.is_set())
            if due and session.expire():
                if session.finished.is_set():  # published at the last moment
                    break
                return None
        return session.result
    finally:
        server.shutdown()
        server.server_close()
