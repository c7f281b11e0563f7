"""The streaming GGUF parser against files written by the real ``gguf`` writer, and lies."""

from __future__ import annotations

import struct
import time
import tracemalloc
from pathlib import Path

import gguf
import pytest

from devstack.models import (
    THINK_TEMPLATE,
    TOOLS_TEMPLATE,
    corrupt_bytes,
    gguf_kv_string,
    gguf_raw,
    gguf_set_tensor_offset,
    gguf_string,
    make_gguf,
    make_large_gguf,
)
from lib.formats import gguf as G
from lib.formats.errors import FormatError
from lib.formats.inspect import FileFacts, inspect_bytes, inspect_file, inspector_for

CHUNK_SIZES = [1, 7, 4096, 65536, None]  # None: the whole file at once


def feed_all(path: str, data: bytes, chunk: int | None) -> FileFacts:
    return inspect_bytes(path, data, chunk or max(1, len(data)))


def refuse(data: bytes, chunk: int = 65536) -> FormatError:
    """Feeding ``data`` then finishing must raise FormatError; returns it."""
    ins = inspector_for("m.gguf")
    with pytest.raises(FormatError) as exc:
        for i in range(0, len(data), chunk):
            ins.feed(data[i : i + chunk])
        ins.finish()
    assert "m.gguf" in str(exc.value)
    return exc.value


def refuse_on_feed(prefix: bytes) -> FormatError:
    """The error must come from ``feed`` itself, before the rest of the file arrives."""
    ins = inspector_for("m.gguf")
    with pytest.raises(FormatError) as exc:
        ins.feed(prefix)
    return exc.value


@pytest.fixture
def chat_gguf(tmp_path: Path) -> Path:
    return make_gguf(tmp_path / "m.gguf", chat_template=TOOLS_TEMPLATE, vocab=300, size_label="8B")


@pytest.mark.parametrize("chunk", CHUNK_SIZES, ids=lambda c: f"chunk{c}")
def test_same_facts_for_any_chunking(chat_gguf: Path, chunk: int | None) -> None:
    data = chat_gguf.read_bytes()
    reference = inspect_file(str(chat_gguf), "m.gguf")
    assert feed_all("m.gguf", data, chunk) == reference


def test_facts_match_the_writer_and_reader(chat_gguf: Path) -> None:
    facts = inspect_file(str(chat_gguf), "m.gguf")
    reader = gguf.GGUFReader(str(chat_gguf))
    g = facts.gguf
    assert facts.kind == "gguf" and facts.size == chat_gguf.stat().st_size
    assert g is not None
    assert g["architecture"] == "llama" and g["name"] == "tiny" and g["size_label"] == "8B"
    assert g["file_type"] == 15 and g["file_type_name"] == "Q4_K_M"
    assert g["context_length"] == 2048
    assert g["has_pooling"] is False and g["pooling_type"] is None
    assert g["has_chat_template"] and g["template_tools"] and not g["template_thinking"]
    assert g["chat_template"] == TOOLS_TEMPLATE
    assert g["vocab_size"] == 300
    assert g["tensor_count"] == len(reader.tensors) == 2
    assert g["parameter_count"] == sum(int(t.n_elements) for t in reader.tensors) == 128
    assert g["data_start"] == reader.data_offset
    assert g["version"] == 3 and g["alignment"] == 32


@pytest.mark.parametrize(
    ("file_type", "name"),
    [(0, "F32"), (1, "F16"), (7, "Q8_0"), (15, "Q4_K_M"), (18, "Q6_K"), (32, "BF16"), (None, ""), (999, "")],
)
def test_file_type_names(tmp_path: Path, file_type: int | None, name: str) -> None:
    facts = inspect_file(str(make_gguf(tmp_path / "m.gguf", file_type=file_type)))
    assert facts.gguf is not None and facts.gguf["file_type_name"] == name
    assert G.file_type_name(file_type) == name


def test_pooling_thinking_and_custom_alignment(tmp_path: Path) -> None:
    g = inspect_file(str(make_gguf(tmp_path / "e.gguf", arch="bert", pooling=True, context_length=512))).gguf
    assert g and g["has_pooling"] and g["pooling_type"] == 1 and g["context_length"] == 512
    g = inspect_file(str(make_gguf(tmp_path / "t.gguf", chat_template=THINK_TEMPLATE, alignment=64))).gguf
    assert g and g["template_thinking"] and not g["template_tools"] and g["alignment"] == 64
    assert g["data_start"] % 64 == 0


def test_large_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = make_large_gguf(tmp_path / "big.gguf", 48 << 20)
    chunk = 1 << 20
    ins = inspector_for("big.gguf")
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            while data := f.read(chunk):
                ins.feed(data)
                del data
        facts = ins.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert facts.size == path.stat().st_size
    assert facts.gguf and facts.gguf["parameter_count"] * 4 <= facts.size
    # One chunk read at a time plus parser state: far below the file size.
    assert peak < 3 * chunk, peak


# --- refusals ---------------------------------------------------------------


def test_bad_magic_fails_on_the_first_four_bytes() -> None:
    err = refuse_on_feed(b"GGML")
    assert "magic" in str(err)


@pytest.mark.parametrize("version", [1, 4, 0x03000000], ids=["v1", "v4", "big-endian"])
def test_unsupported_versions(version: int) -> None:
    err = refuse_on_feed(b"GGUF" + struct.pack("<I", version))
    assert f"version {version}" in str(err)


def test_counts_are_bounded_before_anything_else_is_read() -> None:
    assert "key count" in str(refuse_on_feed(gguf_raw(kv_count=1 << 60)))
    assert "tensor count" in str(refuse_on_feed(gguf_raw(tensor_count=1 << 60)))


def test_string_lengths_are_bounded_when_read() -> None:
    key_len = gguf_raw(kv_count=1, body=struct.pack("<Q", 1 << 40))
    assert "key length" in str(refuse_on_feed(key_len))
    value_len = gguf_raw(kv_count=1, body=gguf_string("general.name") + struct.pack("<IQ", 8, 1 << 40))
    assert "string length" in str(refuse_on_feed(value_len))
    array_len = gguf_raw(kv_count=1, body=gguf_string("a") + struct.pack("<IIQ", 9, 8, 1 << 60))
    assert "array length" in str(refuse_on_feed(array_len))
    name_len = gguf_raw(tensor_count=1, body=struct.pack("<Q", 1 << 40))
    assert "name length" in str(refuse_on_feed(name_len))


@pytest.mark.parametrize(
    ("body", "kv", "tensors", "message"),
    [
        (gguf_string("a") + struct.pack("<I", 13), 1, 0, "unknown metadata value type"),
        (gguf_string("a") + struct.pack("<IIQ", 9, 77, 1), 1, 0, "unknown array element type"),
        (gguf_string("general.alignment") + struct.pack("<II", 4, 48), 1, 0, "power of two"),
        (gguf_string("general.alignment") + struct.pack("<II", 4, 0), 1, 0, "power of two"),
        (gguf_string("t") + struct.pack("<I", 9), 0, 1, "dimensions"),
        (gguf_string("t") + struct.pack("<IQIQ", 1, 32, 1000, 0), 0, 1, "unknown tensor type"),
        (gguf_string("t") + struct.pack("<IQIQ", 1, 33, 2, 0), 0, 1, "multiple of the 32-element block"),
        (gguf_string("t") + struct.pack("<IQIQ", 1, 4, 0, 4), 0, 1, "not aligned"),
        (gguf_string("t") + struct.pack("<IQQIQ", 2, 1 << 62, 1 << 62, 0, 0), 0, 1, "impossibly large"),
    ],
    ids=[
        "value-type",
        "array-type",
        "alignment-48",
        "alignment-0",
        "n-dims",
        "tensor-type",
        "block",
        "unaligned",
        "huge-tensor",
    ],
)
def test_malformed_headers(body: bytes, kv: int, tensors: int, message: str) -> None:
    err = refuse_on_feed(gguf_raw(kv_count=kv, tensor_count=tensors, body=body))
    assert message in str(err)


def test_nested_arrays_are_bounded() -> None:
    body = gguf_string("a") + struct.pack("<I", 9)  # value type: array
    for _ in range(G.MAX_ARRAY_DEPTH + 1):
        body += struct.pack("<IQ", 9, 1)  # of arrays, one element
    err = refuse_on_feed(gguf_raw(kv_count=1, body=body + b"\0" * 64))
    assert "nested" in str(err)


def test_header_size_cap(chat_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(G, "MAX_HEADER", 1024)
    err = refuse(chat_gguf.read_bytes(), chunk=4096)
    assert "header is larger" in str(err)


def test_truncation_at_every_offset_is_refused(tmp_path: Path) -> None:
    data = make_gguf(tmp_path / "m.gguf", chat_template=TOOLS_TEMPLATE, vocab=20).read_bytes()
    started = time.monotonic()
    # Every cut inside the header and tensor data; the writer pads the last tensor to 32 bytes,
    # so cuts in that final padding still leave a complete file.
    last_tensor_end = len(data) - (-64 * 4 % 32)
    for cut in range(0, last_tensor_end):
        with pytest.raises(FormatError):
            ins = inspector_for("m.gguf")
            ins.feed(data[:cut])
            ins.finish()
    assert time.monotonic() - started < 20


@pytest.mark.parametrize(
    ("offset", "message"),
    [(1 << 20, "beyond the end"), (0, "overlaps"), (1 << 62, "beyond the end")],
    ids=["out-of-bounds", "overlap", "far-out"],
)
def test_lying_tensor_offsets(tmp_path: Path, offset: int, message: str) -> None:
    path = make_gguf(tmp_path / "m.gguf")
    gguf_set_tensor_offset(path, 1, offset)
    err = refuse(path.read_bytes())
    assert message in str(err)


def test_magic_corrupted_in_a_real_file(chat_gguf: Path, tmp_path: Path) -> None:
    bad = corrupt_bytes(chat_gguf, tmp_path / "bad.gguf", 0, b"GGUX")
    assert "magic" in str(refuse(bad.read_bytes()))


def test_hand_built_header_with_string_kv_parses() -> None:
    data = gguf_raw(
        kv_count=2,
        body=gguf_kv_string("general.architecture", "qwen2")
        + gguf_string("qwen2.context_length")
        + struct.pack("<IQ", 10, 32768),
    )
    facts = inspect_bytes("m.gguf", data, 3)
    assert facts.gguf and facts.gguf["architecture"] == "qwen2" and facts.gguf["context_length"] == 32768
    assert facts.gguf["tensor_count"] == 0


def test_errors_stick_after_the_first(tmp_path: Path) -> None:
    ins = inspector_for("m.gguf")
    with pytest.raises(FormatError):
        ins.feed(b"NOPE")
    ins.feed(b"more bytes")  # the pipeline may still push what it has in flight
    with pytest.raises(FormatError, match="magic"):
        ins.finish()
