"""Regenerate ``csi_pb2*.py`` from ``csi.proto`` with grpcio-tools (a development dependency).

The generated modules are committed: the worker image then needs only the
``grpcio`` and ``protobuf`` runtimes, no code generator and no build step, and
``tests/test_node_cache.py`` regenerates them into a scratch directory and
fails when the committed copies differ from what this ``.proto`` produces.

    .venv/bin/python -m jobs.node_cache.codegen            # rewrite in place
    .venv/bin/python -m jobs.node_cache.codegen --check    # exit 1 when stale
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent  # the repository: module paths follow the proto's path under it
PROTO = HERE / "csi.proto"
GENERATED = ("csi_pb2.py", "csi_pb2.pyi", "csi_pb2_grpc.py")


def generate(out: Path) -> Path:
    """Write the generated modules under ``out`` (mirroring ``jobs/node_cache/``); returns that folder."""
    from grpc_tools import protoc

    includes = str(resources.files("grpc_tools") / "_proto")  # google/protobuf/wrappers.proto
    rel = PROTO.relative_to(ROOT)
    rc = protoc.main([
        "grpc_tools.protoc", f"-I{ROOT}", f"-I{includes}",
        f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", str(rel),
    ])
    if rc != 0:
        raise RuntimeError(f"protoc failed on {rel} (exit {rc})")
    return out / rel.parent


def stale() -> list[str]:
    """Generated files that differ from what ``csi.proto`` produces now."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        return [n for n in GENERATED
                if not (HERE / n).is_file() or not filecmp.cmp(fresh / n, HERE / n, shallow=False)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report stale files")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale()
        for name in bad:
            print(f"{HERE / name} is stale: run python -m jobs.node_cache.codegen", file=sys.stderr)
        return 1 if bad else 0
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
