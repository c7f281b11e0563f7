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

Layout (each module imports only those listed after it; ``.importlinter``
checks it): ``tar`` and ``zip`` walk their archives; ``members`` streams a
member once and refuses nested archives, ``names`` checks paths and the
whole walk's counts and sizes; ``kinds`` tells the upload type from its name
and first bytes; ``limits`` holds ``ArchiveError``, ``Limits`` and the bomb
rule. Import from ``lib.archive``: the submodules are its implementation.
"""

from __future__ import annotations

from lib.archive.kinds import (
    ACCEPTED,
    BZIP2_MAGIC,
    EXTENSIONS,
    GGUF_MAGIC,
    GZIP_MAGIC,
    MAGIC_LEN,
    NESTED_SUFFIXES,
    OPAQUE_SUFFIXES,
    RAR_MAGIC,
    SEVENZIP_MAGIC,
    XZ_MAGIC,
    ZIP_EMPTY_MAGIC,
    ZIP_MAGIC,
    ZSTD_MAGIC,
    ArchiveKind,
    confirm_magic,
    kind_from_filename,
    magic_kind,
)
from lib.archive.limits import CHUNK, ArchiveError, Limits, Reader, check_expansion
from lib.archive.members import Member, walk_gguf
from lib.archive.names import member_path, skipped
from lib.archive.tar import Counted, decompressed, walk_tar
from lib.archive.zip import check_zip, walk_zip

__all__ = [
    "ACCEPTED",
    "BZIP2_MAGIC",
    "CHUNK",
    "EXTENSIONS",
    "GGUF_MAGIC",
    "GZIP_MAGIC",
    "MAGIC_LEN",
    "NESTED_SUFFIXES",
    "OPAQUE_SUFFIXES",
    "RAR_MAGIC",
    "SEVENZIP_MAGIC",
    "XZ_MAGIC",
    "ZIP_EMPTY_MAGIC",
    "ZIP_MAGIC",
    "ZSTD_MAGIC",
    "ArchiveError",
    "ArchiveKind",
    "Counted",
    "Limits",
    "Member",
    "Reader",
    "check_expansion",
    "check_zip",
    "confirm_magic",
    "decompressed",
    "kind_from_filename",
    "magic_kind",
    "member_path",
    "skipped",
    "walk_gguf",
    "walk_tar",
    "walk_zip",
]
