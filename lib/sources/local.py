"""A model on local disk: one file or a directory tree.

Local files are the one source read twice: once to hash, so blobs the
destination already holds are skipped (a re-run after a crash or a
re-publish sends no bytes), and once while uploading, from the page cache.
Every other source streams each byte once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from lib.api.types import Reason
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


def snapshot(path: str, *, prehash: bool = True) -> SourceSnapshot:
    files = [
        SourceFile(
            path=rel,
            open=_opener(p),
            size=p.stat().st_size,
            sha256=sha256_file(p) if prehash else None,
        )
        for rel, p in list_files(Path(path))
    ]
    return SourceSnapshot(resolved_type="Local", files=files)
