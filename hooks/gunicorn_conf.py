"""gunicorn settings for the hook service (one process per listener, deploy/hooks/deployment.yaml).

Worker model: gevent, a greenlet per connection (docs/security.md, "Listeners").
The token listener serves every pod in the cluster and the webhook has
``failurePolicy: Fail``, so a client that connects and sends slowly must not
hold a worker. gunicorn's sync and gthread workers hold a process or a thread
per connection for as long as the client takes, and gunicorn has no header or
body read timeout: 30 half-sent requests stopped both sync workers. A greenlet
costs a few KB, waits for bytes in the event loop and is dropped by the
timeouts below. Rejected: an ASGI server (uvicorn) around the WSGI app runs
the app in a thread pool, where a trickled body again holds a thread, and it
has no header read timeout either.

The hooks are CPU-bound and fast and do no I/O, so monkey-patching changes
nothing for them; a worker runs one request's Python at a time, as before,
and ``timeout`` still restarts a worker stuck for longer than Metacontroller
waits (10 s).
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import gevent
import gevent.socket
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

# Seconds. A client gets HEADER_TIMEOUT for the TLS handshake, then again for the
# request line and headers (also the idle wait for the next keep-alive request);
# REQUEST_TIMEOUT for the body, the hook and the answer together (Metacontroller
# gives up at 10 s, the API server at the webhook's 5 s); READ_TIMEOUT for any
# single read or write, so a stalled body is answered 408 by the app. Longer
# than HEADER_TIMEOUT so that the header deadline, not a socket error, ends an
# idle connection.
HEADER_TIMEOUT = 5
READ_TIMEOUT = 6
REQUEST_TIMEOUT = 9


class TimeoutGeventWorker(GeventWorker):
    """gunicorn's gevent worker with deadlines on the handshake, the request and each socket call."""

    def patch(self) -> None:
        super().patch()
        # Sockets accepted from here on inherit it, so a stalled read never waits forever.
        gevent.socket.setdefaulttimeout(READ_TIMEOUT)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        # GeventWorker.handle would make the socket blocking (no timeout); keep ours.
        client.settimeout(READ_TIMEOUT)
        if hasattr(client, "do_handshake") and not self._handshake(client, addr):
            client.close()
            return
        AsyncWorker.handle(self, listener, client, addr)

    def _handshake(self, client: Any, addr: Any) -> bool:
        """TLS handshake within HEADER_TIMEOUT; a silent or broken client is closed quietly."""
        with gevent.Timeout(HEADER_TIMEOUT, False):
            try:
                client.do_handshake()
                return True
            except OSError as e:  # ssl.SSLError, reset, per-call timeout
                self.log.debug("TLS handshake with %s failed: %s", addr, e)
                return False
        self.log.debug("TLS handshake with %s not done within %ss", addr, HEADER_TIMEOUT)
        return False

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool | None:
        deadline = gevent.Timeout(REQUEST_TIMEOUT)
        deadline.start()
        try:
            return super().handle_request(listener_name, req, sock, addr)
        except gevent.Timeout as e:
            if e is not deadline:
                raise
            self.log.info("%s %s from %s not done within %ss; closing", req.method, req.path, addr[0],
                          REQUEST_TIMEOUT)
        except TimeoutError:
            self.log.info("%s %s from %s: client stalled; closing", req.method, req.path, addr[0])
        finally:
            deadline.close()
        raise StopIteration  # AsyncWorker.handle closes the connection


def ssl_context(config: Any, default_ssl_context_factory: Any) -> Any:
    """gunicorn's context, but handshakes run in ``handle`` under HEADER_TIMEOUT, not at accept."""
    return _HandshakeInHandle(default_ssl_context_factory())


class _HandshakeInHandle:
    """An SSLContext whose ``wrap_socket`` defers the handshake (gevent's server wraps at accept)."""

    def __init__(self, context: Any):
        self._context = context

    def wrap_socket(self, sock: Any, **kwargs: Any) -> Any:
        kwargs["do_handshake_on_connect"] = False
        return self._context.wrap_socket(sock, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


# Metrics across workers: every worker process writes its samples under one directory and
# /metrics sums them (prometheus_client's multiprocess mode, hooks/app.py). Without it each
# scrape would see the counters of whichever worker answered. Set in the master before it
# forks, so every worker inherits it; /tmp is the pod's emptyDir. Cost: two sparse files
# (a few KB of tmpfs) per worker lifetime, kept while the server runs, so workers are
# recycled rarely (max_requests below).
def on_starting(server: Any) -> None:
    """A fresh sample directory per server start (files of an earlier run would be summed)."""
    import shutil

    default = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ai-models-metrics-{os.getpid()}")
    path = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", default)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A recycled or crashed worker's live gauges go; its counters stay counted."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


bind = os.environ.get("AI_MODELS_LISTEN", "0.0.0.0:8080")
workers = int(os.environ.get("AI_MODELS_HOOK_WORKERS", max(2, multiprocessing.cpu_count())))
worker_class = TimeoutGeventWorker
worker_connections = 1000         # per worker; beyond it the listener stops accepting
keepalive = HEADER_TIMEOUT        # the gevent worker's deadline for each request's line and headers
do_handshake_on_connect = True    # done by TimeoutGeventWorker._handshake, so AsyncWorker skips its own
http_protocols = "h1"             # no HTTP/2: nothing here needs it, and it has its own timeouts
timeout = 9                       # heartbeat: a worker blocked longer (a runaway hook) is restarted
graceful_timeout = 5
control_socket_disable = True     # no runtime admin socket (gunicorn 25+): nothing here uses it
limit_request_line = 8190         # gunicorn's maximum; token requests carry a few scopes in the query
limit_request_fields = 32         # Metacontroller, the API server and registry clients send ~10
limit_request_field_size = 8190
max_requests = 1_000_000         # a leak guard; rare, since each worker lifetime leaves metric files
max_requests_jitter = 50_000
accesslog = None
errorlog = "-"
loglevel = "info"
