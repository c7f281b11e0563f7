"""A model on local disk: one file or a directory tree.

Each file is streamed once, hashed on the way. To make a re-publish (or a
rerun after a crash) send nothing that the registry already holds, the
pipeline needs a file's digest *before* it sends the file; re-reading the
file just to hash it costs ~20 % of a publish (sha256 runs at ~1.6 GB/s, the
registry ingests at ~0.3 GB/s). So digests computed while uploading are kept
in a small cache keyed by (device, inode, size, mtime): the same trust rsync
and git place in file metadata. A file the cache does not know is streamed
without a pre-pass; when no cache directory is writable, files are hashed
first (the safe, slower behaviour).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from lib.api.types import Reason
from lib.sources.adapter import SourceOptions
from lib.sources.base import SourceError, SourceFile, SourceSnapshot

CHUNK = 8 << 20


def _opener(path: Path):
    @contextlib.contextmanager
    def open_at(offset: int = 0) -> Iterator[Iterator[bytes]]:
        f = open(path, "rb")
        try:
            f.seek(offset)

            def chunks() -> Iterator[bytes]:
                while True:
                    b = f.read(CHUNK)
                    if not b:
                        return
                    yield b

            yield chunks()
        finally:
            f.close()

    return open_at


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(CHUNK):
            h.update(b)
    return h.hexdigest()


def cache_dir() -> Path | None:
    """Where digests are remembered: ``AI_MODELS_CACHE_DIR``, else the user cache; None if unwritable."""
    base = os.environ.get("AI_MODELS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ai-models"
    )
    d = Path(base) / "digests"
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=d, delete=True)
        probe.close()
    except OSError:
        return None
    return d


def _cache_key(path: Path) -> str:
    st = path.stat()
    ident = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{path.resolve()}"
    return hashlib.sha256(ident.encode()).hexdigest()


def cached_digest(cache: Path, path: Path) -> str | None:
    try:
        value = (cache / _cache_key(path)).read_text().strip()
    except OSError:
        return None
    return value if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else None


def remember_digest(cache: Path, path: Path) -> Callable[[str], None]:
    key = _cache_key(path)

    def remember(hexdigest: str) -> None:
        # Only if the file is unchanged since it was listed (same key), written atomically.
        try:
            if _cache_key(path) != key:
                return
            tmp = cache / f".{key}.{os.getpid()}"
            tmp.write_text(hexdigest)
            tmp.replace(cache / key)
        except OSError:
            pass

    return remember


def list_files(root: Path) -> list[tuple[str, Path]]:
    """Regular files under ``root`` as sorted ``(relative posix path, path)``.

    Symlinks are refused: a model directory that points outside itself could
    publish files the user never meant to hand over.
    """
    if root.is_symlink():
        raise SourceError(Reason.PUBLICATION_FAILED, f"{root}: symlinks are not accepted as a source")
    if root.is_file():
        return [(root.name, root)]
    if not root.is_dir():
        raise SourceError(Reason.UNSUPPORTED_SOURCE, f"{root}: no such file or directory")
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]):
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                raise SourceError(Reason.PUBLICATION_FAILED, f"{rel}: symlinks are not accepted")
            if not p.is_file():
                raise SourceError(Reason.PUBLICATION_FAILED, f"{rel}: not a regular file")
            out.append((rel, p))
    out.sort()
    return out


def snapshot(path: str, *, cache: Path | None | bool = True) -> SourceSnapshot:
    """The files under ``path``; ``cache=False`` hashes every file first instead of using the cache."""
    where = cache_dir() if cache is True else (cache or None)
    files = []
    for rel, p in list_files(Path(path)):
        sha: str | None
        remember: Callable[[str], None] | None
        if where is None:
            sha, remember = sha256_file(p), None
        else:
            sha, remember = cached_digest(where, p), remember_digest(where, p)
        size = p.stat().st_size
        files.append(SourceFile(path=rel, open=_opener(p), size=size, sha256=sha, remember=remember))
    return SourceSnapshot(resolved_type="Local", files=files)


def open_source(source: str, options: SourceOptions) -> SourceSnapshot:
    """The registry's adapter: a file or directory on the worker (what an upload or a user hands over)."""
    return snapshot(source)
