"""Bugs the fuzzers and property tests found and that are reported, not yet fixed.

Both ``tests/test_hostile.py`` and the atheris targets tolerate exactly these
(so they stay useful for finding *new* ones); remove an entry once it is fixed.
"""

from __future__ import annotations

import traceback
from pathlib import Path

# (exception type, innermost function in lib/archive.py): a corrupt zip escapes as a raw exception
# instead of ArchiveError(400).
KNOWN_ZIP_BUGS = frozenset({
    ("IndexError", "check_zip"),  # empty member name: zi.is_dir() indexes filename[-1]
    ("NotImplementedError", "walk_zip"),  # zipfile.ZipFile(): "zip file version 16.5" is not caught
    ("OSError", "walk_zip"),  # zf.open(): negative header offset, EINVAL from seek, is not caught
})

# Where a hook raised when a field had the wrong type (``true`` where an object, list or string
# belongs): the service answers 500 instead of 400. "dir/file.py:function".
KNOWN_500_SITES = frozenset({
    "hooks/model.py:_customize",
    "hooks/model.py:_status",
    "hooks/model_status.py:_times",
    "hooks/model_status.py:request_time",
    "hooks/model_status.py:_terminations",
    "hooks/model_status.py:_job_condition",
    "hooks/catalogsource.py:_job_done",
    "hooks/catalogsource.py:reemit",
    "lib/delivery.py:_ready_artifact",
})


def innermost(e: BaseException, filename: str) -> str:
    """Name of the innermost frame of ``e``'s traceback that lies in ``filename``."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.endswith(filename)]
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
