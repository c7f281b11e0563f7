"""Walk a tar, tar.gz or tar.zst stream as it arrives (stream mode: no local copy)."""

from __future__ import annotations

import gzip
import tarfile
import zlib
from collections.abc import Iterator

import zstandard

from lib.archive.kinds import ArchiveKind
from lib.archive.limits import CHUNK, ArchiveError, Limits, Reader, check_expansion
from lib.archive.members import Guarded, Member, checked_member
from lib.archive.names import Names, member_path, skipped


class Counted:
    """Counts the bytes read through it (the compressed side of the ratio check)."""

    def __init__(self, raw: Reader):
        self.raw = raw
        self.count = 0

    def read(self, n: int = -1, /) -> bytes:
        b = self.raw.read(n)
        self.count += len(b)
        return b


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
    names = Names(limits)
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
            member = checked_member(path, ti.size, Guarded(extracted, path))
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
