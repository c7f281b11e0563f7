"""Streaming inspectors: learn what a file is from the bytes that pass by.

The publish pipeline reads every source file exactly once, on its way into
the registry, and hands each chunk to the file's inspector as well. So an
inspector must never need the whole file: it buffers only what a header
needs (with hard caps), raises ``FormatError`` as soon as the bytes prove the
file bad (bad magic in the first 4 bytes, an absurd length as soon as it is
read), and checks what depends on the total size in ``finish()``.

``inspector_for(path)`` always returns an inspector: ``*.gguf`` and
``*.safetensors`` get a parser; other files a counter that keeps the content
of the small JSON/text files metadata resolution reads (``config.json``,
``model_index.json``, tokenizer and sentence-transformers configs, chat
templates), up to ``KEEP_CAP`` bytes.
"""

from __future__ import annotations

import json
import posixpath

from lib.formats.errors import FormatError
from lib.formats.facts import FileFacts, FileKind, Inspector, total_size

# Small files whose content metadata resolution reads. Larger ones are counted only.
KEEP_CAP = 4 << 20
KEEP_NAMES = frozenset(
    {
        "config.json",
        "model_index.json",
        "tokenizer_config.json",
        "modules.json",
        "config_sentence_transformers.json",
        "sentence_bert_config.json",
        "generation_config.json",
        "chat_template.json",
        "chat_template.jinja",
        "preprocessor_config.json",
        "processor_config.json",
        "model.safetensors.index.json",
        "template",  # Ollama's chat template layer, when an adapter names it so
        "params",
    }
)
# Files of which only the first bytes are read: a model card's YAML front
# matter (license, language) sits at the top of README.md.
KEEP_PREFIX = {"README.md": 64 << 10}
# Of the kept files, these must be valid JSON: a model whose config cannot be
# parsed cannot be loaded by any runtime, so we refuse it instead of shipping it.
STRICT_JSON = frozenset(
    {"config.json", "model_index.json", "modules.json", "config_sentence_transformers.json"}
)


class CountingInspector:
    """Counts bytes; keeps the content of small metadata files (``KEEP_NAMES``).

    Of ``KEEP_PREFIX`` files only the first bytes are kept (``content`` is
    then that prefix, or the whole file when it is shorter).
    """

    def __init__(self, path: str, *, keep: bool | None = None, cap: int = KEEP_CAP):
        self.path = path
        self.size = 0
        self._name = posixpath.basename(path)
        self._prefix = KEEP_PREFIX.get(self._name, 0) if keep is None else 0
        self._keep = (self._name in KEEP_NAMES or bool(self._prefix)) if keep is None else keep
        self._cap = self._prefix or cap
        self._buf: bytearray | None = bytearray() if self._keep else None

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._buf is not None:
            if self._prefix:
                self._buf += chunk[: self._prefix - len(self._buf)]
            elif len(self._buf) + len(chunk) > self._cap:
                self._buf = None  # too big to be a config we read: count it only
            else:
                self._buf += chunk

    @property
    def wants_more(self) -> bool:
        return self._buf is not None and not (self._prefix and len(self._buf) >= self._prefix)

    def finish(self, size: int | None = None) -> FileFacts:
        total = total_size(self.size, size, self.path)
        complete = total == self.size or (self._prefix and len(self._buf or b"") >= self._prefix)
        content = bytes(self._buf) if self._buf is not None and complete else None
        kind: FileKind = "json" if self._name.endswith(".json") else "other"
        if content is not None and self._name in STRICT_JSON:
            try:
                json.loads(content)
            except (ValueError, UnicodeDecodeError) as e:
                raise FormatError(f"is not valid JSON ({e})", path=self.path) from None
        return FileFacts(path=self.path, size=total, kind=kind, content=content)


def sniff(prefix: bytes) -> FileKind | None:
    """Guess a weight format from a file's first bytes (>= 9), for sources without file names.

    ``"gguf"`` for the GGUF magic; ``"safetensors"`` for a plausible header
    length followed by ``{``; ``None`` otherwise. A guess only: the inspector
    for the guessed name still verifies everything.
    """
    if prefix[:4] == b"GGUF":
        return "gguf"
    if len(prefix) >= 9:
        n = int.from_bytes(prefix[:8], "little")
        if 2 <= n <= 100_000_000 and prefix[8:9] == b"{":
            return "safetensors"
    return None


def inspector_for(path: str) -> Inspector:
    """The inspector for ``path`` (a '/'-separated relative path), chosen by its name."""
    # Imported here only to keep ``import lib.formats`` light: the gguf library pulls in numpy.
    # (No cycle: the parsers import their vocabulary from ``lib.formats.facts``, not from here.)
    from lib.formats.gguf import GGUFInspector
    from lib.formats.safetensors import SafetensorsInspector

    lower = path.lower()
    if lower.endswith(".gguf"):
        return GGUFInspector(path)
    if lower.endswith(".safetensors"):
        return SafetensorsInspector(path)
    return CountingInspector(path)


def inspect_bytes(path: str, data: bytes, chunk_size: int = 1 << 20) -> FileFacts:
    """Convenience for tests and small files: feed ``data`` in chunks and finish."""
    ins = inspector_for(path)
    for i in range(0, len(data), chunk_size):
        ins.feed(data[i : i + chunk_size])
    return ins.finish()


def inspect_file(fs_path: str, rel_path: str | None = None, chunk_size: int = 1 << 20) -> FileFacts:
    """Stream a local file through its inspector (tools, tests; the pipeline feeds its own chunks)."""
    ins = inspector_for(rel_path or posixpath.basename(fs_path))
    with open(fs_path, "rb") as f:
        while chunk := f.read(chunk_size):
            ins.feed(chunk)
    return ins.finish()
