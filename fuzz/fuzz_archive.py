"""atheris target: the upload walker (``lib.archive``): tar, tar.gz, tar.zst and zip.

Input: one byte picks the kind, the rest is the upload. Every member is read
to the end (as the upload server does). Anything but ``ArchiveError`` is a
crash, except the reported bugs in ``fuzz/known_bugs.py``. Member paths that
come out must be safe relative paths.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile

import _common  # noqa: F401
import atheris

with atheris.instrument_imports(include=["lib"]):
    from fuzz.known_bugs import KNOWN_ZIP_BUGS, innermost
    from lib.archive import ArchiveError, ArchiveKind, walk_tar, walk_zip

KINDS = [ArchiveKind.TAR, ArchiveKind.TAR_GZ, ArchiveKind.TAR_ZST, ArchiveKind.ZIP]
SPOOL = os.path.join(tempfile.gettempdir(), f"fuzz-archive-{os.getpid()}.zip")


def one_input(data: bytes) -> None:
    if not data:
        return
    kind = KINDS[data[0] % len(KINDS)]
    body = data[1:]
    try:
        if kind == ArchiveKind.ZIP:
            with open(SPOOL, "wb") as f:
                f.write(body)
            walk = walk_zip(SPOOL)
        else:
            walk = walk_tar(io.BytesIO(body), kind)
        for member in walk:
            parts = member.path.split("/")
            assert ".." not in parts and not member.path.startswith("/") and "\\" not in member.path
            for _ in member.chunks():
                pass
    except ArchiveError:
        return
    except Exception as e:
        if (type(e).__name__, innermost(e, "lib/archive/")) in KNOWN_ZIP_BUGS:
            return
        raise


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
