"""Whatever bytes arrive, inspectors and resolvers answer with facts or FormatError, nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.models import TOOLS_TEMPLATE, make_gguf, make_safetensors_file
from lib.formats.errors import FormatError
from lib.formats.inspect import FileFacts, inspect_bytes, sniff
from lib.formats.layout import detect_layout
from lib.formats.metadata import resolve

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("fuzz")
    return {
        "m.gguf": make_gguf(d / "m.gguf", chat_template=TOOLS_TEMPLATE, vocab=8).read_bytes(),
        "m.safetensors": make_safetensors_file(d / "m.safetensors").read_bytes(),
    }


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    raw = bytearray(data)
    for pos, value in edits:
        raw[pos % len(raw)] = value
    return bytes(raw[:cut] if cut is not None else raw)


edits = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)


@pytest.mark.parametrize("name", ["m.gguf", "m.safetensors"])
@FUZZ
@given(edits=edits, cut=st.none() | st.integers(0, 4096), chunk=st.sampled_from([1, 5, 64, 4096]))
def test_mutated_files_give_facts_or_format_error(
    samples: dict[str, bytes], name: str, edits: list[tuple[int, int]], cut: int | None, chunk: int
) -> None:
    data = mutate(samples[name], edits, cut)
    try:
        facts = inspect_bytes(name, data, chunk)
    except FormatError:
        return
    assert facts.size == len(data)


@FUZZ
@given(st.binary(max_size=64))
def test_random_prefixes(data: bytes) -> None:
    for name in ("x.gguf", "x.safetensors"):
        try:
            inspect_bytes(name, data, 3)
        except FormatError:
            pass


def test_deeply_nested_safetensors_json_is_refused() -> None:
    header = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    data = len(header).to_bytes(8, "little") + header
    with pytest.raises(FormatError):
        inspect_bytes("x.safetensors", data)


def test_sniff(samples: dict[str, bytes]) -> None:
    assert sniff(samples["m.gguf"][:16]) == "gguf"
    assert sniff(samples["m.safetensors"][:16]) == "safetensors"
    assert sniff(b"PK\x03\x04" + b"\0" * 12) is None
    assert sniff((1 << 62).to_bytes(8, "little") + b"{") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
config_keys = st.sampled_from(
    [
        "architectures",
        "model_type",
        "max_position_embeddings",
        "n_positions",
        "torch_dtype",
        "text_config",
        "quantization_config",
        "id2label",
        "num_labels",
        "vision_config",
        "chat_template",
        "_class_name",
    ]
)


@FUZZ
@given(
    config=st.dictionaries(config_keys, json_values, max_size=6),
    tok=st.dictionaries(config_keys, json_values, max_size=3),
    hints=st.dictionaries(
        st.sampled_from(
            [
                "pipeline_tag",
                "library_name",
                "tags",
                "model_type",
                "file_type",
                "model_family",
                "chat_template",
            ]
        ),
        json_values,
        max_size=4,
    ),
)
def test_resolve_never_crashes_on_odd_configs(
    config: dict[str, Any], tok: dict[str, Any], hints: dict[str, Any]
) -> None:
    for paths in (
        ["config.json", "model.safetensors", "tokenizer_config.json"],
        ["model_index.json", "u/x.bin"],
    ):
        layout = detect_layout(paths)
        facts = {
            p: FileFacts(
                path=p,
                size=1,
                kind="json",
                content=json.dumps(config if "config" in p or "index" in p else tok).encode(),
            )
            for p in paths
            if p.endswith(".json")
        }
        res = resolve(layout, facts, hints)
        info = res.info
        assert info["format"] == layout.format
        for key in ("family", "architecture", "quantization"):
            assert isinstance(info.get(key, ""), str), key
        for key in ("parameterCount", "contextWindowTokens"):
            assert type(info.get(key, 0)) is int and info.get(key, 1) > 0, key
        assert all(isinstance(x, str) for x in info["supportedEndpointTypes"] + info["supportedFeatures"])
        assert isinstance(res.precision, str)
        json.dumps(dict(res.info))  # status must serialise


def test_fuzz_samples_are_valid(samples: dict[str, bytes], tmp_path: Path) -> None:
    for name, data in samples.items():
        assert inspect_bytes(name, data).size == len(data)
