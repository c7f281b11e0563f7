"""What an upload is: its type from ``?filename=``, confirmed by its first bytes."""

from __future__ import annotations

from enum import StrEnum

from lib.archive.limits import ArchiveError

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
