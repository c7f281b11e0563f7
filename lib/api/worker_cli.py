"""The worker's command lines: one typed definition per ``python -m jobs`` command.

Why one place: the hooks (and ``lib.delivery`` for the materialize init
container) write these command lines into Jobs and pod templates, and the
worker parses them. Written on both sides they drift, and only an end-to-end
run would notice. Here each command is a frozen dataclass:

- its fields are the flags (``--`` + the field name with ``-`` for ``_``), in
  the order ``argv()`` emits them (a Job's pod template cannot be updated, so
  the order of what the hooks emit is kept stable);
- a field without a default is a required flag; ``bool`` is a switch;
  ``tuple[str, ...]`` a repeatable flag; the help text is the field's metadata;
- ``argv()`` builds the list; ``parse()`` reads it back with the very argparse
  parser ``python -m jobs`` runs (``parser()``), so help texts, defaults and
  validation exist once.

The pinned command lines are in DESIGN.md ("Worker command line");
``tests/test_worker_cli.py`` round-trips every command and parses what the
hooks emit. Standard library only: the worker's ``--help`` must work in a bare
image, and the hook service imports this without any worker dependency.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Self, get_type_hints

RESULT_FILE = "/dev/termination-log"
# The largest upload a session accepts unless told otherwise: above the
# largest open models (about 810 GB for a 405B model in BF16).
DEFAULT_MAX_UPLOAD = 1 << 40
DEFAULT_MAX_SPOOL = 64 << 30
DEFAULT_GRACE_SECONDS = 48 * 3600.0


def byte_count(value: str) -> int:
    """A flag's byte count: 0 or more (0 means "no limit" where a flag says so)."""
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a byte count is 0 or more")
    return n


def parse_duration(text: str) -> float:
    """``48h``, ``30m``, ``90s``, ``2d`` or plain seconds, as seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration like 48h, 30m, 90s")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


def opt(
    default: Any = MISSING,
    *,
    help: str = "",
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A flag: its default (none: required), help text, metavar and value parser."""
    return field(default=default, metadata={"help": help, "metavar": metavar, "parse": parse})


# Flags several commands share: one definition each (a fresh field per class; the order a class
# lists them in is still the order they are emitted in).
def insecure_registry() -> Any:
    return opt(False, help="allow plain HTTP to the registry")


def model_name() -> Any:
    return opt("", help="the Model's name: the ModelPack descriptor.name when the source has none of its own")


def registry_auth_file() -> Any:
    return opt(None, help="Docker config JSON for the destination (DMCR)")


def registry_ca_file() -> Any:
    return opt(None, help="PEM CA bundle for the destination (DMCR)")


def registry_capacity_bytes() -> Any:
    return opt(None, parse=byte_count, help="DMCR's capacity: refuse a model whose known size does not fit "
               "(InsufficientStorage) before any byte moves; absent or 0: no check")


def namespace_quota_bytes() -> Any:
    return opt(None, parse=byte_count, help="the Model's namespace may hold this many bytes in DMCR "
               "(with --quota-namespace; used per namespace from --registry-usage); absent or 0: no quota")


def quota_namespace() -> Any:
    return opt("", metavar="NAMESPACE", help="the Model's namespace, for --namespace-quota-bytes")


def registry_usage() -> Any:
    return opt("", metavar="NAMESPACE/NAME",
               help="ConfigMap whose usedBytes is DMCR's usage (the sweep writes it)")


@dataclass(frozen=True, kw_only=True)
class WorkerCommand:
    """Base of every command: ``argv()`` and ``parse()`` from the fields."""

    COMMAND: ClassVar[str]
    HELP: ClassVar[str]

    def options(self) -> list[str]:
        """The flags only (an init container names the command in ``command``)."""
        out: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            flag = _flag(f.name)
            if value is None or value is False or (value == f.default and value in ("", ())):
                continue  # absent: the worker's default applies
            if value is True:
                out.append(flag)
            elif isinstance(value, tuple):
                for item in value:
                    out += [flag, item]
            else:
                out += [flag, _render(value)]
        return out

    def argv(self) -> list[str]:
        """The arguments of ``python -m jobs``."""
        return [self.COMMAND, *self.options()]

    @classmethod
    def parse(cls, argv: Sequence[str]) -> Self:
        """``argv`` (starting with the command name) read back; argparse exits 2 when it is bad."""
        command = parse(argv)
        if not isinstance(command, cls):
            raise ValueError(f"{argv[:1]}: not the {cls.COMMAND} command")
        return command

    def namespace(self) -> argparse.Namespace:
        """What the worker modules read (``args.<flag>``), lists where argparse gives lists."""
        values = {f.name: _as_namespace_value(getattr(self, f.name)) for f in fields(self)}
        return argparse.Namespace(command=self.COMMAND, **values)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _render(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 172800.0 → "172800" (a duration in seconds)
    return str(value)


def _as_namespace_value(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


# -- the commands (DESIGN.md "Worker command line"; field order = emitted order) --------------


@dataclass(frozen=True, kw_only=True)
class Publish(WorkerCommand):
    COMMAND: ClassVar[str] = "publish"
    HELP: ClassVar[str] = "publish a model from a source into DMCR"

    source: str = opt(help="HF/Ollama URL, local path, or oci://REG/REPO@DIGEST")
    destination: str = opt(help="REGISTRY/REPOSITORY in DMCR")
    model_name: str = model_name()
    registry_auth_file: str | None = registry_auth_file()
    result_file: str = opt(RESULT_FILE)
    insecure_registry: bool = insecure_registry()
    registry_ca_file: str | None = registry_ca_file()
    auth_file: str | None = opt(None, help="source credentials (HF token file or Docker config JSON)")
    insecure_source: bool = opt(False, help="the oci:// source registry speaks plain HTTP")
    ca_file: str | None = opt(None, help="PEM CA bundle for the source")
    registry_capacity_bytes: int | None = registry_capacity_bytes()
    registry_usage: str = registry_usage()
    mount_from: tuple[str, ...] = opt(
        (),
        metavar="REPOSITORY",
        help="a DMCR repository to mount a file's blob from instead of fetching it (its digest "
        "known up front); tried in order; repeatable",
    )
    namespace_quota_bytes: int | None = namespace_quota_bytes()
    quota_namespace: str = quota_namespace()


@dataclass(frozen=True, kw_only=True)
class UploadServer(WorkerCommand):
    COMMAND: ClassVar[str] = "upload-server"
    HELP: ClassVar[str] = "receive one upload and publish it"

    destination: str = opt(help="REGISTRY/REPOSITORY in DMCR")
    model_name: str = model_name()
    listen: str = opt(help="HOST:PORT")
    token_file: str = opt(help="file holding the upload session's bearer token")
    expires_at: str = opt("", help="RFC 3339 time the session ends")
    registry_auth_file: str | None = registry_auth_file()
    scratch_dir: str = opt("/tmp/upload", help="spool directory (zip only)")
    max_spool_bytes: int = opt(DEFAULT_MAX_SPOOL, parse=int)
    max_upload_bytes: int = opt(
        DEFAULT_MAX_UPLOAD,
        parse=byte_count,
        help="refuse an upload body larger than N bytes (413); 0: no limit (default 1 TiB)",
    )
    result_file: str = opt(RESULT_FILE)
    insecure_registry: bool = insecure_registry()
    registry_ca_file: str | None = registry_ca_file()
    registry_capacity_bytes: int | None = registry_capacity_bytes()
    registry_usage: str = registry_usage()
    namespace_quota_bytes: int | None = namespace_quota_bytes()
    quota_namespace: str = quota_namespace()


@dataclass(frozen=True, kw_only=True)
class Materialize(WorkerCommand):
    COMMAND: ClassVar[str] = "materialize"
    HELP: ClassVar[str] = "pull an artifact's files into a directory"

    artifact: str = opt(help="REGISTRY/REPOSITORY@DIGEST")
    into: str = opt(help="the directory the files go into")
    auth_file: str | None = opt(None, help="Docker config JSON for the registry")
    insecure_registry: bool = insecure_registry()
    ca_file: str | None = opt(None, help="PEM CA bundle for the registry")


@dataclass(frozen=True, kw_only=True)
class NodeCache(WorkerCommand):
    COMMAND: ClassVar[str] = "node-cache"
    HELP: ClassVar[str] = "CSI node plugin: mount artifacts from a node-shared cache"

    csi_endpoint: str = opt(help="unix:///PATH of the gRPC socket")
    node_id: str = opt(help="the node's name (NodeGetInfo)")
    cache_dir: str = opt(help="the node directory holding one entry per digest")
    max_cache_bytes: int = opt(
        0, parse=byte_count, help="evict unused entries to stay within N bytes; 0: no budget"
    )
    registry_ca_file: str | None = opt(None, help="PEM CA bundle for DMCR (else the pull Secret's ca.crt)")
    registry: str = opt("", help="serve artifacts of this registry (host[:port]) only")
    metrics_listen: str = opt("", help="HOST:PORT for Prometheus /metrics")
    insecure_registry: bool = insecure_registry()


@dataclass(frozen=True, kw_only=True)
class Cleanup(WorkerCommand):
    COMMAND: ClassVar[str] = "cleanup"
    HELP: ClassVar[str] = "delete a published artifact"

    artifact: str = opt(help="REGISTRY/REPOSITORY@DIGEST")
    auth_file: str | None = opt(None, help="Docker config JSON for the registry")
    result_file: str = opt(RESULT_FILE)
    insecure_registry: bool = insecure_registry()
    ca_file: str | None = opt(None, help="PEM CA bundle for the registry")


@dataclass(frozen=True, kw_only=True)
class Sweep(WorkerCommand):
    COMMAND: ClassVar[str] = "sweep"
    HELP: ClassVar[str] = "delete DMCR artifacts whose Model or ClusterModel is gone"

    registry: str = opt(help="DMCR host[:port]")
    kubeconfig: str | None = opt(None, help="kubeconfig file (default: the in-cluster ServiceAccount)")
    dry_run: bool = opt(False, help="list what would be deleted, delete nothing")
    registry_ca_file: str | None = opt(None, help="PEM CA bundle for DMCR")
    insecure_registry: bool = insecure_registry()  # credential: signing keys
    result_file: str = opt(RESULT_FILE)


@dataclass(frozen=True, kw_only=True)
class GC(WorkerCommand):
    COMMAND: ClassVar[str] = "gc"
    HELP: ClassVar[str] = "DMCR garbage collection, safe beside running publishes (docs/dmcr.md)"

    config: str = opt(help="the registry's config.yml (its storage section)")
    grace: float = opt(
        DEFAULT_GRACE_SECONDS,
        parse=parse_duration,
        help="keep blobs linked into a repository this recently (default 48h)",
    )
    window: str | None = opt(
        None, help="read-only window HH:MM-HH:MM UTC (default $AI_MODELS_REGISTRY_GC_WINDOW; '' = none)"
    )
    dry_run: bool = opt(False, help="report what would be deleted, delete nothing")
    result_file: str = opt(RESULT_FILE)


@dataclass(frozen=True, kw_only=True)
class CatalogProbe(WorkerCommand):
    COMMAND: ClassVar[str] = "catalog-probe"
    HELP: ClassVar[str] = "read an external catalog index"

    catalog: str = opt(help="REGISTRY/REPOSITORY:TAG")
    result_file: str = opt(RESULT_FILE)
    want: tuple[str, ...] = opt(
        (),
        metavar="NAME",
        help="list this catalog model first (kept within the 4096-byte result); repeatable",
    )
    auth_file: str | None = opt(None, help="Docker config JSON for the catalog registry")
    ca_file: str | None = opt(None, help="PEM CA bundle for the catalog registry")
    insecure_registry: bool = insecure_registry()


@dataclass(frozen=True, kw_only=True)
class CatalogExport(WorkerCommand):
    COMMAND: ClassVar[str] = "catalog-export"
    HELP: ClassVar[str] = "publish a catalog index"

    destination: str = opt(help="REGISTRY/REPOSITORY:TAG")
    model: tuple[str, ...] = opt(help="NAME=REGISTRY/REPOSITORY@DIGEST; repeatable")
    auth_file: str | None = opt(None, help="Docker config JSON for the registry")
    ca_file: str | None = opt(None, help="PEM CA bundle for the registry")
    insecure_registry: bool = insecure_registry()
    result_file: str = opt(RESULT_FILE)


COMMANDS: Mapping[str, type[WorkerCommand]] = {
    c.COMMAND: c
    for c in (Publish, UploadServer, Materialize, NodeCache, Cleanup, Sweep, GC, CatalogProbe, CatalogExport)
}


# -- argparse, built from the definitions --------------------------------------------------


def _add_argument(p: argparse.ArgumentParser, f: Any, hint: Any) -> None:
    meta, required = f.metadata, f.default is MISSING
    kw: dict[str, Any] = {"help": meta["help"] or None}
    if hint is bool:
        kw["action"] = "store_true"
    elif hint == tuple[str, ...]:
        kw.update(action="append", required=required, metavar=meta["metavar"])
        if not required:
            kw["default"] = list(f.default)  # argparse appends to a copy
    else:
        kw.update(required=required, metavar=meta["metavar"])
        if not required:
            kw["default"] = f.default
        if meta["parse"] is not None:
            kw["type"] = meta["parse"]
    p.add_argument(_flag(f.name), **kw)


def parser(defaults: Mapping[str, Mapping[str, object]] | None = None) -> argparse.ArgumentParser:
    """``python -m jobs``'s parser; ``defaults`` adds per-command values (the worker's module)."""
    ap = argparse.ArgumentParser(prog="python -m jobs", description="ai-models worker")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, cls in COMMANDS.items():
        p = sub.add_parser(name, help=cls.HELP)
        hints = get_type_hints(cls)
        for f in fields(cls):
            _add_argument(p, f, hints[f.name])
        p.set_defaults(**(defaults or {}).get(name, {}))
    return ap


def parse(argv: Sequence[str]) -> WorkerCommand:
    """Any worker command line (starting with the command name) as its typed command."""
    ns = parser().parse_args(list(argv))
    cls = COMMANDS[ns.command]
    values = {f.name: getattr(ns, f.name) for f in fields(cls)}
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)
