"""Member names and the checks over the whole walk: paths, duplicates, counts, sizes."""

from __future__ import annotations

import re
from collections.abc import Iterator

from lib.archive.limits import ArchiveError, Limits

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def member_path(name: str, limits: Limits = Limits()) -> str | None:
    """The member's normalised relative path, ``None`` for the root itself.

    Raises for anything that could point outside the bundle or that a
    filesystem would read differently from us.
    """
    if "\\" in name:
        raise ArchiveError(400, f"member {name!r}: backslashes are not allowed in paths")
    if _CONTROL.search(name):
        raise ArchiveError(400, f"member {name!r}: control characters are not allowed in paths")
    if name.startswith("/") or _DRIVE.match(name):
        raise ArchiveError(400, f"member {name!r}: absolute paths are not allowed")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise ArchiveError(400, f"member {name!r}: the path is not valid UTF-8") from None
    if len(encoded) > limits.max_path_bytes:
        raise ArchiveError(
            400, f"member {name[:80]!r}...: the path is longer than {limits.max_path_bytes} bytes"
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(400, f"member {name!r}: '..' is not allowed in paths")
    if len(parts) > limits.max_depth:
        raise ArchiveError(400, f"member {name!r}: nested deeper than {limits.max_depth} directories")
    return "/".join(parts) or None


def skipped(path: str) -> bool:
    """Dot-files and macOS resource forks: never model files, never published."""
    parts = path.split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


class Names:
    """Duplicate and file-versus-directory checks over the whole walk."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.files: set[str] = set()
        self.dirs: set[str] = set()
        self.count = 0
        self.total = 0

    def _parents(self, path: str) -> Iterator[str]:
        parts = path.split("/")
        for i in range(1, len(parts)):
            yield "/".join(parts[:i])

    def member(self) -> None:
        self.count += 1
        if self.count > self.limits.max_members:
            raise ArchiveError(400, f"the archive has more than {self.limits.max_members} members")

    def add_dir(self, path: str) -> None:
        if path in self.files:
            raise ArchiveError(400, f"member {path!r} is both a file and a directory")
        self.dirs.add(path)

    def add_file(self, path: str, size: int) -> None:
        if path in self.files:
            raise ArchiveError(400, f"member {path!r} appears twice in the archive")
        if path in self.dirs:
            raise ArchiveError(400, f"member {path!r} is both a file and a directory")
        for parent in self._parents(path):
            if parent in self.files:
                raise ArchiveError(400, f"member {path!r} lies under {parent!r}, which is a file")
            self.dirs.add(parent)
        self.files.add(path)
        if size > self.limits.max_member_bytes:
            raise ArchiveError(
                413, f"member {path!r} is {size} bytes, over the {self.limits.max_member_bytes}-byte limit"
            )
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise ArchiveError(
                413, f"the archive expands to more than the {self.limits.max_total_bytes}-byte limit"
            )
