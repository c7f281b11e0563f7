"""Safetensors header verification, streaming.

Layout: u64 little-endian header length N, N bytes of UTF-8 JSON
``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}``,
then the data section; offsets are relative to byte 8 + N.

Rules enforced (the safetensors library's own, plus completeness):
- N ≤ ``MAX_HEADER`` (100 MB, the library's cap), checked from the first 8
  bytes before anything is buffered; the header must be a JSON object;
- every dtype is known and its size is exact for the shape
  (``end - begin == prod(shape) × bits / 8``);
- tensors sorted by offset start at 0, touch without gaps or overlaps, and
  the last one ends exactly where the file ends (checked in ``finish``; a file
  that grows past that end fails as soon as the extra byte arrives).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from lib.formats.errors import FormatError
from lib.formats.facts import FileFacts, total_size

MAX_HEADER = 100_000_000
MAX_TENSORS = 1_000_000

# Bits per element; sub-byte types must fill whole bytes per tensor.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "F4": 4,
}


@dataclass
class SafetensorsHeader:
    header_len: int
    data_len: int
    tensor_count: int
    parameter_count: int
    dtypes: dict[str, int] = field(default_factory=dict)  # dtype → elements
    metadata: dict[str, str] = field(default_factory=dict)

    def facts(self) -> dict[str, Any]:
        return {
            "tensor_count": self.tensor_count,
            "parameter_count": self.parameter_count,
            "dtypes": dict(sorted(self.dtypes.items())),
            "header_len": self.header_len,
            "data_len": self.data_len,
            "metadata": dict(list(sorted(self.metadata.items()))[:32]),
        }


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise FormatError(f"header names {k!r} twice")
        out[k] = v
    return out


def parse_header(raw: bytes, path: str) -> SafetensorsHeader:
    """Validate the JSON header (everything that does not need the file size)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(
            f"Safetensors header is not valid UTF-8 ({e.reason} at byte {e.start})", path=path
        ) from None
    if not text.lstrip().startswith("{"):
        raise FormatError("Safetensors header is not a JSON object", path=path)
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except FormatError as e:
        raise FormatError(f"Safetensors {e.message}", path=path) from None
    except ValueError as e:
        raise FormatError(f"Safetensors header is not valid JSON ({e})", path=path) from None
    except RecursionError:
        raise FormatError("Safetensors header JSON is nested too deeply", path=path) from None
    if not isinstance(obj, dict):
        raise FormatError("Safetensors header is not a JSON object", path=path)
    metadata = obj.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise FormatError("Safetensors __metadata__ must map strings to strings", path=path)
    if len(obj) > MAX_TENSORS:
        raise FormatError(f"Safetensors header lists {len(obj)} tensors (limit {MAX_TENSORS})", path=path)

    spans: list[tuple[int, int, str]] = []
    dtypes: dict[str, int] = {}
    params = 0
    for name, info in obj.items():
        where = f"tensor {name!r}"
        if not isinstance(info, dict):
            raise FormatError(f"{where}: entry is not an object", path=path)
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_BITS:
            raise FormatError(f"{where}: unknown dtype {dtype!r}", path=path)
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise FormatError(
                f"{where}: shape must be a list of non-negative integers, got {shape!r}", path=path
            )
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise FormatError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end", path=path)
        n = math.prod(shape)
        bits = n * DTYPE_BITS[dtype]
        if bits % 8:
            raise FormatError(f"{where}: {n} elements of {dtype} do not fill whole bytes", path=path)
        begin, end = offsets
        if end - begin != bits // 8:
            raise FormatError(
                f"{where}: data_offsets span {end - begin} bytes but {dtype} {shape} needs {bits // 8}",
                path=path,
            )
        spans.append((begin, end, name))
        dtypes[dtype] = dtypes.get(dtype, 0) + n
        params += n

    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin < pos:
            raise FormatError(
                f"tensor {name!r} overlaps the previous tensor (starts at {begin}, previous ends at {pos})",
                path=path,
            )
        if begin > pos:
            raise FormatError(
                f"gap in the data section before tensor {name!r} (bytes {pos}..{begin} unused)", path=path
            )
        pos = end
    return SafetensorsHeader(
        header_len=len(raw),
        data_len=pos,
        tensor_count=len(spans),
        parameter_count=params,
        dtypes=dtypes,
        metadata=metadata,
    )


class SafetensorsInspector:
    """Buffers the 8-byte length and the header only; counts the data."""

    def __init__(self, path: str):
        self.path = path
        self.size = 0
        self._buf = bytearray()
        self._header_len: int | None = None
        self.header: SafetensorsHeader | None = None

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.header is not None:
            self._check_not_longer()
            return
        self._buf += chunk
        if self._header_len is None and len(self._buf) >= 8:
            (n,) = struct.unpack_from("<Q", self._buf)
            if n > MAX_HEADER:
                raise FormatError(
                    f"Safetensors header length {n} exceeds the {MAX_HEADER}-byte limit", path=self.path
                )
            if n < 2:
                raise FormatError(
                    f"Safetensors header length {n} is too small for a JSON object", path=self.path
                )
            self._header_len = n
        if self._header_len is not None and len(self._buf) >= 8 + self._header_len:
            self.header = parse_header(bytes(self._buf[8 : 8 + self._header_len]), self.path)
            self._buf = bytearray()
            self._check_not_longer()

    def _check_not_longer(self) -> None:
        assert self.header is not None
        expected = 8 + self.header.header_len + self.header.data_len
        if self.size > expected:
            raise FormatError(
                f"file is longer than its header says ({expected} bytes expected; trailing data)",
                path=self.path,
            )

    @property
    def wants_more(self) -> bool:
        return self.header is None

    def finish(self, size: int | None = None) -> FileFacts:
        total = total_size(self.size, size, self.path)
        if self.header is None:
            need = 8 if self._header_len is None else 8 + self._header_len
            raise FormatError(
                f"file ends inside the Safetensors header ({self.size} bytes, "
                f"header needs {need}); truncated?",
                path=self.path,
            )
        expected = 8 + self.header.header_len + self.header.data_len
        if total != expected:
            raise FormatError(
                f"file has {total} bytes but its header describes {expected}; truncated?", path=self.path
            )
        return FileFacts(path=self.path, size=total, kind="safetensors", safetensors=self.header.facts())
