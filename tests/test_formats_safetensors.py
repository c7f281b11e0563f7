"""Streaming Safetensors verification against files from ``safetensors.numpy`` and lies."""

from __future__ import annotations

import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from devstack.models import make_safetensors_file, safetensors_variants, write_safetensors_raw
from lib.formats import safetensors as S
from lib.formats.errors import FormatError
from lib.formats.inspect import FileFacts, inspect_bytes, inspect_file, inspector_for


def refuse(path: Path, chunk: int = 65536) -> FormatError:
    data = path.read_bytes()
    ins = inspector_for(path.name)
    with pytest.raises(FormatError) as exc:
        for i in range(0, len(data), chunk):
            ins.feed(data[i : i + chunk])
        ins.finish()
    assert path.name in str(exc.value), "the message names the file"
    return exc.value


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    tensors = {
        "f16": np.ones((3, 5), dtype=np.float16),
        "f32": np.ones((7,), dtype=np.float32),
        "f64": np.ones((2, 2), dtype=np.float64),
        "i8": np.ones((9,), dtype=np.int8),
        "u8": np.ones((4, 1), dtype=np.uint8),
        "i64": np.ones((3,), dtype=np.int64),
        "bool": np.ones((5,), dtype=np.bool_),
        "empty": np.ones((0, 4), dtype=np.float32),
        "scalar": np.array(3.0, dtype=np.float32),
    }
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536, None], ids=lambda c: f"chunk{c}")
def test_same_facts_for_any_chunking(mixed: Path, chunk: int | None) -> None:
    data = mixed.read_bytes()
    assert inspect_bytes("mixed.safetensors", data, chunk or len(data)) == inspect_file(
        str(mixed), "mixed.safetensors"
    )


def test_facts_match_the_library(mixed: Path) -> None:
    facts: FileFacts = inspect_file(str(mixed), "mixed.safetensors")
    loaded = load_file(str(mixed))
    st = facts.safetensors
    assert facts.kind == "safetensors" and facts.size == mixed.stat().st_size
    assert st is not None
    assert st["tensor_count"] == len(loaded) == 9
    assert st["parameter_count"] == sum(int(t.size) for t in loaded.values())
    assert st["dtypes"] == {"BOOL": 5, "F16": 15, "F32": 8, "F64": 4, "I64": 3, "I8": 9, "U8": 4}
    assert st["metadata"] == {"format": "pt"}


def test_minilm_weights(minilm_dir: Path) -> None:
    facts = inspect_file(str(minilm_dir / "model.safetensors"), "model.safetensors")
    loaded = load_file(str(minilm_dir / "model.safetensors"))
    by_dtype: dict[str, int] = {}
    for t in loaded.values():
        key = {"float32": "F32", "int64": "I64"}[t.dtype.name]
        by_dtype[key] = by_dtype.get(key, 0) + int(t.size)
    assert facts.safetensors and facts.safetensors["parameter_count"] == sum(by_dtype.values())
    assert facts.safetensors["dtypes"] == by_dtype
    assert facts.safetensors["tensor_count"] == len(loaded)


@pytest.mark.parametrize(
    ("dtype", "shape", "nbytes", "ok"),
    [
        ("F4", [4], 2, True),
        ("F4", [3], 2, False),
        ("F6_E2M3", [4], 3, True),
        ("F8_E4M3", [3], 3, True),
        ("BF16", [2, 2], 8, True),
        ("C64", [1], 8, True),
        ("F16", [2], 2, False),
    ],
    ids=["f4", "f4-odd", "f6", "f8", "bf16", "c64", "f16-short"],
)
def test_dtype_sizes(tmp_path: Path, dtype: str, shape: list[int], nbytes: int, ok: bool) -> None:
    path = write_safetensors_raw(
        tmp_path / "d.safetensors",
        {"t": {"dtype": dtype, "shape": shape, "data_offsets": [0, nbytes]}},
        b"\0" * nbytes,
    )
    if ok:
        facts = inspect_file(str(path))
        assert facts.safetensors and facts.safetensors["dtypes"] == {dtype: int(np.prod(shape))}
    else:
        refuse(path)


VARIANT_MESSAGES = {
    "header_len_huge": "exceeds",
    "header_len_past_end": "truncated",
    "not_json": "not valid JSON",
    "not_object": "not a JSON object",
    "bad_utf8": "UTF-8",
    "out_of_bounds": "needs 8",
    "overlap": "overlaps",
    "gap": "gap",
    "size_mismatch": "needs 16",
    "trailing_data": "longer than its header",
    "bad_dtype": "unknown dtype",
    "negative_shape": "non-negative",
    "reversed_offsets": "begin <= end",
    "truncated": "truncated",
}


@pytest.mark.parametrize("variant", sorted(VARIANT_MESSAGES))
def test_every_lie_is_refused(tmp_path: Path, variant: str) -> None:
    path = safetensors_variants(tmp_path)[variant]
    started = time.monotonic()
    err = refuse(path)
    assert VARIANT_MESSAGES[variant] in str(err)
    assert time.monotonic() - started < 1


def test_data_past_the_described_end(tmp_path: Path) -> None:
    # Offsets that point past the data present: the file is shorter than the header says.
    path = write_safetensors_raw(
        tmp_path / "short.safetensors",
        {"a": {"dtype": "U8", "shape": [16], "data_offsets": [0, 16]}},
        b"\0" * 8,
    )
    assert "truncated" in str(refuse(path))


def test_huge_header_length_fails_on_the_first_eight_bytes() -> None:
    ins = inspector_for("x.safetensors")
    with pytest.raises(FormatError, match="exceeds"):
        ins.feed(struct.pack("<Q", 1 << 62))
    ins = inspector_for("x.safetensors")
    with pytest.raises(FormatError, match="exceeds"):
        ins.feed(struct.pack("<Q", S.MAX_HEADER + 1))


def test_trailing_data_fails_as_soon_as_it_arrives(tmp_path: Path) -> None:
    data = make_safetensors_file(tmp_path / "g.safetensors").read_bytes()
    ins = inspector_for("g.safetensors")
    ins.feed(data)
    with pytest.raises(FormatError, match="longer"):
        ins.feed(b"\0")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {}}', "twice"),
        (b'{"__metadata__": {"k": 1}}', "strings to strings"),
        (b'{"a": 5}', "not an object"),
        (b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0]}}', "data_offsets"),
        (b'{"a": {"dtype": "U8", "shape": [1.5], "data_offsets": [0, 1]}}', "shape"),
        (b'{"a": {"dtype": "U8", "shape": [true], "data_offsets": [0, 1]}}', "shape"),
        (b"  ", "not a JSON object"),
    ],
    ids=["duplicate", "metadata", "entry", "offsets", "float-shape", "bool-shape", "blank"],
)
def test_malformed_headers(tmp_path: Path, header: bytes, message: str) -> None:
    path = write_safetensors_raw(tmp_path / "h.safetensors", header, b"\0")
    assert message in str(refuse(path))


def test_truncation_at_every_offset(tmp_path: Path) -> None:
    data = make_safetensors_file(tmp_path / "g.safetensors").read_bytes()
    for cut in range(len(data)):
        ins = inspector_for("g.safetensors")
        with pytest.raises(FormatError):
            ins.feed(data[:cut])
            ins.finish()


def test_memory_is_bounded_by_the_header(tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    save_file({"w": np.zeros((4 << 20,), dtype=np.float32)}, str(path))  # 16 MiB of data
    ins = inspector_for("big.safetensors")
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                ins.feed(chunk)
                del chunk
        facts = ins.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert facts.safetensors and facts.safetensors["parameter_count"] == 4 << 20
    assert peak < 3 << 20, peak


def test_empty_model_file_is_valid(tmp_path: Path) -> None:
    path = write_safetensors_raw(tmp_path / "e.safetensors", {"__metadata__": {"format": "pt"}})
    facts = inspect_file(str(path))
    assert facts.safetensors and facts.safetensors["tensor_count"] == 0
