"""The node's content-addressed store: one complete, verified directory per artifact digest.

Layout under the cache directory:

* ``<digest>/``: a complete entry (``sha256:<hex>``); it appears by one
  ``rename`` of a staging directory whose files were verified and whose
  marker (``.ai-models-digest``, written last by ``materialize``) is in place,
  so an entry is complete or absent. Its mtime is its last use (LRU order
  survives a restart).
* ``.staging/``: downloads in progress; removed whole at start-up, so a
  download cut by a crash or restart leaves nothing behind.
* ``.trash/``: entries being removed (evicted entries are renamed here first,
  so a half-deleted entry is never visible under its digest).
* ``.targets/``: one record per mounted target (``{"target", "digest"}``), so
  a restarted plugin knows which entries are in use and never evicts them.

Thread-safe: bookkeeping under one lock; a per-digest lock makes concurrent
publishes of one digest share one download; pins keep entries that a publish
is working with from being evicted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from jobs.node_cache import mounts
from lib.pull import MARKER

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
STAGING, TRASH, TARGETS = ".staging", ".trash", ".targets"


class CacheFull(Exception):
    """The budget cannot hold the artifact: too large, or the rest of the budget is in use."""


@dataclass
class Entry:
    size: int
    last_used: float


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (what the entry costs the node's disk)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


class NodeCache:
    def __init__(
        self,
        root: Path,
        max_bytes: int = 0,
        *,
        on_change: Callable[[NodeCache], None] = lambda c: None,
        on_evict: Callable[[str, int], None] = lambda d, n: None,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes  # 0: no budget
        self._on_change, self._on_evict = on_change, on_evict
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._targets: dict[str, str] = {}  # target path -> digest
        self._pins: dict[str, int] = {}  # digest -> publishes working with it
        self._digest_locks: dict[str, tuple[threading.Lock, int]] = {}
        self._reserved = 0  # bytes promised to downloads in flight
        self._recover()

    # ------------------------------------------------------------------ start-up

    def _recover(self) -> None:
        """Discard partial work, index complete entries, re-read which targets still mount one."""
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (STAGING, TRASH):
            shutil.rmtree(self.root / d, ignore_errors=True)
        (self.root / STAGING).mkdir()
        (self.root / TRASH).mkdir()
        (self.root / TARGETS).mkdir(exist_ok=True)
        for child in self.root.iterdir():
            if not DIGEST_RE.fullmatch(child.name):
                continue
            try:
                complete = (child / MARKER).read_text().strip() == child.name
            except OSError:
                complete = False
            if complete:
                self._entries[child.name] = Entry(tree_size(child), child.stat().st_mtime)
            else:
                self._discard(child)
        points = mounts.mount_points()
        for rec in (self.root / TARGETS).iterdir():
            try:
                doc = json.loads(rec.read_text())
                target, digest = str(doc["target"]), str(doc["digest"])
            except (OSError, ValueError, KeyError, TypeError):
                rec.unlink(missing_ok=True)
                continue
            if digest in self._entries and os.path.realpath(target) in points:
                self._targets[target] = digest
            else:
                rec.unlink(missing_ok=True)
        self._on_change(self)

    def _discard(self, path: Path) -> None:
        dest = self.root / TRASH / f"{path.name}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return
        shutil.rmtree(dest, ignore_errors=True)

    # ------------------------------------------------------------------ state

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def entries(self) -> dict[str, Entry]:
        with self._lock:
            return dict(self._entries)

    def mounted(self) -> dict[str, str]:
        with self._lock:
            return dict(self._targets)

    def path(self, digest: str) -> Path:
        return self.root / digest

    def lookup(self, digest: str) -> Entry | None:
        with self._lock:
            return self._entries.get(digest)

    def target_digest(self, target: str) -> str | None:
        with self._lock:
            return self._targets.get(target)

    # ------------------------------------------------------------------ publishing

    @contextlib.contextmanager
    def use(self, digest: str) -> Iterator[None]:
        """Pin ``digest`` (never evicted meanwhile) and hold its lock: one download per digest."""
        with self._lock:
            self._pins[digest] = self._pins.get(digest, 0) + 1
            lock, n = self._digest_locks.get(digest, (threading.Lock(), 0))
            self._digest_locks[digest] = (lock, n + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                self._pins[digest] -= 1
                if not self._pins[digest]:
                    del self._pins[digest]
                lock, n = self._digest_locks[digest]
                if n == 1:
                    del self._digest_locks[digest]
                else:
                    self._digest_locks[digest] = (lock, n - 1)

    def reserve(self, digest: str, size: int) -> None:
        """Make room for ``size`` bytes, evicting least-recently-used entries no target mounts."""
        victims: list[tuple[str, int]] = []
        trashed: list[Path] = []
        with self._lock:
            if self.max_bytes:
                if size > self.max_bytes:
                    raise CacheFull(
                        f"{digest} needs {size} bytes, more than this node's whole model cache "
                        f"({self.max_bytes} bytes): raise the node cache budget or use a node with more disk"
                    )
                used = sum(e.size for e in self._entries.values()) + self._reserved
                busy = set(self._targets.values()) | set(self._pins)
                for d, e in sorted(self._entries.items(), key=lambda kv: kv[1].last_used):
                    if used + size <= self.max_bytes:
                        break
                    if d in busy:
                        continue
                    victims.append((d, e.size))
                    used -= e.size
                if used + size > self.max_bytes:
                    raise CacheFull(
                        f"{digest} needs {size} bytes and only {self.max_bytes - used} of the node's "
                        f"{self.max_bytes}-byte model cache can be freed: the rest is mounted by "
                        "running pods; the mount is retried when they stop"
                    )
                for d, _ in victims:
                    del self._entries[d]
                    trashed.append(self.root / TRASH / f"{d}-{time.monotonic_ns()}")
                    os.rename(self.path(d), trashed[-1])
            self._reserved += size
        for path in trashed:
            shutil.rmtree(path, ignore_errors=True)
        for d, n in victims:
            self._on_evict(d, n)
        if victims:
            self._on_change(self)

    def unreserve(self, size: int) -> None:
        with self._lock:
            self._reserved -= size

    def staging_dir(self, digest: str) -> Path:
        path = self.root / STAGING / f"{digest}-{time.monotonic_ns()}"
        path.mkdir()
        return path

    def discard_staging(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def commit(self, digest: str, staged: Path) -> Entry:
        """Move a verified staging directory into place as the entry for ``digest``."""
        os.chmod(staged, 0o755)
        entry = Entry(tree_size(staged), time.time())
        os.rename(staged, self.path(digest))
        with self._lock:
            self._entries[digest] = entry
        self._on_change(self)
        return entry

    def attach(self, target: str, digest: str) -> None:
        """Record that ``target`` mounts ``digest`` (kept on disk for a restart)."""
        rec = self._record(target)
        tmp = rec.with_name(rec.name + ".tmp")
        tmp.write_text(json.dumps({"target": target, "digest": digest}))
        os.replace(tmp, rec)
        with self._lock:
            self._targets[target] = digest
        self.touch(digest)
        self._on_change(self)

    def detach(self, target: str) -> str | None:
        with self._lock:
            digest = self._targets.pop(target, None)
        self._record(target).unlink(missing_ok=True)
        if digest:
            self.touch(digest)
        self._on_change(self)
        return digest

    def touch(self, digest: str) -> None:
        now = time.time()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return
            entry.last_used = now
        with contextlib.suppress(OSError):
            os.utime(self.path(digest), (now, now))

    def _record(self, target: str) -> Path:
        return self.root / TARGETS / (hashlib.sha256(target.encode()).hexdigest() + ".json")
