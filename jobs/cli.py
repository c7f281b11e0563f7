"""Argument parsing for ``python -m jobs``; the command lines are pinned in DESIGN.md."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

DEFAULT_RESULT = "/dev/termination-log"
# The largest upload a session accepts unless told otherwise: above the
# largest open models (about 810 GB for a 405B model in BF16).
DEFAULT_MAX_UPLOAD = 1 << 40


def _byte_count(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a byte count is 0 or more")
    return n


def _duration(value: str) -> float:
    from jobs.gc import parse_duration

    return parse_duration(value)


def _registry_opts(p: argparse.ArgumentParser, *, destination: bool) -> None:
    if destination:
        p.add_argument("--registry-auth-file", help="Docker config JSON for the destination (DMCR)")
        p.add_argument("--registry-ca-file", help="PEM CA bundle for the destination (DMCR)")
    p.add_argument(
        "--insecure-registry", action="store_true", help="allow plain HTTP to the registry"
    )


def _model_name_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model-name",
        default="",
        help="the Model's name: the ModelPack descriptor.name when the source has none of its own",
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jobs", description="ai-models worker")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("publish", help="publish a model from a source into DMCR")
    p.add_argument("--source", required=True, help="HF/Ollama URL, local path, or oci://REG/REPO@DIGEST")
    p.add_argument("--destination", required=True, help="REGISTRY/REPOSITORY in DMCR")
    p.add_argument("--auth-file", help="source credentials (HF token file or Docker config JSON)")
    p.add_argument("--ca-file", help="PEM CA bundle for the source")
    p.add_argument(
        "--insecure-source", action="store_true", help="the oci:// source registry speaks plain HTTP"
    )
    _model_name_opt(p)
    _registry_opts(p, destination=True)
    p.add_argument("--result-file", default=DEFAULT_RESULT)
    p.set_defaults(module="jobs.publish")

    p = sub.add_parser("upload-server", help="receive one upload and publish it")
    p.add_argument("--destination", required=True)
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--token-file", required=True)
    _model_name_opt(p)
    _registry_opts(p, destination=True)
    p.add_argument("--result-file", default=DEFAULT_RESULT)
    p.add_argument("--scratch-dir", default="/tmp/upload", help="spool directory (zip only)")
    p.add_argument("--expires-at", default="", help="RFC 3339 time the session ends")
    p.add_argument("--max-spool-bytes", type=int, default=64 << 30)
    p.add_argument(
        "--max-upload-bytes",
        type=_byte_count,
        default=DEFAULT_MAX_UPLOAD,
        help="refuse an upload body larger than N bytes (413); 0: no limit (default 1 TiB)",
    )
    p.set_defaults(module="jobs.upload_server")

    p = sub.add_parser("materialize", help="pull an artifact's files into a directory")
    p.add_argument("--artifact", required=True, help="REGISTRY/REPOSITORY@DIGEST")
    p.add_argument("--into", required=True)
    p.add_argument("--auth-file")
    p.add_argument("--ca-file")
    _registry_opts(p, destination=False)
    p.set_defaults(module="jobs.materialize")

    p = sub.add_parser("node-cache", help="CSI node plugin: mount artifacts from a node-shared cache")
    p.add_argument("--csi-endpoint", required=True, help="unix:///PATH of the gRPC socket")
    p.add_argument("--node-id", required=True, help="the node's name (NodeGetInfo)")
    p.add_argument("--cache-dir", required=True, help="the node directory holding one entry per digest")
    p.add_argument("--max-cache-bytes", type=_byte_count, default=0,
                   help="evict unused entries to stay within N bytes; 0: no budget")
    p.add_argument("--registry-ca-file", help="PEM CA bundle for DMCR (else the pull Secret's ca.crt)")
    p.add_argument("--registry", default="", help="serve artifacts of this registry (host[:port]) only")
    p.add_argument("--metrics-listen", default="", help="HOST:PORT for Prometheus /metrics")
    _registry_opts(p, destination=False)
    p.set_defaults(module="jobs.node_cache.server")

    p = sub.add_parser("cleanup", help="delete a published artifact")
    p.add_argument("--artifact", required=True, help="REGISTRY/REPOSITORY@DIGEST")
    p.add_argument("--auth-file")
    p.add_argument("--ca-file")
    _registry_opts(p, destination=False)
    p.add_argument("--result-file", default=DEFAULT_RESULT)
    p.set_defaults(module="jobs.cleanup")

    p = sub.add_parser("sweep", help="delete DMCR artifacts whose Model or ClusterModel is gone")
    p.add_argument("--registry", required=True, help="DMCR host[:port]")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: the in-cluster ServiceAccount)")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    p.add_argument("--registry-ca-file", help="PEM CA bundle for DMCR")
    _registry_opts(p, destination=False)  # its credential derives from the signing keys
    p.add_argument("--result-file", default=DEFAULT_RESULT)
    p.set_defaults(module="jobs.sweep")

    p = sub.add_parser("gc", help="DMCR garbage collection, safe beside running publishes (docs/dmcr.md)")
    p.add_argument("--config", required=True, help="the registry's config.yml (its storage section)")
    p.add_argument("--grace", type=_duration, default="48h",
                   help="keep blobs linked into a repository this recently (default 48h)")
    p.add_argument("--window", default=None,
                   help="read-only window HH:MM-HH:MM UTC (default $AI_MODELS_REGISTRY_GC_WINDOW; '' = none)")
    p.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    p.add_argument("--result-file", default=DEFAULT_RESULT)
    p.set_defaults(module="jobs.gc")

    p = sub.add_parser("catalog-probe", help="read an external catalog index")
    p.add_argument("--catalog", required=True, help="REGISTRY/REPOSITORY:TAG")
    p.add_argument(
        "--want", action="append", default=[], metavar="NAME",
        help="list this catalog model first (kept within the 4096-byte result); repeatable",
    )
    p.add_argument("--auth-file")
    p.add_argument("--ca-file")
    _registry_opts(p, destination=False)
    p.add_argument("--result-file", default=DEFAULT_RESULT)
    p.set_defaults(module="jobs.catalog_probe")

    p = sub.add_parser("catalog-export", help="publish a catalog index")
    p.add_argument("--destination", required=True, help="REGISTRY/REPOSITORY:TAG")
    p.add_argument("--model", action="append", required=True, help="NAME=REGISTRY/REPOSITORY@DIGEST")
    p.add_argument("--auth-file")
    p.add_argument("--ca-file")
    _registry_opts(p, destination=False)
    p.add_argument("--result-file", default=DEFAULT_RESULT)
    p.set_defaults(module="jobs.catalog_export")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    module = importlib.import_module(args.module)
    return int(module.run(args))


if __name__ == "__main__":
    sys.exit(main())
