"""One client connection, driven by h11: the only place an upload touches the wire.

h11 (a maintained, sans-I/O HTTP/1.1 state machine, also under httpcore and
uvicorn) parses the request head and frames the body: ``Content-Length``
and chunked bodies with extensions and trailers, conflicting lengths,
keep-alive cycles and ``Expect: 100-continue`` bookkeeping. It was chosen
over werkzeug, which is installed, because werkzeug's only chunked decoder
(``werkzeug.serving.DechunkedInput``) belongs to its development server: it
has no trailers or chunk extensions and does not tell a cut body from a
short read, and a cut body must stay resumable at an exact byte offset.
h11 hands over exactly the body bytes received, as they arrive.

What stays ours: the socket loop around h11, telling a cut body (EOF or a
read timeout: resumable) from a malformed one (400), and the linger after
a refusal (below).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import h11

from lib.archive import ArchiveError
from lib.upload.framing import RequestHead

RECV_SIZE = 1 << 20
PIECE = 1 << 20  # body bytes handed on at once (a whole HTTP chunk when smaller)
READ_TIMEOUT = 60.0  # a client silent this long counts as disconnected (resumable)
MAX_HEAD = 64 << 10  # request line and headers
DISCARD_LIMIT = 256 << 10  # body bytes read and dropped after a refusal, so the client sees the answer
DISCARD_SECONDS = 1.0
SERVER = b"ai-models-upload/1"


class Cut(Exception):
    """The request body ended before its framing said it would (EOF or timeout)."""


class ProtocolError(Exception):
    """A request head h11 refused: answer ``status`` and close."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Connection:
    """A socket and its h11 state; requests are served one after another (keep-alive)."""

    def __init__(self, sock: socket.socket, *, read_timeout: float = READ_TIMEOUT):
        self.sock = sock
        self.sock.settimeout(read_timeout)
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._eof = False
        self._buffer = bytearray(RECV_SIZE)
        self._view = memoryview(self._buffer)
        self.close_after = False  # answer with ``Connection: close`` and end the connection

    def _event(self) -> Any:
        """The next h11 event, reading the socket as needed (``OSError`` on a timeout)."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            # Into one reused buffer: recv(1 MiB) would allocate (mmap) a fresh MiB per read.
            n = self.sock.recv_into(self._buffer)
            self._eof = n == 0
            # h11 copies any bytes-like object into its own buffer (its stubs say bytes).
            self.h11.receive_data(self._view[:n] if n else b"")  # type: ignore[arg-type]

    def next_request(self) -> RequestHead | None:
        """The next request's head; None when the client closed; ``ProtocolError`` if malformed."""
        try:
            event = self._event()
        except h11.RemoteProtocolError as e:
            self.close_after = True
            raise ProtocolError(e.error_status_hint, str(e)) from None
        except OSError:
            return None
        if not isinstance(event, h11.Request):
            return None  # ConnectionClosed
        return RequestHead.from_wire(event.method, event.target, event.headers)

    def body(self) -> Iterator[bytes]:
        """The body in pieces of up to ``PIECE`` bytes; ``Cut`` (or ``OSError``) when it ends early.

        A piece ends at ``PIECE`` bytes, at the end of an HTTP chunk or at the
        end of the body, as the old ``rfile.read(PIECE)`` did: fewer, larger
        pieces downstream. When the connection fails, the bytes received so
        far are handed on before the error, so the resume offset stays exact.
        """
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                event = self._body_event()
            except (Cut, OSError):
                if parts:
                    yield b"".join(parts)
                raise
            if isinstance(event, h11.EndOfMessage):
                if parts:
                    yield b"".join(parts)
                return
            parts.append(event.data)
            size += len(event.data)
            if size >= PIECE or event.chunk_end:
                yield b"".join(parts)
                parts, size = [], 0

    def _body_event(self) -> Any:
        """The next ``Data`` or ``EndOfMessage``; ``Cut`` at EOF, ``ArchiveError`` when malformed."""
        try:
            return self._event()
        except h11.RemoteProtocolError as e:
            if self._eof:
                raise Cut(str(e)) from None
            raise ArchiveError(400, f"malformed request body: {e}") from None

    def send_continue(self) -> None:
        """``100 Continue``, when the client waits for it (only once its headers are accepted)."""
        if self.h11.they_are_waiting_for_100_continue:
            self._send(h11.InformationalResponse(status_code=100, headers=[]))

    def send_json(self, status: int, body: dict[str, Any], headers: dict[str, str], *, head: bool) -> None:
        """A complete JSON answer (headers only for ``HEAD``)."""
        data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode() + b"\n"
        fields = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            ("Date", formatdate(usegmt=True)),
            ("Server", SERVER.decode()),
            *headers.items(),
        ]
        if self.close_after:
            fields.append(("Connection", "close"))
        self._send(h11.Response(status_code=status, headers=fields, reason=_phrase(status)))
        if not head:
            self._send(h11.Data(data=data))
        self._send(h11.EndOfMessage())

    def _send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.sock.sendall(data)

    def next_cycle(self) -> bool:
        """Ready for the next request on this connection (False: close it)."""
        if self.close_after or self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
            return False
        self.h11.start_next_cycle()
        return True

    def linger(self) -> None:
        """Let a client that sent its body without waiting for 100 read our answer.

        Closing a socket with unread bytes makes the kernel send a reset,
        which can destroy the answer before the client reads it; so the
        server stops sending, drops a bounded amount of the body, then closes.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(DISCARD_SECONDS / 4)
            deadline = time.monotonic() + DISCARD_SECONDS
            dropped = 0
            while dropped < DISCARD_LIMIT and time.monotonic() < deadline:
                b = self.sock.recv(65536)
                if not b:
                    break
                dropped += len(b)
        except OSError:
            pass


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
