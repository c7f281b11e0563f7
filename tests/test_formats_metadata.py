"""Metadata resolution: the signal table of docs/formats.md, case by case, on real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devstack.models import (
    PLAIN_TEMPLATE,
    THINK_TEMPLATE,
    TOOLS_TEMPLATE,
    make_diffusers_tree,
    make_gguf,
    make_gguf_shards,
    make_safetensors_model,
)
from lib.formats.inspect import FileFacts, inspect_file
from lib.formats.layout import detect_layout
from lib.formats.metadata import Resolution, parse_param_size, resolve, summary


def resolve_dir(root: Path, hints: dict[str, Any] | None = None) -> Resolution:
    """Detect, inspect every included file, resolve: what the pipeline does."""
    paths = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    layout = detect_layout(paths)
    facts: dict[str, FileFacts] = {p: inspect_file(str(root / p), p) for p in layout.included}
    return resolve(layout, facts, hints or {})


# --- GGUF -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "endpoints", "features"),
    [
        ({}, ["TextGeneration"], []),
        ({"chat_template": PLAIN_TEMPLATE}, ["Chat", "TextGeneration"], []),
        ({"chat_template": TOOLS_TEMPLATE}, ["Chat", "TextGeneration"], ["ToolCalling"]),
        ({"chat_template": THINK_TEMPLATE}, ["Chat", "TextGeneration"], ["Thinking"]),
        ({"pooling": True, "arch": "bert"}, ["Embeddings"], []),
        ({"pooling": 4, "arch": "bert", "chat_template": PLAIN_TEMPLATE}, ["Rerank"], []),
    ],
    ids=["base", "chat", "tools", "thinking", "embeddings", "rerank"],
)
def test_gguf_endpoints(
    tmp_path: Path, kwargs: dict[str, Any], endpoints: list[str], features: list[str]
) -> None:
    make_gguf(tmp_path / "model.gguf", **kwargs)
    res = resolve_dir(tmp_path)
    assert res.info["supportedEndpointTypes"] == endpoints
    assert res.info["supportedFeatures"] == features


def test_gguf_fields(tmp_path: Path) -> None:
    make_gguf(
        tmp_path / "model.gguf", arch="qwen2", context_length=32768, file_type=7, n_tensors=3, tensor_elems=96
    )
    res = resolve_dir(tmp_path)
    assert res.info == {
        "format": "GGUF",
        "family": "qwen2",
        "architecture": "qwen2",
        "parameterCount": 3 * 96,
        "quantization": "Q8_0",
        "contextWindowTokens": 32768,
        "supportedEndpointTypes": ["TextGeneration"],
        "supportedFeatures": [],
    }
    assert not res.partial and res.missing == [] and res.precision == ""


def test_gguf_shards_sum_parameters(tmp_path: Path) -> None:
    make_gguf_shards(tmp_path, shards=3, tensor_elems=128)
    res = resolve_dir(tmp_path)
    assert res.info["parameterCount"] == 3 * 128
    # A plain F16 file is not quantized: its precision says it (model-spec: a technique, e.g. Q4_K_M).
    assert "quantization" not in res.info and res.precision == "float16"
    assert res.info["contextWindowTokens"] == 8192
    assert res.info["supportedEndpointTypes"] == ["Chat", "TextGeneration"]


def test_gguf_with_projector_is_vision(tmp_path: Path) -> None:
    make_gguf(tmp_path / "model.gguf", chat_template=PLAIN_TEMPLATE, n_tensors=2, tensor_elems=64)
    make_gguf(tmp_path / "mmproj-model-f16.gguf", arch="clip", context_length=None, n_tensors=5)
    res = resolve_dir(tmp_path)
    assert res.info["supportedEndpointTypes"] == ["Chat", "TextGeneration", "ImageToText"]
    assert res.info["supportedFeatures"] == ["VisionInput", "MultiModalInput"]
    assert res.info["parameterCount"] == 128  # the projector is not the language model
    assert res.info["architecture"] == "llama"


def test_ollama_hints_fill_gaps(tmp_path: Path) -> None:
    make_gguf(tmp_path / "model.gguf", file_type=None, context_length=None, n_tensors=0)
    hints = {
        "model_family": "llama",
        "file_type": "Q4_K_M",
        "model_type": "8.0B",
        "chat_template": TOOLS_TEMPLATE,
    }
    res = resolve_dir(tmp_path, hints)
    assert res.info["quantization"] == "Q4_K_M"
    assert res.info["parameterCount"] == 8_000_000_000
    assert res.info["supportedEndpointTypes"] == ["Chat", "TextGeneration"]
    assert res.info["supportedFeatures"] == ["ToolCalling"]
    assert res.partial and res.missing == ["contextWindowTokens"]
    assert "contextWindowTokens" in summary(res)


def test_header_beats_hints(tmp_path: Path) -> None:
    make_gguf(tmp_path / "model.gguf", file_type=15)
    res = resolve_dir(tmp_path, {"file_type": "Q8_0", "model_family": "other", "model_type": "70B"})
    assert res.info["quantization"] == "Q4_K_M" and res.info["family"] == "llama"
    assert res.info["parameterCount"] == 128


# --- Safetensors ------------------------------------------------------------


def test_minilm_is_a_bert_embedding_model(minilm_dir: Path) -> None:
    res = resolve_dir(minilm_dir)
    config = json.loads((minilm_dir / "config.json").read_text())
    assert res.info["format"] == "Safetensors"
    assert res.info["family"] == config["model_type"] == "bert"
    assert res.info["architecture"] == config["architectures"][0] == "BertModel"
    assert res.info["contextWindowTokens"] == config["max_position_embeddings"]
    assert res.info["supportedEndpointTypes"] == ["Embeddings"]
    assert res.info["supportedFeatures"] == []
    assert res.info["parameterCount"] > 20_000_000
    assert "torch_dtype" not in config and res.precision == "float32"  # from the F32 weights
    assert not res.partial
    # ModelPack-only fields: the kind of network (modctl: transformers_version), the card's front matter.
    assert res.architecture == "transformer"
    assert res.licenses == ["Apache-2.0"] and res.languages == ["en"]


@pytest.mark.parametrize(
    ("kwargs", "hints", "endpoints", "features"),
    [
        ({}, {}, ["TextGeneration"], []),
        ({"chat_template": TOOLS_TEMPLATE}, {}, ["Chat", "TextGeneration"], ["ToolCalling"]),
        ({"chat_template": THINK_TEMPLATE}, {}, ["Chat", "TextGeneration"], ["Thinking"]),
        ({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, {}, ["TextGeneration"], []),
        ({"architectures": ["BertModel"], "model_type": "bert"}, {}, ["Embeddings"], []),
        (
            {"architectures": ["MistralModel"], "model_type": "mistral"},
            {"pipeline_tag": "text-generation"},
            ["TextGeneration"],
            [],
        ),
        ({"architectures": ["LlamaForCausalLM"], "sentence_transformers": True}, {}, ["Embeddings"], []),
        (
            {
                "architectures": ["XLMRobertaForSequenceClassification"],
                "model_type": "xlm-roberta",
                "extra_config": {"id2label": {"0": "LABEL_0"}},
            },
            {},
            ["Rerank"],
            [],
        ),
        (
            {"architectures": ["Qwen2VLForConditionalGeneration"], "extra_config": {"vision_config": {}}},
            {},
            ["Chat", "ImageToText"],
            ["VisionInput", "MultiModalInput"],
        ),
        (
            {"architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper"},
            {},
            ["SpeechToText"],
            ["AudioInput"],
        ),
        ({"architectures": ["T5ForConditionalGeneration"], "model_type": "t5"}, {}, ["TextGeneration"], []),
        ({"architectures": ["NewThing"]}, {"library_name": "sentence-transformers"}, ["Embeddings"], []),
        ({"architectures": ["NewThing"]}, {"pipeline_tag": "text-ranking"}, ["Rerank"], []),
        (
            {"architectures": ["NewThing"]},
            {"pipeline_tag": "image-text-to-text"},
            ["Chat", "ImageToText"],
            ["VisionInput", "MultiModalInput"],
        ),
    ],
    ids=[
        "causal-lm",
        "chat-tools",
        "chat-think",
        "lm-head",
        "bert-model",
        "hint-beats-suffix",
        "sentence-transformers",
        "rerank-one-label",
        "vlm",
        "whisper",
        "t5",
        "hint-library",
        "hint-rerank",
        "hint-vlm",
    ],
)
def test_safetensors_endpoints(
    tmp_path: Path, kwargs: dict[str, Any], hints: dict[str, Any], endpoints: list[str], features: list[str]
) -> None:
    make_safetensors_model(tmp_path, **kwargs)
    res = resolve_dir(tmp_path, hints)
    assert res.info["supportedEndpointTypes"] == endpoints
    assert res.info["supportedFeatures"] == features


def test_chat_template_from_jinja_file(tmp_path: Path) -> None:
    root = make_safetensors_model(tmp_path)
    (root / "chat_template.jinja").write_text(TOOLS_TEMPLATE)
    res = resolve_dir(root)
    assert res.info["supportedEndpointTypes"] == ["Chat", "TextGeneration"]
    assert res.info["supportedFeatures"] == ["ToolCalling"]


def test_safetensors_fields(tmp_path: Path) -> None:
    make_safetensors_model(
        tmp_path,
        shards=2,
        max_position_embeddings=None,
        torch_dtype="bfloat16",
        extra_config={"n_positions": 1024, "quantization_config": {"quant_method": "gptq", "bits": 4}},
    )
    res = resolve_dir(tmp_path)
    assert res.info["family"] == "llama" and res.info["architecture"] == "LlamaForCausalLM"
    assert res.info["contextWindowTokens"] == 1024
    assert res.info["quantization"] == "gptq"  # the technique, as model-spec names it
    assert res.info["parameterCount"] == 2 * 2 * 64  # two shards × two 8×8 tensors
    assert res.precision == "float16"  # what the tensors hold; torch_dtype only without weight facts


def test_unknown_architecture_is_partial(tmp_path: Path) -> None:
    make_safetensors_model(
        tmp_path, architectures=None, model_type=None, max_position_embeddings=None, torch_dtype=None
    )
    res = resolve_dir(tmp_path)
    assert res.partial
    assert res.missing == ["family", "architecture", "contextWindowTokens", "supportedEndpointTypes"]
    assert res.precision == "float16"  # from the weights' dtypes
    assert "family" not in res.info and res.info["parameterCount"] == 128


# --- Diffusers --------------------------------------------------------------


def test_diffusers(tmp_path: Path) -> None:
    make_diffusers_tree(tmp_path, class_name="StableDiffusionXLPipeline")
    res = resolve_dir(tmp_path)
    assert res.info["format"] == "Diffusers"
    assert res.info["architecture"] == "StableDiffusionXLPipeline"
    assert res.info["family"] == "stable-diffusion-xl"
    assert res.info["supportedEndpointTypes"] == ["ImageGeneration"]
    assert res.info["supportedFeatures"] == ["ImageOutput"]
    assert res.info["parameterCount"] == 3 * 2 * 64
    assert "contextWindowTokens" not in res.info and not res.partial
    assert res.precision == "float16"


def test_diffusers_variants_counted_once_and_bin_weights_unknown(tmp_path: Path) -> None:
    root = make_diffusers_tree(tmp_path, class_name="FluxPipeline")
    (root / "vae" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(
        (root / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    )
    res = resolve_dir(root)
    assert res.info["family"] == "flux" and res.info["parameterCount"] == 3 * 2 * 64
    (root / "extra").mkdir()
    (root / "extra" / "pytorch_model.bin").write_bytes(b"pickle")
    res = resolve_dir(root)
    assert "parameterCount" not in res.info and res.missing == ["parameterCount"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8.2B", 8_200_000_000),
        ("567M", 567_000_000),
        ("7b", 7_000_000_000),
        ("1.5T", 1_500_000_000_000),
        ("22.7m", 22_700_000),
        ("", None),
        ("8B-instruct", None),
        (None, None),
        (8, None),
    ],
)
def test_parse_param_size(text: Any, value: int | None) -> None:
    assert parse_param_size(text) == value


@pytest.mark.parametrize(
    ("template", "features"),
    [
        ("{{ if .Tools }}{{ range .Tools }}{{ . }}{{ end }}{{ end }}{{ .Prompt }}", ["ToolCalling"]),
        ("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Prompt }}", ["Thinking"]),
        ("{{ .System }} {{ .Prompt }}", []),
    ],
    ids=["ollama-tools", "ollama-thinking", "ollama-plain"],
)
def test_ollama_template_file(tmp_path: Path, template: str, features: list[str]) -> None:
    """An Ollama model: GGUF without a template in its header, the template as its own layer."""
    make_gguf(tmp_path / "model.gguf")
    (tmp_path / "template").write_text(template)
    res = resolve_dir(tmp_path)
    assert res.info["supportedEndpointTypes"] == ["Chat", "TextGeneration"]
    assert res.info["supportedFeatures"] == features


def test_resolution_unpacks_as_info_and_partial(tmp_path: Path) -> None:
    make_gguf(tmp_path / "model.gguf", context_length=None)
    res = resolve_dir(tmp_path)
    info, partial = res
    assert info is res.info and partial is True and res.missing == ["contextWindowTokens"]


# --- licenses and languages (lib/formats/card.py) -----------------------------

@pytest.mark.parametrize(
    ("license", "name", "expected"),
    [
        ("apache-2.0", "", ["Apache-2.0"]),
        ("mit", "", ["MIT"]),
        (["cc-by-nc-4.0", "MIT"], "", ["CC-BY-NC-4.0", "MIT"]),
        ("odc-by", "", ["ODC-By-1.0"]),
        ("llama3.1", "", ["LicenseRef-llama3.1"]),
        ("openrail++", "", ["LicenseRef-openrail"]),
        ("other", "my license", ["LicenseRef-my-license"]),
        ("other", "", []),
        ("unknown", "", []),
        ("MIT OR apache-2.0", "", ["MIT OR Apache-2.0"]),  # a GGUF general.license expression
        ("(gpl-2.0+ WITH x)", "", ["(GPL-2.0+ WITH LicenseRef-x)"]),
        (7, "", []),
    ],
)
def test_licenses_are_spdx_expressions(license: Any, name: str, expected: list[str]) -> None:
    """model-spec v0.0.7: descriptor.licenses are SPDX expressions; Hub ids outside SPDX become LicenseRef-."""
    from lib.formats.card import spdx_licenses

    assert spdx_licenses(license, name) == expected


def test_languages_are_two_letter_codes() -> None:
    from lib.formats.card import iso_languages

    assert iso_languages("en") == ["en"]
    assert iso_languages(["en", "EN", "fr-CA", "zh_Hans", "multilingual", "eng", 3]) == ["en", "fr", "zh"]


def test_model_card_front_matter(tmp_path: Path) -> None:
    from lib.formats.card import front_matter

    assert front_matter(b"---\nlicense: mit\nlanguage:\n- en\n- de\n---\n# Model\n") == {
        "license": "mit", "language": ["en", "de"]}
    assert front_matter(b"# no front matter\n---\nlicense: mit\n---\n") == {}
    assert front_matter(b"---\nlicense: [unclosed\n---\n") == {}  # bad YAML: nothing, no error
    assert front_matter(b"---\nlicense: mit\n") == {}  # never closed within the bytes read
    make_safetensors_model(tmp_path)
    (tmp_path / "README.md").write_text("---\nlicense: llama3\nlanguage: [en, ja]\n---\n")
    res = resolve_dir(tmp_path, {"license": "mit", "language": "fr"})
    assert res.licenses == ["LicenseRef-llama3"] and res.languages == ["en", "ja"]  # the card beats the hints
    (tmp_path / "README.md").write_text("# no card\n")
    res = resolve_dir(tmp_path, {"license": "mit", "language": "fr"})
    assert res.licenses == ["MIT"] and res.languages == ["fr"]


def test_precision_lists_every_float_type() -> None:
    from lib.formats.metadata import precision_of

    assert precision_of({"F16": 1000, "F32": 10}) == "float16,float32"
    assert precision_of({"F32": 100, "I64": 512}) == "float32"  # position_ids is a buffer
    assert precision_of({"I8": 100, "U8": 1}) == "int8,uint8"
    assert precision_of({"Q4_K": 100, "F32": 1}) == "float32"  # callers drop it for quantized files
    assert precision_of({}) == ""
