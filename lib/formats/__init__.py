"""Format detection, header verification and metadata resolution.

- ``facts``: ``FileFacts`` and the ``Inspector`` protocol, the vocabulary the
  parsers share (below them, so nothing here imports in a cycle);
- ``inspect``: streaming per-file inspectors fed the bytes the pipeline moves
  anyway (``inspector_for(path)``, ``feed``, ``finish`` → ``FileFacts``);
- ``gguf`` / ``safetensors``: bounded incremental header parsers;
- ``layout``: which of GGUF / Safetensors / Diffusers a set of paths is, and
  which files are weights, configs, docs or left out;
- ``metadata``: ``resolve(layout, facts, hints)`` → ``status.resolved`` and
  the ModelPack-only fields;
- ``card``: model-card front matter, SPDX licenses, ISO 639 languages.

Nothing in this package does I/O: callers hand it names and bytes.
"""

from lib.formats.errors import FormatError
from lib.formats.facts import FileFacts, Inspector
from lib.formats.inspect import inspector_for
from lib.formats.layout import Layout, detect_layout
from lib.formats.metadata import Resolution, resolve

__all__ = [
    "FileFacts",
    "FormatError",
    "Inspector",
    "Layout",
    "Resolution",
    "detect_layout",
    "inspector_for",
    "resolve",
]
