"""GGUF header parsing, incremental and bounded.

The ``gguf`` library's ``GGUFReader`` memory-maps a whole file; we see a
GGUF only as a stream on its way to the registry. So this is a small
incremental parser: a generator that asks for "n bytes" or "skip n bytes"
and is driven by whatever chunks arrive. The ``gguf`` library supplies only
constants (value types, tensor types and their block sizes, file type names).

Layout (little-endian): magic ``GGUF``, version u32 (2 or 3), tensor_count
u64, kv_count u64, kv_count × (key string, value type u32, value), then
tensor_count × (name string, n_dims u32, n_dims × u64 dims, type u32,
offset u64); tensor data starts at the header end rounded up to
``general.alignment`` (default 32). Strings are u64 length + UTF-8 bytes;
arrays are element type u32 + count u64 + elements.

Hard bounds, checked the moment a length is read, so no untrusted number
ever sizes an allocation or a loop: see the ``MAX_*`` constants. Token
arrays (hundreds of thousands of strings) are skipped element by element
without being materialised; only scalars and short strings are kept.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import gguf as gguf_lib

from lib.formats.errors import FormatError
from lib.formats.facts import FileFacts, template_flags, total_size

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_KV = 1_000_000
MAX_TENSORS = 1_000_000
MAX_KEY = 65_535  # GGUF spec: keys are at most 65535 bytes
MAX_STRING = 16 << 20  # any single string value (chat templates are kilobytes)
MAX_TENSOR_NAME = 65_535
MAX_ARRAY = 1 << 26  # elements; real vocabularies are < 1 M
MAX_ARRAY_DEPTH = 4
MAX_DIMS = 8  # GGML itself uses 4
MAX_HEADER = 256 << 20  # everything before the tensor data
KEEP_STRING = 64 << 10  # strings kept in the facts (longer ones are skipped)
KEEP_TEMPLATE = 4 << 10  # chat template prefix kept in the facts
MAX_KEPT_KV = 4096
# Short string lists read into the facts (ModelPack capabilities.languages);
# other arrays (token lists) are only counted.
KEEP_LISTS = frozenset({"general.languages"})
KEEP_LIST_ITEMS = 256  # a longer list is counted, not kept
KEEP_LIST_ITEM = 64  # bytes; a longer item is skipped
DEFAULT_ALIGNMENT = 32

T = gguf_lib.GGUFValueType
_SCALARS: dict[int, tuple[str, int]] = {
    T.UINT8: ("<B", 1),
    T.INT8: ("<b", 1),
    T.UINT16: ("<H", 2),
    T.INT16: ("<h", 2),
    T.UINT32: ("<I", 4),
    T.INT32: ("<i", 4),
    T.FLOAT32: ("<f", 4),
    T.BOOL: ("<?", 1),
    T.UINT64: ("<Q", 8),
    T.INT64: ("<q", 8),
    T.FLOAT64: ("<d", 8),
}
_QUANT_SIZES: dict[int, tuple[int, int]] = {int(k): v for k, v in gguf_lib.GGML_QUANT_SIZES.items()}


def file_type_name(n: int | None) -> str:
    """``general.file_type`` number → llama.cpp's name (15 → ``Q4_K_M``); ``""`` if unknown."""
    if n is None:
        return ""
    try:
        name = gguf_lib.LlamaFileType(n).name
    except ValueError:
        return ""
    if name == "GUESSED":
        return ""
    for prefix in ("MOSTLY_", "ALL_"):
        name = name.removeprefix(prefix)
    return name


def tensor_type_name(n: int) -> str:
    try:
        return gguf_lib.GGMLQuantizationType(n).name
    except ValueError:
        return str(n)


@dataclass(frozen=True)
class ArrayInfo:
    """An array value: its element type and length; ``items`` only for ``KEEP_LISTS`` keys."""

    elem_type: int
    count: int
    items: tuple[str, ...] = ()


@dataclass
class GGUFHeader:
    version: int
    tensor_count: int
    kv: dict[str, Any] = field(default_factory=dict)
    chat_templates: dict[str, str] = field(default_factory=dict)  # key → full template
    alignment: int = DEFAULT_ALIGNMENT
    header_end: int = 0
    parameter_count: int = 0
    tensor_types: dict[str, int] = field(default_factory=dict)  # type name → elements
    offsets: array = field(default_factory=lambda: array("Q"))
    nbytes: array = field(default_factory=lambda: array("Q"))

    @property
    def data_start(self) -> int:
        return -(-self.header_end // self.alignment) * self.alignment

    def facts(self) -> dict[str, Any]:
        """The selected keys metadata resolution uses (JSON-friendly)."""
        arch = self.kv.get("general.architecture")
        arch = arch if isinstance(arch, str) else ""

        def arch_key(suffix: str) -> Any:
            return self.kv.get(f"{arch}.{suffix}") if arch else None

        template = self.chat_templates.get("tokenizer.chat_template", "")
        flags = template_flags("\n".join(self.chat_templates.values()))
        ft = self.kv.get("general.file_type")
        tokens = self.kv.get("tokenizer.ggml.tokens")
        langs = self.kv.get("general.languages")
        pooling = arch_key("pooling_type")
        return {
            "version": self.version,
            "architecture": arch,
            "name": _str(self.kv.get("general.name")),
            "license": _str(self.kv.get("general.license")),
            "languages": list(langs.items) if isinstance(langs, ArrayInfo) else [],
            "has_attention": arch_key("attention.head_count") is not None,
            "size_label": _str(self.kv.get("general.size_label")),
            "file_type": ft if isinstance(ft, int) else None,
            "file_type_name": file_type_name(ft) if isinstance(ft, int) else "",
            "context_length": _int(arch_key("context_length")),
            "pooling_type": _int(pooling),
            "has_pooling": pooling is not None,
            "has_vision": arch == "clip" or any(k.startswith("clip.") for k in self.kv),
            "chat_template": template[:KEEP_TEMPLATE],
            "has_chat_template": bool(self.chat_templates),
            "template_tools": flags[0],
            "template_thinking": flags[1],
            "tensor_count": self.tensor_count,
            "parameter_count": self.parameter_count,
            "tensor_types": dict(sorted(self.tensor_types.items())),
            "alignment": self.alignment,
            "data_start": self.data_start,
            "vocab_size": tokens.count if isinstance(tokens, ArrayInfo) else None,
            "split_count": _int(self.kv.get("split.count")),
            "split_no": _int(self.kv.get("split.no")),
        }


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


# A request from the parser to its driver: (n, keep). keep=True: send back
# exactly n bytes; keep=False: consume n bytes without buffering them.
Request = tuple[int, bool]
Parser = Generator[Request, bytes, GGUFHeader]


class _Fail(Exception):
    pass


def _u32(b: bytes) -> int:
    return int(struct.unpack("<I", b)[0])


def _u64(b: bytes) -> int:
    return int(struct.unpack("<Q", b)[0])


def _parse() -> Parser:
    """The header grammar; yields byte requests, returns the parsed header."""
    magic = yield (4, True)
    if magic != MAGIC:
        raise _Fail(f"not a GGUF file: magic is {magic!r}, expected {MAGIC!r}")
    version = _u32((yield (4, True)))
    if version not in VERSIONS:
        hint = " (big-endian GGUF is not supported)" if version >= 1 << 16 else ""
        raise _Fail(f"unsupported GGUF version {version}{hint}; versions 2 and 3 are supported")
    tensor_count = _u64((yield (8, True)))
    if tensor_count > MAX_TENSORS:
        raise _Fail(f"tensor count {tensor_count} exceeds the limit of {MAX_TENSORS}")
    kv_count = _u64((yield (8, True)))
    if kv_count > MAX_KV:
        raise _Fail(f"metadata key count {kv_count} exceeds the limit of {MAX_KV}")
    h = GGUFHeader(version=version, tensor_count=tensor_count)

    for _ in range(kv_count):
        klen = _u64((yield (8, True)))
        if klen > MAX_KEY:
            raise _Fail(f"metadata key length {klen} exceeds the limit of {MAX_KEY}")
        key = (yield (klen, True)).decode("utf-8", errors="replace")
        vtype = _u32((yield (4, True)))
        is_template = key.startswith("tokenizer.chat_template")
        value = yield from _value(
            vtype,
            keep_string=MAX_STRING if is_template else KEEP_STRING,
            depth=0,
            keep_items=KEEP_LIST_ITEMS if key in KEEP_LISTS else 0,
        )
        if is_template and isinstance(value, str):
            h.chat_templates[key] = value
        elif value is not None and (len(h.kv) < MAX_KEPT_KV or key in h.kv):
            h.kv[key] = value

    align = h.kv.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or isinstance(align, bool) or align <= 0 or align & (align - 1):
        raise _Fail(f"general.alignment must be a positive power of two, got {align!r}")
    h.alignment = align

    for i in range(tensor_count):
        nlen = _u64((yield (8, True)))
        if nlen > MAX_TENSOR_NAME:
            raise _Fail(f"tensor {i}: name length {nlen} exceeds the limit of {MAX_TENSOR_NAME}")
        yield (nlen, False)
        n_dims = _u32((yield (4, True)))
        if n_dims > MAX_DIMS:
            raise _Fail(f"tensor {i}: {n_dims} dimensions (limit {MAX_DIMS})")
        dims = struct.unpack(f"<{n_dims}Q", (yield (8 * n_dims, True)))
        ttype = _u32((yield (4, True)))
        offset = _u64((yield (8, True)))
        if ttype not in _QUANT_SIZES:
            raise _Fail(f"tensor {i}: unknown tensor type {ttype}")
        block, type_size = _QUANT_SIZES[ttype]
        n_elems = math.prod(dims)
        if dims and dims[0] % block:
            raise _Fail(
                f"tensor {i}: first dimension {dims[0]} is not a multiple of the {block}-element block"
            )
        nbytes = n_elems // block * type_size
        if nbytes >= 1 << 63 or offset >= 1 << 63:
            raise _Fail(f"tensor {i}: size or offset is impossibly large")
        if offset % h.alignment:
            raise _Fail(f"tensor {i}: data offset {offset} is not aligned to {h.alignment}")
        h.offsets.append(offset)
        h.nbytes.append(nbytes)
        h.parameter_count += n_elems
        tname = tensor_type_name(ttype)
        h.tensor_types[tname] = h.tensor_types.get(tname, 0) + n_elems
    return h


def _value(
    vtype: int, *, keep_string: int, depth: int, keep_items: int = 0
) -> Generator[Request, bytes, Any]:
    if vtype in _SCALARS:
        fmt, size = _SCALARS[vtype]
        return struct.unpack(fmt, (yield (size, True)))[0]
    if vtype == T.STRING:
        n = _u64((yield (8, True)))
        if n > MAX_STRING:
            raise _Fail(f"string length {n} exceeds the limit of {MAX_STRING}")
        if n <= keep_string:
            return (yield (n, True)).decode("utf-8", errors="replace")
        yield (n, False)
        return None
    if vtype == T.ARRAY:
        if depth >= MAX_ARRAY_DEPTH:
            raise _Fail(f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
        etype = _u32((yield (4, True)))
        count = _u64((yield (8, True)))
        if count > MAX_ARRAY:
            raise _Fail(f"array length {count} exceeds the limit of {MAX_ARRAY}")
        if etype in _SCALARS:
            yield (count * _SCALARS[etype][1], False)
        elif etype == T.STRING and 0 < count <= keep_items:
            items = []
            for _ in range(count):
                item = yield from _value(etype, keep_string=KEEP_LIST_ITEM, depth=depth + 1)
                if isinstance(item, str):
                    items.append(item)
            return ArrayInfo(etype, count, tuple(items))
        elif etype in (T.STRING, T.ARRAY):
            for _ in range(count):
                yield from _value(etype, keep_string=-1, depth=depth + 1)
        else:
            raise _Fail(f"unknown array element type {etype}")
        return ArrayInfo(etype, count)
    raise _Fail(f"unknown metadata value type {vtype}")


class GGUFInspector:
    """Drives ``_parse`` with the chunks that arrive; counts the tensor data."""

    def __init__(self, path: str):
        self.path = path
        self.size = 0
        self.header: GGUFHeader | None = None
        self._parser: Parser | None = _parse()
        self._want: Request = next(self._parser)
        self._skip_left = -1  # bytes still to skip for the current skip request
        self._buf = bytearray()  # the part of the current request received so far
        self._consumed = 0  # header bytes consumed so far (file offset)
        self._error: FormatError | None = None

    def _fail(self, message: str) -> FormatError:
        self._parser = None
        self._error = FormatError(message, path=self.path)
        return self._error

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._parser is None:
            return
        view = memoryview(chunk)
        try:
            while True:
                n, keep = self._want
                if keep:
                    # _buf only ever holds the start of the current request
                    if not self._buf and len(view) >= n:  # fast path: straight from the chunk
                        data = bytes(view[:n])
                        view = view[n:]
                    else:
                        take = min(n - len(self._buf), len(view))
                        self._buf += view[:take]
                        view = view[take:]
                        if len(self._buf) < n:
                            return
                        data = bytes(self._buf)
                        self._buf.clear()
                else:
                    if self._skip_left < 0:
                        self._skip_left = n
                    take = min(self._skip_left, len(view))
                    view = view[take:]
                    self._skip_left -= take
                    if self._skip_left:
                        self._check_header_cap(self._consumed + n - self._skip_left)
                        return
                    self._skip_left = -1
                    data = b""
                self._consumed += n
                self._check_header_cap(self._consumed)
                self._want = self._parser.send(data)
        except StopIteration as stop:
            self._finish_header(stop.value)
        except _Fail as e:
            raise self._fail(str(e)) from None

    def _check_header_cap(self, consumed: int) -> None:
        if consumed > MAX_HEADER:
            raise _Fail(f"GGUF header is larger than the {MAX_HEADER >> 20} MiB limit")

    def _finish_header(self, header: GGUFHeader) -> None:
        header.header_end = self._consumed
        self.header = header
        self._parser = None
        self._buf = bytearray()

    @property
    def wants_more(self) -> bool:
        return self.header is None and self._error is None

    def finish(self, size: int | None = None) -> FileFacts:
        if self._error is not None:
            raise self._error
        total = total_size(self.size, size, self.path)
        h = self.header
        if h is None:
            raise FormatError(
                f"file ends inside the GGUF header after {self.size} bytes; truncated?", path=self.path
            )
        data_size = total - h.data_start
        order = sorted(range(len(h.offsets)), key=h.offsets.__getitem__)
        end = 0
        for i in order:
            off, nb = h.offsets[i], h.nbytes[i]
            if off < end:
                raise FormatError(
                    f"tensor {i}'s data (offset {off}) overlaps another tensor's", path=self.path
                )
            end = off + nb
            if end > data_size:
                raise FormatError(
                    f"tensor {i}'s data (offset {off}, {nb} bytes) lies beyond the end of the file "
                    f"({max(data_size, 0)} data bytes); truncated?",
                    path=self.path,
                )
        return FileFacts(path=self.path, size=total, kind="gguf", gguf=h.facts())
