"""Layout rules of the user guide: which format, which files are published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devstack.models import make_diffusers_tree, make_gguf_shards, make_safetensors_model
from lib.formats.errors import FormatError
from lib.formats.inspect import inspect_bytes, inspector_for
from lib.formats.layout import detect_layout


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_minilm_snapshot(minilm_dir: Path) -> None:
    layout = detect_layout(tree(minilm_dir))
    assert layout.format == "Safetensors"
    assert layout.weights == ["model.safetensors"]
    assert "config.json" in layout.configs and "modules.json" in layout.configs
    assert "1_Pooling/config.json" in layout.configs and "vocab.txt" in layout.configs
    assert layout.docs == ["README.md"]
    assert layout.excluded == [".gitattributes"]
    assert layout.role("model.safetensors") == "weight" and layout.role(".gitattributes") is None


def test_sharded_safetensors_model(tmp_path: Path) -> None:
    layout = detect_layout(tree(make_safetensors_model(tmp_path, shards=3)))
    assert layout.format == "Safetensors"
    assert layout.weights == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert "model.safetensors.index.json" in layout.configs


def test_diffusers_tree(tmp_path: Path) -> None:
    root = make_diffusers_tree(tmp_path)
    (root / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle twin")
    (root / "safety_checker").mkdir()
    (root / "safety_checker" / "pytorch_model.bin").write_bytes(b"only bin here")
    layout = detect_layout(tree(root))
    assert layout.format == "Diffusers"
    assert layout.weights == [
        "safety_checker/pytorch_model.bin",
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    assert "unet/diffusion_pytorch_model.bin" in layout.excluded
    assert {"model_index.json", "unet/config.json", "scheduler/scheduler_config.json"} <= set(layout.configs)


def test_gguf_shards_and_projector(tmp_path: Path) -> None:
    shards = [p.name for p in make_gguf_shards(tmp_path, shards=3)]
    layout = detect_layout([*shards, "mmproj-model-f16.gguf", "README.md", "LICENSE"])
    assert layout.format == "GGUF"
    assert layout.weights == sorted([*shards, "mmproj-model-f16.gguf"])
    assert layout.projectors == ["mmproj-model-f16.gguf"]
    assert layout.docs == ["LICENSE", "README.md"]


@pytest.mark.parametrize(
    ("paths", "expected_excluded"),
    [
        (
            ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"],
            ["flax_model.msgpack", "pytorch_model.bin", "tf_model.h5"],
        ),
        (
            ["config.json", "model.safetensors", "onnx/model.onnx", "onnx/config.json", "openvino/model.xml"],
            ["onnx/config.json", "onnx/model.onnx", "openvino/model.xml"],
        ),
        (
            ["config.json", "model.safetensors", "modeling_custom.py", "run.sh", "tool.exe", "lib.so"],
            ["lib.so", "modeling_custom.py", "run.sh", "tool.exe"],
        ),
        (
            [
                "config.json",
                "model.safetensors",
                "extra.zip",
                "more.tar.gz",
                "x.tzst",
                "pic.png",
                ".git/HEAD",
            ],
            [".git/HEAD", "extra.zip", "more.tar.gz", "pic.png", "x.tzst"],
        ),
        (["model.gguf", "model.safetensors.bak", "notes.bin"], ["model.safetensors.bak", "notes.bin"]),
    ],
    ids=["other-weights", "export-dirs", "code-and-executables", "archives-images-hidden", "gguf-extras"],
)
def test_files_outside_the_model_are_left_out(paths: list[str], expected_excluded: list[str]) -> None:
    layout = detect_layout(paths)
    assert layout.excluded == expected_excluded
    assert not set(layout.included) & set(expected_excluded)


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ([], "no files"),
        (["model.safetensors", "tokenizer.json"], "root config.json is missing"),
        (["config.json", "tokenizer.json"], "no *.safetensors"),
        (["config.json", "pytorch_model.bin"], "pickle"),
        (["model_index.json", "unet/config.json"], "model_index.json is present"),
        (["sub/config.json", "sub/model.safetensors"], "root config.json is missing"),
        (["config.json", "model.safetensors", "model.gguf"], "more than one format (GGUF, Safetensors)"),
        (["a-q4.gguf", "a-q8.gguf"], "several GGUF models"),
        (["m-00001-of-00003.gguf", "m-00003-of-00003.gguf"], "missing 00002"),
        (["m-00001-of-00002.gguf", "n-00002-of-00002.gguf"], "several GGUF models"),
        (["mmproj-f16.gguf"], "projector"),
        (["m.gguf", "mmproj-a.gguf", "mmproj-b.gguf"], "several vision projectors"),
        (["onnx/model.onnx", "onnx/config.json"], "no supported model format"),
        (["../escape.gguf"], "unsafe"),
        (["/abs/model.gguf"], "unsafe"),
        (["a//model.gguf"], "unsafe"),
        (["a\\model.gguf"], "unsafe"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_refusals_name_what_is_missing_or_ambiguous(paths: list[str], message: str) -> None:
    with pytest.raises(FormatError) as exc:
        detect_layout(paths)
    assert message in str(exc.value)


def test_diffusers_needs_component_weights() -> None:
    # A root-level single-file checkpoint next to model_index.json is not a Diffusers pipeline.
    with pytest.raises(FormatError, match="no \\*.safetensors or \\*.bin"):
        detect_layout(["model_index.json", "v1-5.safetensors"])


# --- the counting inspector for non-weight files ------------------------------


def test_metadata_files_are_kept_small_ones_only() -> None:
    facts = inspect_bytes("config.json", b'{"model_type": "bert"}', 3)
    assert facts.kind == "json" and facts.json() == {"model_type": "bert"}
    facts = inspect_bytes("sub/tokenizer_config.json", b"{}")
    assert facts.content == b"{}" and facts.path == "sub/tokenizer_config.json"
    facts = inspect_bytes("tokenizer.json", b'{"big": 1}')
    assert facts.kind == "json" and facts.content is None and facts.size == 10
    facts = inspect_bytes("vocab.txt", b"[PAD]")
    assert facts.kind == "other" and facts.content is None and facts.size == 5
    # A model card: only its first 64 KiB (the front matter) are kept, however long it is.
    card = b"---\nlicense: mit\n---\n" + b"x" * (200 << 10)
    facts = inspect_bytes("README.md", card, 4096)
    assert facts.content == card[: 64 << 10] and facts.size == len(card)


def test_oversized_metadata_is_counted_not_kept() -> None:
    ins = inspector_for("config.json")
    for _ in range(5):
        ins.feed(b" " * (1 << 20))
    facts = ins.finish()
    assert facts.content is None and facts.size == 5 << 20


def test_broken_config_json_is_refused() -> None:
    with pytest.raises(FormatError, match="config.json: is not valid JSON"):
        inspect_bytes("config.json", b"{not json")
    with pytest.raises(FormatError, match="model_index.json"):
        inspect_bytes("model_index.json", b"\xff\xfe")


# --- reading only what is needed (blobs the registry already holds) ------------


def _feed_until_satisfied(path: str, data: bytes, chunk: int = 7) -> tuple[Any, int]:
    ins = inspector_for(path)
    fed = 0
    while ins.wants_more and fed < len(data):
        ins.feed(data[fed : fed + chunk])
        fed += len(data[fed : fed + chunk])
    return ins, fed


@pytest.mark.parametrize("name", ["m.gguf", "m.safetensors"])
def test_header_only_reads_give_the_same_facts(tmp_path: Path, name: str) -> None:
    from devstack.models import make_gguf, make_safetensors_file

    path = make_gguf(tmp_path / name) if name.endswith(".gguf") else make_safetensors_file(tmp_path / name)
    data = path.read_bytes()
    ins, fed = _feed_until_satisfied(name, data)
    assert fed < len(data), "the weights themselves are not needed"
    assert ins.finish(len(data)) == inspect_bytes(name, data)
    ins, fed = _feed_until_satisfied(name, data)
    with pytest.raises(FormatError):
        ins.finish(fed)  # the blob is only as long as the header: data out of bounds
    ins, fed = _feed_until_satisfied(name, data)
    with pytest.raises(FormatError, match="arrived"):
        ins.finish(fed - 1)


def test_counting_inspector_wants_whole_metadata_files_only() -> None:
    ins = inspector_for("config.json")
    ins.feed(b'{"a":')
    assert ins.wants_more
    partial = ins.finish(100)
    assert partial.content is None and partial.size == 100, "never keep half a config"
    other = inspector_for("vocab.txt")
    assert not other.wants_more
    assert other.finish(42).size == 42
    card = inspector_for("README.md")
    card.feed(b"---\n" + b"x" * (64 << 10))
    assert not card.wants_more, "a present blob is read back only as far as the front matter"
    assert card.finish(1 << 20).content == (b"---\n" + b"x" * (64 << 10))[: 64 << 10]
