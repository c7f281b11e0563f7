"""Walk an uploaded GGUF file or model archive as a stream of checked members.

Nothing here writes to disk or talks to a registry: a walker reads a byte
stream (or, for zip, a spooled file) and yields ``Member`` objects whose bytes
are read while the caller pushes them somewhere. Tar-based archives are
walked in stream mode, so a member's bytes can be read only until the walk
moves on; that is what lets a 100 GB ``.tar.zst`` be published while it
arrives without a local copy.

Every check that makes an upload hostile lives here and raises
``ArchiveError`` (an HTTP status and a message meant for the uploader):

* names: no absolute paths, ``..``, backslashes, drive letters, NULs or
  control characters, no two members with the same path, no file that is
  also a directory;
* types: only regular files and directories. Every link (symbolic or hard)
  is refused, not only those leaving the bundle: a streamed member cannot be
  re-read to resolve a link, and a model bundle never needs one (pack with
  ``tar -h`` / ``--dereference``). Devices, FIFOs and sparse files are
  refused;
* nested archives (by extension, and by magic bytes for files that are not a
  known weight format);
* bombs: caps on member count, per-member and total uncompressed size, and
  one expansion rule (``check_expansion``) for the decompressed/compressed
  ratio of the whole archive, tar stream and zip alike; zip also per member
  (both from the central directory, before a byte is inflated), and refuses
  overlapping entries and entries whose data runs into the central directory;
* tar headers: pax and GNU long-name headers are capped before tarfile
  reads them into memory.

Dot-files (``.gitattributes``, ``.DS_Store``) and macOS ``__MACOSX/``
resource forks are skipped, not published: they are never model files.
"""

from __future__ import annotations

import gzip
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import zstandard

from lib.api.types import Reason
from lib.errors import SourceError

CHUNK = 1 << 20
# Enough of a file's head to tell every format we check (tar: "ustar" at 257).
MAGIC_LEN = 262


class ArchiveKind(StrEnum):
    GGUF = "gguf"
    TAR = "tar"
    TAR_GZ = "tar.gz"
    TAR_ZST = "tar.zst"
    ZIP = "zip"


# Longest suffix first: ".tar.gz" must win over ".gz".
EXTENSIONS: tuple[tuple[str, ArchiveKind], ...] = (
    (".tar.zstd", ArchiveKind.TAR_ZST),
    (".tar.zst", ArchiveKind.TAR_ZST),
    (".tar.gz", ArchiveKind.TAR_GZ),
    (".tzst", ArchiveKind.TAR_ZST),
    (".tgz", ArchiveKind.TAR_GZ),
    (".gguf", ArchiveKind.GGUF),
    (".tar", ArchiveKind.TAR),
    (".zip", ArchiveKind.ZIP),
)
ACCEPTED = "a GGUF file (.gguf) or an archive (.tar, .tar.gz, .tgz, .zip, .tar.zst, .tar.zstd, .tzst)"

GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZIP_MAGIC = b"PK\x03\x04"
ZIP_EMPTY_MAGIC = b"PK\x05\x06"
GGUF_MAGIC = b"GGUF"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"
SEVENZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
RAR_MAGIC = b"Rar!\x1a\x07"

# Members with these suffixes are archives we would have to expand: refused.
NESTED_SUFFIXES = (
    ".tar", ".tgz", ".gz", ".zip", ".zst", ".zstd", ".tzst", ".xz", ".txz", ".bz2", ".tbz2", ".7z", ".rar",
)  # fmt: skip
# Weight formats whose bytes may look like an archive and are never expanded:
# Safetensors (its u64 header length can start with 1f 8b 08), GGUF, and
# PyTorch checkpoints, which are zip files by design.
OPAQUE_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt")


class ArchiveError(SourceError):
    """A refused upload: ``status`` is the HTTP answer, ``message`` says why."""

    def __init__(self, status: int, message: str):
        super().__init__(Reason.UPLOAD_REJECTED, message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Caps on what one upload may expand to (defaults fit the largest real models)."""

    max_members: int = 10_000
    max_member_bytes: int = 1 << 40  # 1 TiB
    max_total_bytes: int = 2 << 40  # 2 TiB
    # Decompressed bytes per compressed byte. Real weights compress ~1.1x,
    # tokenizer JSON ~4x; bombs 1000x and more. The whole archive is checked
    # once it expands past ``ratio_floor``; a zip member once it is larger than
    # ``member_ratio_floor`` (below that, zero-filled configs and placeholder
    # files may expand freely: the whole-archive rule bounds how many add up).
    max_ratio: float = 100.0
    ratio_floor: int = 64 << 20
    member_ratio_floor: int = 4 << 20
    max_path_bytes: int = 1024
    max_depth: int = 32
    max_header_bytes: int = 1 << 20  # pax / GNU long-name headers
    max_trailing_bytes: int = 16 << 20  # zero padding after the tar end marker


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


# ---------------------------------------------------------------- type detection


def kind_from_filename(filename: str | None) -> ArchiveKind:
    """The upload type from ``?filename=``; no name means a direct GGUF file."""
    if not filename:
        return ArchiveKind.GGUF
    lower = filename.lower()
    for suffix, kind in EXTENSIONS:
        if lower.endswith(suffix):
            return kind
    if lower.endswith(".safetensors"):
        raise ArchiveError(
            415,
            f"{filename!r}: a bare Safetensors file has no config.json; upload it in an archive "
            f"with the model's config.json. Accepted: {ACCEPTED}",
        )
    raise ArchiveError(415, f"{filename!r}: unsupported upload type. Accepted: {ACCEPTED}")


def magic_kind(head: bytes) -> ArchiveKind | None:
    """What the first bytes say the stream is (``None``: none of ours)."""
    if head.startswith(GGUF_MAGIC):
        return ArchiveKind.GGUF
    if head.startswith(GZIP_MAGIC):
        return ArchiveKind.TAR_GZ
    if head.startswith(ZSTD_MAGIC):
        return ArchiveKind.TAR_ZST
    if head.startswith((ZIP_MAGIC, ZIP_EMPTY_MAGIC)):
        return ArchiveKind.ZIP
    if head[257:262] == b"ustar":
        return ArchiveKind.TAR
    return None


def confirm_magic(kind: ArchiveKind, head: bytes, filename: str | None) -> None:
    """Refuse an upload whose bytes are not what its name says."""
    found = magic_kind(head)
    if found == kind:
        return
    what = f"{filename!r}" if filename else "an upload without ?filename="
    expected = "a GGUF file (magic 'GGUF')" if kind == ArchiveKind.GGUF else f"a {kind.value} archive"
    seen = f"{found.value} data" if found else "none of the accepted formats"
    hint = " (name archives with ?filename=NAME)" if kind == ArchiveKind.GGUF and found else ""
    raise ArchiveError(400, f"{what} should be {expected}, but its first bytes are {seen}{hint}")


# ---------------------------------------------------------------- member names

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


def _nested_archive(path: str, head: bytes) -> bool:
    lower = path.lower()
    if lower.endswith(NESTED_SUFFIXES):
        return True
    if lower.endswith(OPAQUE_SUFFIXES):
        return False
    return magic_kind(head) not in (None, ArchiveKind.GGUF) or head.startswith(
        (XZ_MAGIC, BZIP2_MAGIC, SEVENZIP_MAGIC, RAR_MAGIC)
    )


class _Names:
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


# ---------------------------------------------------------------- members


class Member:
    """One regular file of the upload, readable once while the walk stays on it."""

    def __init__(self, path: str, size: int | None, reader: Reader, head: bytes):
        self.path = path
        self.size = size
        self._reader = reader
        self._head = head
        self._opened = False
        self.current = True  # cleared by the walker when it moves on
        self.read_bytes = 0

    def chunks(self) -> Iterator[bytes]:
        """The member's bytes in chunks of at most ``CHUNK``; checks the size at the end."""
        if self._opened:
            raise ArchiveError(500, f"{self.path}: an uploaded file can be read only once")
        if not self.current:
            raise ArchiveError(500, f"{self.path}: read after the upload moved past it")
        self._opened = True
        if self._head:
            self.read_bytes += len(self._head)
            yield self._head
        while True:
            if not self.current:
                raise ArchiveError(500, f"{self.path}: read after the upload moved past it")
            want = CHUNK if self.size is None else min(CHUNK, self.size - self.read_bytes)
            if want <= 0:
                break
            b = self._reader.read(want)
            if not b:
                break
            self.read_bytes += len(b)
            yield b
        if self.size is not None and self.read_bytes != self.size:
            raise ArchiveError(
                400, f"{self.path}: the upload ended after {self.read_bytes} of {self.size} bytes"
            )


def _read_head(reader: Reader, n: int = MAGIC_LEN) -> bytes:
    buf = b""
    while len(buf) < n:
        b = reader.read(n - len(buf))
        if not b:
            break
        buf += b
    return buf


# ---------------------------------------------------------------- streams


class Counted:
    """Counts the bytes read through it (the compressed side of the ratio check)."""

    def __init__(self, raw: Reader):
        self.raw = raw
        self.count = 0

    def read(self, n: int = -1, /) -> bytes:
        b = self.raw.read(n)
        self.count += len(b)
        return b


def check_expansion(
    expanded: int, compressed: int, limits: Limits, *, what: str = "the archive", floor: int | None = None
) -> None:
    """Refuse ``what`` once it expands past ``floor`` bytes to more than ``max_ratio`` x its compressed size.

    The one bomb rule: a tar stream applies it to its running totals, a zip
    to its central directory's totals (and to each member with
    ``member_ratio_floor``), so both kinds answer the same limit the same way.
    """
    floor = limits.ratio_floor if floor is None else floor
    if expanded <= floor or expanded <= limits.max_ratio * max(compressed, 1):
        return
    raise ArchiveError(
        413,
        f"{what} expands {expanded // max(compressed, 1)}x ({expanded} bytes from {compressed}), over the "
        f"{limits.max_ratio:g}x limit for more than {floor} bytes: refusing a compression bomb. Model files "
        "do not compress this well; if these files are genuine, upload them uncompressed "
        "(a plain .tar, or zip -0)",
    )


class _Metered:
    """The decompressed stream, refusing bomb-like expansion as it grows."""

    def __init__(self, inner: Reader, raw: Counted, limits: Limits, compressed: bool):
        self.inner = inner
        self.raw = raw
        self.limits = limits
        self.compressed = compressed
        self.count = 0

    def read(self, n: int = -1, /) -> bytes:
        try:
            b = self.inner.read(CHUNK if n is None or n < 0 else n)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as e:
            if isinstance(e, ArchiveError):
                raise
            raise ArchiveError(400, f"the compressed stream is corrupt or cut short: {e}") from e
        self.count += len(b)
        if self.compressed:
            check_expansion(self.count, self.raw.count, self.limits)
        if self.count > self.limits.max_total_bytes + self.limits.max_trailing_bytes + (1 << 20):
            raise ArchiveError(
                413, f"the archive expands to more than the {self.limits.max_total_bytes}-byte limit"
            )
        return b


def decompressed(raw: Counted, kind: ArchiveKind, limits: Limits) -> _Metered:
    if kind == ArchiveKind.TAR_GZ:
        inner: Reader = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[call-overload]
    elif kind == ArchiveKind.TAR_ZST:
        inner = zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(
            raw,  # type: ignore[arg-type]  # any object with read() will do
            read_size=CHUNK,
            read_across_frames=True,
        )
    else:
        inner = raw
    return _Metered(inner, raw, limits, compressed=kind != ArchiveKind.TAR)


def _make_tarinfo(limits: Limits) -> type[tarfile.TarInfo]:
    """A TarInfo that refuses oversized pax/long-name headers before tarfile buffers them."""

    big_header_types = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                        tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)  # fmt: skip

    class CheckedTarInfo(tarfile.TarInfo):
        saw_end = False  # a zero block: the archive ended on purpose, not because the data did

        @classmethod
        def frombuf(cls, buf, encoding, errors):  # type: ignore[no-untyped-def]
            if len(buf) == tarfile.BLOCKSIZE and buf.count(0) == tarfile.BLOCKSIZE:
                cls.saw_end = True
            obj = super().frombuf(buf, encoding, errors)
            if obj.type in big_header_types and obj.size > limits.max_header_bytes:
                raise ArchiveError(400, f"a tar extended header of {obj.size} bytes is over the limit")
            if obj.type == tarfile.GNUTYPE_SPARSE:
                raise ArchiveError(400, f"member {obj.name!r}: sparse files are not accepted")
            return obj

    return CheckedTarInfo


def walk_tar(stream: Reader, kind: ArchiveKind, limits: Limits = Limits()) -> Iterator[Member]:
    """Yield the regular files of a (compressed) tar stream, in archive order.

    A yielded member is readable until the next one is requested. After the
    last member the rest of the stream is read: it may only be zero padding,
    and the compressed stream must end cleanly (gzip CRC, zstd frame).
    """
    raw = Counted(stream)
    data = decompressed(raw, kind, limits)
    names = _Names(limits)
    tarinfo = _make_tarinfo(limits)
    try:
        tf = tarfile.open(fileobj=data, mode="r|", bufsize=CHUNK, tarinfo=tarinfo)  # type: ignore[call-overload]
    except tarfile.TarError as e:
        raise ArchiveError(400, f"not a readable tar archive: {e}") from e
    with tf:
        while True:
            try:
                ti = tf.next()
            except tarfile.TarError as e:
                raise ArchiveError(400, f"the tar archive is corrupt or cut short: {e}") from e
            if ti is None:
                break
            names.member()
            path = member_path(ti.name, limits)
            if ti.issym() or ti.islnk():
                raise ArchiveError(
                    400,
                    f"member {ti.name!r} is a link to {ti.linkname!r}: links are not accepted "
                    "(pack real files, e.g. tar --dereference)",
                )
            if ti.isdir():
                if path is not None:
                    names.add_dir(path)
                continue
            if not ti.isreg() or ti.issparse():
                raise ArchiveError(
                    400, f"member {ti.name!r}: only regular files and directories are accepted"
                )
            if path is None:
                raise ArchiveError(400, f"member {ti.name!r}: a file cannot be the archive root")
            names.add_file(path, ti.size)
            if skipped(path):
                continue
            extracted = tf.extractfile(ti)
            assert extracted is not None  # regular file
            member = _member(path, ti.size, _Guarded(extracted, path))
            try:
                yield member
            finally:
                member.current = False
        if not tarinfo.saw_end:  # type: ignore[attr-defined]
            raise ArchiveError(400, "the tar archive is cut short: it has no end-of-archive marker")
        # tarfile has buffered past the end marker: drain through it, then the source.
        _drain_padding(tf.fileobj, limits)  # type: ignore[arg-type]


def _drain_padding(data: Reader, limits: Limits) -> None:
    seen = 0
    while True:
        b = data.read(CHUNK)
        if not b:
            return
        seen += len(b)
        if b.count(0) != len(b):
            raise ArchiveError(400, "there is data after the end of the tar archive (concatenated archives?)")
        if seen > limits.max_trailing_bytes:
            raise ArchiveError(
                400, f"more than {limits.max_trailing_bytes} bytes of padding after the archive"
            )


def walk_gguf(stream: Reader, path: str, size: int | None) -> Iterator[Member]:
    """A direct GGUF upload is a single member: the whole body."""
    head = _read_head(stream, 4)
    if head != GGUF_MAGIC:
        raise ArchiveError(400, "the upload is not a GGUF file (magic 'GGUF' missing)")
    member = Member(path, size, stream, head)
    try:
        yield member
    finally:
        member.current = False


# ---------------------------------------------------------------- zip


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
    names = _Names(limits)
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
                member = _member(member_name, zi.file_size, _Guarded(f, member_name))
                try:
                    yield member
                finally:
                    member.current = False


def _member(path: str, size: int, reader: _Guarded) -> Member:
    """A member ready to stream, after its first bytes proved it is not an archive itself."""
    head = _read_head(reader, min(MAGIC_LEN, size))
    if _nested_archive(path, head):
        raise ArchiveError(400, f"member {path!r} is an archive itself: nested archives are not accepted")
    return Member(path, size, reader, head)


class _Guarded:
    """A member's reader with library errors (bad CRC, truncation) turned into a 400."""

    def __init__(self, f: Reader, path: str):
        self.f = f
        self.path = path

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self.f.read(n)
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise ArchiveError(400, f"member {self.path!r} is corrupt or cut short: {e}") from e
