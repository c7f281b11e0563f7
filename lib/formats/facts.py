"""What the format inspectors learn, and the protocol they follow.

The shared vocabulary of ``lib.formats``: ``FileFacts`` (what one file turned
out to be), the ``Inspector`` protocol every streaming parser implements, and
two helpers the parsers share (``total_size``, ``template_flags``). It lives
below the parsers (``gguf``, ``safetensors``) and the dispatcher that picks
one by file name (``inspect.inspector_for``), so the parsers never import the
dispatcher: the package stays free of import cycles (``.importlinter``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from lib.formats.errors import FormatError

FileKind = Literal["gguf", "safetensors", "json", "other"]


@dataclass
class FileFacts:
    """What one file turned out to be.

    ``gguf`` and ``safetensors`` hold the header facts of those formats (see
    ``lib.formats.gguf.GGUFHeader.facts`` and
    ``lib.formats.safetensors.SafetensorsHeader.facts``); ``content`` holds the
    bytes of small metadata files (``lib.formats.inspect.KEEP_NAMES``), else ``None``.
    """

    path: str
    size: int
    kind: FileKind
    gguf: dict[str, Any] | None = None
    safetensors: dict[str, Any] | None = None
    content: bytes | None = None

    def json(self) -> Any:
        """The kept content parsed as JSON, or ``None`` (not kept, or not JSON)."""
        if self.content is None:
            return None
        try:
            return json.loads(self.content)
        except ValueError:
            return None


class Inspector(Protocol):
    """Fed the chunks of one file in order, then finished once.

    Normally every chunk is fed and ``finish()`` validates against the bytes
    seen. A caller that already knows the file (a blob the registry holds)
    may stop feeding once ``wants_more`` is false and pass the true size to
    ``finish(size)``: the header checks then run against that size.
    """

    path: str

    @property
    def wants_more(self) -> bool:
        """Whether facts still depend on bytes not fed yet (a header, a kept config)."""
        ...

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk; raise ``FormatError`` as soon as the file is known bad."""
        ...

    def finish(self, size: int | None = None) -> FileFacts:
        """Validate against the total ``size`` (default: bytes fed); raise ``FormatError`` or return facts."""
        ...


def total_size(seen: int, size: int | None, path: str) -> int:
    """The file's total size for ``finish``: ``size`` if given (never less than what was fed)."""
    if size is None:
        return seen
    if size < seen:
        raise FormatError(f"{seen} bytes arrived but the file has {size}", path=path)
    return size


def template_flags(template: str) -> tuple[bool, bool]:
    """``(tools, thinking)`` from a chat template (Jinja, or Ollama's Go template).

    Tools: the template mentions ``tools`` / ``tool_call`` (``.Tools`` in Go
    templates); thinking: it emits ``<think>`` or uses Ollama's ``.Thinking``.
    """
    lower = template.lower()
    return ("tools" in lower or "tool_call" in lower), ("<think>" in lower or ".thinking" in lower)
