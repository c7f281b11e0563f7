"""``python -m jobs node-cache``: the CSI node plugin process (gRPC on a Unix socket).

The kubelet (through node-driver-registrar) and the liveness probe sidecar
connect to the socket; every call is served in a small thread pool, so a long
first download of one model never blocks mounts of others.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

from jobs.node_cache import csi_pb2_grpc as pb_grpc
from jobs.node_cache.cache import NodeCache
from jobs.node_cache.metrics import Metrics
from jobs.node_cache.service import Identity, Node, Options

WORKERS = 16  # concurrent CSI calls (publishes wait on each other per digest, not per process)


def socket_path(endpoint: str) -> Path:
    """``unix:///csi/csi.sock`` (or ``unix:/csi/csi.sock``, or a bare path) → the socket's path."""
    path = endpoint.removeprefix("unix://") if endpoint.startswith("unix://") else endpoint
    path = path.removeprefix("unix:")
    if not path.startswith("/"):
        raise ValueError(f"--csi-endpoint {endpoint!r}: expected unix:///ABSOLUTE/PATH")
    return Path(path)


def build(args: argparse.Namespace) -> tuple[grpc.Server, NodeCache, Metrics]:
    metrics = Metrics()
    metrics.limit.set(args.max_cache_bytes or 0)

    def changed(cache: NodeCache) -> None:
        entries = cache.entries()
        metrics.used.set(sum(e.size for e in entries.values()))
        metrics.entries.set(len(entries))
        metrics.mounts.set(len(cache.mounted()))

    cache = NodeCache(Path(args.cache_dir), args.max_cache_bytes or 0, on_change=changed,
                      on_evict=lambda digest, size: metrics.evictions.inc())
    options = Options(registry_ca_file=args.registry_ca_file, insecure=args.insecure_registry,
                      registry=args.registry or None)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="csi"))
    pb_grpc.add_IdentityServicer_to_server(
        Identity(lambda: os.access(cache.root, os.W_OK | os.X_OK)), server)
    pb_grpc.add_NodeServicer_to_server(Node(args.node_id, cache, metrics, options), server)
    return server, cache, metrics


def run(args: argparse.Namespace) -> int:
    os.umask(0o022)  # entries must be readable by every pod's user
    try:
        sock = socket_path(args.csi_endpoint)
    except ValueError as e:
        print(f"node-cache: {e}", file=sys.stderr)
        return 2
    server, cache, metrics = build(args)
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)  # left by a previous run
    server.add_insecure_port(f"unix:{sock}")
    if args.metrics_listen:
        metrics.serve(args.metrics_listen)
    server.start()
    entries = cache.entries()
    print(
        f"node-cache: serving {sock} for node {args.node_id}; cache {cache.root}: {len(entries)} entries, "
        f"{sum(e.size for e in entries.values())} bytes, budget {args.max_cache_bytes or 'none'}",
        file=sys.stderr, flush=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()
    # A download still running in a worker thread would hold the exit until it ends; its staging
    # directory is discarded by the next start instead, so leave now (the kubelet's grace is short).
    print("node-cache: stopped", file=sys.stderr, flush=True)
    os._exit(0)
