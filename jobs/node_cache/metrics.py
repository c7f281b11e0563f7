"""The plugin's Prometheus metrics, in a registry of their own (one plugin per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

NS = "ai_models_node_cache"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.hits = Counter(f"{NS}_hits", "Publishes served from a complete cache entry", registry=r)
        self.misses = Counter(f"{NS}_misses", "Publishes that had to download the artifact", registry=r)
        self.bytes_fetched = Counter(
            f"{NS}_fetched_bytes", "Bytes downloaded from the registry into the cache", registry=r
        )
        self.bytes_served = Counter(
            f"{NS}_served_from_cache_bytes", "Bytes of artifacts mounted from the cache without a download",
            registry=r,
        )
        self.evictions = Counter(f"{NS}_evictions", "Cache entries removed to make room", registry=r)
        self.used = Gauge(f"{NS}_used_bytes", "Bytes held by complete cache entries", registry=r)
        self.limit = Gauge(f"{NS}_limit_bytes", "The cache budget (--max-cache-bytes; 0: none)", registry=r)
        self.entries = Gauge(f"{NS}_entries", "Complete cache entries (artifacts)", registry=r)
        self.mounts = Gauge(f"{NS}_mounts", "Targets this plugin has mounted", registry=r)
        self.publish_seconds = Histogram(
            f"{NS}_publish_duration_seconds", "NodePublishVolume latency by outcome",
            ["result"], registry=r,
            buckets=(0.01, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
        )
        self.errors = Counter(f"{NS}_publish_errors", "Failed publishes by gRPC code", ["code"], registry=r)

    def serve(self, listen: str) -> None:
        """Serve ``/metrics`` on ``HOST:PORT`` in a daemon thread."""
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=self.registry)
