"""``python -m jobs gc``: DMCR's garbage collection, safe beside running publishes.

distribution's own ``registry garbage-collect`` deletes every blob no manifest
references, including the blobs a publish has already committed but not yet
tied together with its manifest (the manifest comes last). This GC reads the
same storage (the registry's ``config.yml``: filesystem or S3) and keeps:

1. every blob referenced by a manifest of any repository (mark phase over
   every ``_manifests/revisions`` link: configs, layers, index children);
2. every blob linked into a repository (``_layers``) within ``--grace``
   (default 48 h): an upload's commit writes that link, so a publish that has
   not pushed its manifest yet keeps its blobs, even one paused across GC.

Everything else goes: unreferenced blob data, links to it, and repositories
with no manifest and no link or upload session younger than the grace
(deleted Models: their cleanup Job deletes the manifest and unlinks its
blobs, so their blobs and repository go at the next run).

The mark is a snapshot: a commit between mark and sweep is not seen. So GC
runs in the read-only window (``--window``, default
``AI_MODELS_REGISTRY_GC_WINDOW``) in which the token service issues no push
token: it starts only once every push token issued before the window has
expired (TTL + 60 s registry leeway) and stops sweeping a minute before the
window ends. Result: ``{"gc": {...counts...}}``; exit 0, or 2 with
``error.reason`` ``GarbageCollectionFailed`` / ``OutsideReadOnlyWindow``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import yaml

from jobs.common import fail, finish
from jobs.gc_storage import Storage, from_registry_config
from lib import registry_token
from lib.api.worker_cli import parse_duration as parse_duration  # re-exported: --grace

V2 = "docker/registry/v2/"
REPOS = V2 + "repositories/"
BLOBS = V2 + "blobs/"
MAX_MANIFEST = 4 << 20
TOKEN_FENCE = registry_token.DEFAULT_TTL_SECONDS + 60  # last push token issued before the window dies
STOP_MARGIN = 60  # seconds before the window's end the sweep stops
DEFAULT_GRACE = "48h"

_REPO_KEY = re.compile(r"^(?P<repo>.+?)/_(?P<kind>layers|manifests|uploads)/(?P<rest>.*)$")
_LINK = re.compile(r"^sha256/(?P<hex>[0-9a-f]{64})/link$")
_REVISION = re.compile(r"^revisions/sha256/(?P<hex>[0-9a-f]{64})/link$")
_BLOB = re.compile(r"^sha256/[0-9a-f]{2}/(?P<hex>[0-9a-f]{64})/data$")


@dataclass
class Repo:
    name: str
    revisions: set[str] = field(default_factory=set)
    links: dict[str, float] = field(default_factory=dict)  # blob digest -> link mtime
    newest_upload: float = 0.0
    keys: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """What a run found and what it will delete."""

    repos: dict[str, Repo]
    blobs: dict[str, int]  # digest -> size
    live: set[str]
    dead: list[str]
    drop_repos: list[str]
    young: int  # blobs kept only by the grace


def blob_path(digest: str) -> str:
    hexd = digest.split(":", 1)[1]
    return f"{BLOBS}sha256/{hexd[:2]}/{hexd}/data"


def scan_repositories(storage: Storage) -> dict[str, Repo]:
    repos: dict[str, Repo] = {}
    for e in storage.list(REPOS):
        m = _REPO_KEY.match(e.path[len(REPOS):])
        if not m:
            continue
        repo = repos.setdefault(m["repo"], Repo(m["repo"]))
        repo.keys.append(e.path)
        kind, rest = m["kind"], m["rest"]
        if kind == "layers" and (link := _LINK.match(rest)):
            repo.links["sha256:" + link["hex"]] = e.mtime
        elif kind == "manifests" and (rev := _REVISION.match(rest)):
            repo.revisions.add("sha256:" + rev["hex"])
        elif kind == "uploads":
            repo.newest_upload = max(repo.newest_upload, e.mtime)
    return repos


def scan_blobs(storage: Storage) -> dict[str, int]:
    out = {}
    for e in storage.list(BLOBS + "sha256/"):
        m = _BLOB.match(e.path[len(BLOBS):])
        if m:
            out["sha256:" + m["hex"]] = e.size
    return out


def manifest_refs(body: bytes, digest: str) -> set[str]:
    """Digests a manifest (image, index, artifact; OCI or Docker) points to.

    A manifest that is not a JSON object stops the run: marking less than it
    references could delete a blob in use.
    """
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise ValueError(f"manifest {digest} is not JSON; refusing to sweep") from e
    if not isinstance(doc, dict):
        raise ValueError(f"manifest {digest} is not a JSON object; refusing to sweep")
    refs: set[str] = set()
    descriptors: list[Any] = [doc.get("config"), doc.get("subject")]
    for key in ("layers", "manifests", "blobs"):
        descriptors += list(doc.get(key) or [])
    for d in descriptors:
        if isinstance(d, dict) and isinstance(d.get("digest"), str):
            refs.add(d["digest"])
    return refs


def mark(storage: Storage, repos: dict[str, Repo], now: float, grace: float) -> tuple[set[str], int]:
    """(live digests, how many are live only through the grace)."""
    manifests = sorted({d for r in repos.values() for d in r.revisions})
    live: set[str] = set(manifests)

    def refs(d: str) -> set[str]:
        body = storage.read(blob_path(d), MAX_MANIFEST + 1)
        if body is None:  # a revision whose data is gone: nothing readable to keep
            print(f"warning: manifest {d} has no data", file=sys.stderr)
            return set()
        return manifest_refs(body, d)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for found in pool.map(refs, manifests):
            live |= found
    cutoff = now - grace
    young = {d for r in repos.values() for d, t in r.links.items() if t >= cutoff} - live
    return live | young, len(young)


def plan(storage: Storage, *, now: float, grace: float) -> Plan:
    repos = scan_repositories(storage)
    blobs = scan_blobs(storage)
    live, young = mark(storage, repos, now, grace)
    dead = sorted(d for d in blobs if d not in live)
    cutoff = now - grace
    drop = sorted(
        r.name for r in repos.values()
        if not r.revisions and r.newest_upload < cutoff and all(t < cutoff for t in r.links.values())
    )
    return Plan(repos, blobs, live, dead, drop, young)


def _batches(items: list[str], n: int = 1000) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def sweep(storage: Storage, p: Plan, *, in_time: Callable[[], bool]) -> dict[str, int | bool]:
    """Delete what ``p`` found dead while ``in_time()``; counts of what went."""
    out: dict[str, int | bool] = {"blobsDeleted": 0, "bytesFreed": 0, "linksDeleted": 0,
                                  "repositoriesDeleted": 0, "complete": False}
    for batch in _batches(p.dead):
        if not in_time():
            return out
        storage.delete([blob_path(d) for d in batch])
        out["blobsDeleted"] += len(batch)
        out["bytesFreed"] += sum(p.blobs[d] for d in batch)
    dead, dropped = set(p.dead), set(p.drop_repos)
    for name in p.drop_repos:
        if not in_time():
            return out
        storage.delete(p.repos[name].keys)
        out["repositoriesDeleted"] += 1
    dangling = [
        f"{REPOS}{r.name}/_layers/sha256/{d.split(':', 1)[1]}/link"
        for r in p.repos.values() if r.name not in dropped for d in r.links if d in dead
    ]
    for batch in _batches(dangling):
        if not in_time():
            return out
        storage.delete(batch)
        out["linksDeleted"] += len(batch)
    out["complete"] = True
    return out


def window_fence(window: str, now: float) -> tuple[float | None, str]:
    """(seconds the sweep may still run, "") inside a usable window; (None, why) otherwise.

    An empty window means no fence: the operator guarantees no publishes run (DMCR
    scaled to zero, or the hook service's push tokens off)."""
    if not window.strip():
        return float("inf"), ""
    remaining = registry_token.read_only_remaining(window, now)
    if remaining is None:
        return None, f"now is outside the read-only window {window} (UTC)"
    start, end = (int(h) * 60 + int(m) for h, m in (x.strip().split(":") for x in window.split("-")))
    opened = (end - start) % 1440 * 60 - remaining
    if opened < TOKEN_FENCE:
        return None, (
            f"the read-only window {window} opened {opened} s ago; push tokens issued just before it "
            f"are valid for {TOKEN_FENCE} s: start GC at least {TOKEN_FENCE} s into the window"
        )
    return remaining - STOP_MARGIN, ""


def run(args: argparse.Namespace) -> int:
    rf = args.result_file
    window = args.window if args.window is not None else os.environ.get("AI_MODELS_REGISTRY_GC_WINDOW", "")
    started, clock = time.time(), time.monotonic()
    try:
        budget, why = window_fence(window, started)
    except ValueError as e:
        return fail(rf, "GarbageCollectionFailed", f"--window: {e}")
    if budget is None:
        return fail(rf, "OutsideReadOnlyWindow", why)
    try:
        with open(args.config) as f:
            storage = from_registry_config(yaml.safe_load(f) or {})
        with contextlib.closing(storage):
            p = plan(storage, now=started, grace=args.grace)
            counts: dict[str, Any] = {
                "repositories": len(p.repos),
                "manifests": len({d for r in p.repos.values() for d in r.revisions}),
                "blobs": len(p.blobs), "unreferenced": len(p.dead), "keptByGrace": p.young,
                "repositoriesUnused": len(p.drop_repos), "dryRun": bool(args.dry_run),
            }
            if not args.dry_run:
                counts |= sweep(storage, p, in_time=lambda: time.monotonic() - clock < budget)
    except (OSError, ValueError) as e:
        return fail(rf, "GarbageCollectionFailed", str(e)[:1000])
    counts["seconds"] = round(time.monotonic() - clock, 3)
    return finish(rf, {"gc": counts})
