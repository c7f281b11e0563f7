"""Bugs the fuzzers and property tests found and that are reported, not yet fixed.

Both ``tests/test_hostile.py`` and the atheris targets tolerate exactly these
(so they stay useful for finding *new* ones); remove an entry once it is fixed.
"""

from __future__ import annotations

import traceback
from pathlib import Path

# (exception type, innermost function in lib/archive/): a corrupt zip escapes as a raw exception
# instead of ArchiveError(400).
KNOWN_ZIP_BUGS: frozenset[tuple[str, str]] = frozenset()  # all fixed; see git history

# Where a hook raised when a field had the wrong type (``true`` where an object, list or string
# belongs): the service answers 500 instead of 400. "dir/file.py:function".
KNOWN_500_SITES: frozenset[str] = frozenset()  # all fixed (typed status schemas in hooks/schemas.py)


def innermost(e: BaseException, filename: str) -> str:
    """Name of the innermost frame of ``e``'s traceback that lies in ``filename`` (a file, or a
    directory ending in ``/``)."""
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if f.filename.endswith(filename) or (filename.endswith("/") and filename in f.filename)]
    return frames[-1].name if frames else ""


def site_of(tb: object) -> str:
    """``dir/file.py:function`` of the innermost project frame (not the venv, not hooks/app.py)."""
    frames = [f for f in traceback.extract_tb(tb)  # type: ignore[arg-type]
              if "/.venv/" not in f.filename and "site-packages" not in f.filename
              and not f.filename.endswith("hooks/app.py")]
    if not frames:
        return ""
    f = frames[-1]
    return f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.name}"
