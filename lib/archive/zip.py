"""Walk a spooled zip: its central directory is vetted before a byte is inflated."""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterator

from lib.archive.limits import ArchiveError, Limits, check_expansion
from lib.archive.members import Guarded, Member, checked_member
from lib.archive.names import Names, member_path, skipped


def check_zip(zf: zipfile.ZipFile, limits: Limits, archive_bytes: int) -> list[tuple[zipfile.ZipInfo, str]]:
    """Vet the central directory before a byte is inflated; return the files to publish.

    ``archive_bytes`` is the zip's size on disk: the compressed side of the
    whole-archive expansion check, a number the archive cannot lie about.
    zipfile never inflates a member past its ``file_size``, so checking the
    central directory's sizes bounds what the walk will produce.
    """
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise ArchiveError(400, f"the archive has {len(infos)} members, over the {limits.max_members} limit")
    names = Names(limits)
    out: list[tuple[zipfile.ZipInfo, str]] = []
    for zi in infos:
        names.member()
        path = member_path(zi.filename, limits)
        mode = zi.external_attr >> 16
        if zi.create_system == 3 and stat.S_ISLNK(mode):
            raise ArchiveError(400, f"member {zi.filename!r} is a symbolic link: links are not accepted")
        if zi.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise ArchiveError(
                400, f"member {zi.filename!r}: only regular files and directories are accepted"
            )
        if zi.filename.endswith("/"):  # ZipInfo.is_dir() indexes filename[-1]: "" would raise
            if path is not None:
                names.add_dir(path)
            continue
        if path is None:
            raise ArchiveError(400, f"member {zi.filename!r}: a file cannot be the archive root")
        if zi.flag_bits & 0x1:
            raise ArchiveError(400, f"member {path!r} is encrypted")
        names.add_file(path, zi.file_size)
        check_expansion(
            zi.file_size, zi.compress_size, limits, what=f"member {path!r}", floor=limits.member_ratio_floor
        )
        if not skipped(path):
            out.append((zi, path))
    check_expansion(names.total, archive_bytes, limits)
    _check_zip_spans(zf, infos)
    return out


def _check_zip_spans(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    """Each entry's data must be its own: no sharing, no running into the central directory.

    Overlapping entries share compressed data to multiply it (a "better zip
    bomb"); a ``compress_size`` claimed larger than the data (which zipfile
    never notices: it stops at the end of the deflate stream) would defeat
    the per-member ratio check, and shows as data running past the entries.
    """
    spans = sorted((zi.header_offset, zi.header_offset + 30 + len(zi.orig_filename) + zi.compress_size)
                   for zi in infos)  # fmt: skip
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise ArchiveError(400, "the zip archive has overlapping entries: refusing a zip bomb")
    if spans and spans[-1][1] > zf.start_dir:  # type: ignore[attr-defined]
        raise ArchiveError(400, "a zip entry's sizes run past its data into the central directory")


def walk_zip(path: str, limits: Limits = Limits()) -> Iterator[Member]:
    """Yield the regular files of a spooled zip, in central-directory order."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:
        raise ArchiveError(400, f"not a readable zip archive: {e}") from e
    with zf:
        for zi, member_name in check_zip(zf, limits, os.path.getsize(path)):
            try:
                f = zf.open(zi)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError) as e:
                raise ArchiveError(400, f"member {member_name!r}: {e}") from e
            with f:
                member = checked_member(member_name, zi.file_size, Guarded(f, member_name))
                try:
                    yield member
                finally:
                    member.current = False
