"""``status.resolved`` from file facts and source hints.

``resolve(layout, facts, hints)`` combines three kinds of signal, strongest
first (table in ``docs/formats.md``):

1. facts read from the files themselves: GGUF header keys, ``config.json``,
   sentence-transformers files, ``model_index.json``, chat templates;
2. source hints: Hugging Face ``pipeline_tag`` / ``library_name`` / ``tags``,
   Ollama config ``model_family`` / ``file_type`` / ``model_type``;
3. name-based guesses (the ``*ForCausalLM`` suffix rules).

It returns a ``Resolution``: the ``ResolvedInfo`` (unknown fields are left
out, never zero-filled), whether it is ``partial`` (a field every model of
its kind should have could not be found → condition reason
``ModelMetadataPartial``), the names of the missing fields, and the fields
only the ModelPack config has (``architecture`` as the spec means it,
``precision``, ``licenses``, ``languages``, the model's own ``name``; see
docs/formats.md for the definitions, model-spec v0.0.7). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lib.api.types import ResolvedInfo
from lib.formats.card import front_matter, iso_languages, spdx_licenses
from lib.formats.facts import FileFacts, template_flags
from lib.formats.layout import Layout

# Endpoint types and features (the reference module's vocabulary).
CHAT, TEXT_GENERATION, EMBEDDINGS, RERANK = "Chat", "TextGeneration", "Embeddings", "Rerank"
SPEECH_TO_TEXT, IMAGE_TO_TEXT, IMAGE_GENERATION = "SpeechToText", "ImageToText", "ImageGeneration"
TOOL_CALLING, THINKING, VISION_INPUT = "ToolCalling", "Thinking", "VisionInput"
MULTIMODAL_INPUT, AUDIO_INPUT, IMAGE_OUTPUT = "MultiModalInput", "AudioInput", "ImageOutput"

ENDPOINT_ORDER = (CHAT, TEXT_GENERATION, EMBEDDINGS, RERANK, SPEECH_TO_TEXT, IMAGE_TO_TEXT, IMAGE_GENERATION)
FEATURE_ORDER = (TOOL_CALLING, THINKING, VISION_INPUT, AUDIO_INPUT, MULTIMODAL_INPUT, IMAGE_OUTPUT)

# Hugging Face pipeline_tag → (endpoint types, features). Chat for text
# generation is added only when a chat template is found (see _chat_features).
PIPELINE_TAGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "text-generation": ((TEXT_GENERATION,), ()),
    "text2text-generation": ((TEXT_GENERATION,), ()),
    "conversational": ((CHAT, TEXT_GENERATION), ()),
    "feature-extraction": ((EMBEDDINGS,), ()),
    "sentence-similarity": ((EMBEDDINGS,), ()),
    "text-ranking": ((RERANK,), ()),
    "automatic-speech-recognition": ((SPEECH_TO_TEXT,), (AUDIO_INPUT,)),
    "image-text-to-text": ((CHAT, IMAGE_TO_TEXT), (VISION_INPUT, MULTIMODAL_INPUT)),
    "image-to-text": ((IMAGE_TO_TEXT,), (VISION_INPUT,)),
    "text-to-image": ((IMAGE_GENERATION,), (IMAGE_OUTPUT,)),
}
SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
)
CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "max_sequence_length",
    "n_ctx",
)
SPEECH_MODEL_TYPES = frozenset(
    {"whisper", "speech_to_text", "speecht5", "seamless_m4t", "wav2vec2", "moonshine"}
)
GGUF_POOLING_RANK = 4  # llama.cpp LLAMA_POOLING_TYPE_RANK: a reranker
# Safetensors dtypes and GGML tensor types → model-spec precision values
# (docs/config.md table). Types without a spec value (F8_E8M0, F6_*, F4, GGML
# quant blocks) are left out of the list.
_DTYPE_PRECISION = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3",
    "F8_E5M2": "float8_e5m2",
    "C64": "complex64",
    "I8": "int8",
    "I16": "int16",
    "I32": "int32",
    "I64": "int64",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
}
# llama.cpp file types that are plain floats: a precision, not a quantization.
GGUF_FLOAT_FILE_TYPES = frozenset({"F32", "F16", "BF16"})
# Families (llama.cpp architectures, transformers model_type) whose network is
# not a transformer; ModelPack ``config.architecture`` names the kind.
NON_TRANSFORMER = {
    **dict.fromkeys(("mamba", "mamba2", "falcon_mamba", "falcon-mamba"), "ssm"),
    **dict.fromkeys(("rwkv", "rwkv5", "rwkv6", "rwkv7", "rwkv6qwen2", "arwkv7"), "rnn"),
    **dict.fromkeys(
        ("jamba", "bamba", "zamba", "zamba2", "falcon_h1", "falcon-h1", "granitehybrid",
         "granitemoehybrid", "nemotron_h", "plamo2", "lfm2"),
        "hybrid",
    ),
}


@dataclass
class Resolution:
    """The outcome of ``resolve``: ``info`` for status, ``partial`` for the condition."""

    info: ResolvedInfo
    partial: bool
    precision: str = ""
    missing: list[str] = field(default_factory=list)
    # ModelPack-only fields (the status has no place for them).
    architecture: str = ""  # kind of network: transformer, ssm, rnn, hybrid, unet
    licenses: list[str] = field(default_factory=list)  # SPDX expressions
    languages: list[str] = field(default_factory=list)  # ISO 639-1 codes
    name: str = ""  # the model's own name (GGUF general.name)

    def __iter__(self) -> Iterator[Any]:
        """``info, partial = resolve(...)`` also works."""
        return iter((self.info, self.partial))


@dataclass
class _Acc:
    """What the signals found so far; first writer wins for scalars."""

    values: dict[str, Any] = field(default_factory=dict)
    endpoints: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    precision: str = ""
    architecture: str = ""
    licenses: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    name: str = ""

    def set(self, key: str, value: Any) -> None:
        if value not in (None, "", 0) and key not in self.values:
            self.values[key] = value

    def add(
        self, endpoints: tuple[str, ...] | list[str] = (), features: tuple[str, ...] | list[str] = ()
    ) -> None:
        self.endpoints += [e for e in endpoints if e not in self.endpoints]
        self.features += [f for f in features if f not in self.features]


def parse_param_size(text: Any) -> int | None:
    """``"8.2B"`` / ``"567M"`` / ``"7b"`` → parameters; ``None`` if not a size."""
    if not isinstance(text, str):
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMBT])\s*", text, re.IGNORECASE)
    if not m:
        return None
    scale = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[m.group(2).upper()]
    return int(round(float(m.group(1)) * scale))


def _template_features(template: str) -> list[str]:
    tools, thinking = template_flags(template)
    return [f for f, on in ((TOOL_CALLING, tools), (THINKING, thinking)) if on]


def _kept_json(facts: Mapping[str, FileFacts], path: str) -> Any:
    f = facts.get(path)
    return f.json() if f is not None else None


def _chat_template(layout: Layout, facts: Mapping[str, FileFacts], hints: Mapping[str, Any]) -> str | None:
    """The chat template(s) of a Safetensors model or hints, concatenated; None if there is none."""
    parts: list[str] = []
    tok = _kept_json(facts, "tokenizer_config.json")
    if isinstance(tok, dict):
        t = tok.get("chat_template")
        if isinstance(t, str):
            parts.append(t)
        elif isinstance(t, list):
            parts += [
                x.get("template", "") for x in t if isinstance(x, dict) and isinstance(x.get("template"), str)
            ]
    ct = _kept_json(facts, "chat_template.json")
    if isinstance(ct, dict) and isinstance(ct.get("chat_template"), str):
        parts.append(ct["chat_template"])
    for name in ("chat_template.jinja", "template"):
        f = facts.get(name)
        if f is not None and f.content:
            parts.append(f.content.decode("utf-8", errors="replace"))
    if isinstance(hints.get("chat_template"), str) and hints["chat_template"]:
        parts.append(hints["chat_template"])
    return "\n".join(parts) if parts else None


def _hint_str(hints: Mapping[str, Any], key: str) -> str:
    v = hints.get(key)
    return v if isinstance(v, str) else ""


def _hint_endpoints(hints: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    tag = hints.get("pipeline_tag")
    if isinstance(tag, str) and tag in PIPELINE_TAGS:
        return PIPELINE_TAGS[tag]
    raw_tags = hints.get("tags")
    tags = raw_tags if isinstance(raw_tags, list) else []
    if hints.get("library_name") == "sentence-transformers" or "sentence-transformers" in tags:
        return (EMBEDDINGS,), ()
    return None


# --- GGUF -------------------------------------------------------------------


def precision_of(types: Mapping[str, int]) -> str:
    """ModelPack ``precision``: the spec values of the stored types, comma-separated, most elements first.

    Every floating type counts (an F16 model's F32 norms make it
    ``float16,float32``). Integer and bool tensors count only in a model
    without floating ones: next to float weights they are buffers
    (``position_ids``) or packed quantized weights, which ``quantization`` names.
    """
    named: dict[str, int] = {}
    for t, n in types.items():
        if (p := _DTYPE_PRECISION.get(t)) is not None:
            named[p] = named.get(p, 0) + int(n)
    floats = {p: n for p, n in named.items() if p.startswith(("float", "bfloat", "complex"))}
    chosen = floats or named
    return ",".join(sorted(chosen, key=lambda p: (-chosen[p], p)))


def gguf_quantization(file_type_name: str) -> str:
    """A llama.cpp file type as a quantization: ``Q4_K_M`` stays, plain ``F16``/``F32``/``BF16`` are none."""
    return "" if file_type_name.upper() in GGUF_FLOAT_FILE_TYPES else file_type_name


def _gguf(layout: Layout, facts: Mapping[str, FileFacts], hints: Mapping[str, Any], acc: _Acc) -> None:
    mains = [
        g for g in (facts[p].gguf for p in layout.weights if p not in layout.projectors and p in facts) if g
    ]
    types: dict[str, int] = {}
    if mains:
        first = next((g for g in mains if not g.get("split_no")), mains[0])
        assert first is not None
        arch = first.get("architecture") or ""
        acc.set("architecture", arch)
        acc.set("family", arch)
        acc.set("quantization", gguf_quantization(first.get("file_type_name") or ""))
        acc.set("contextWindowTokens", first.get("context_length"))
        acc.set("parameterCount", sum(int(g.get("parameter_count") or 0) for g in mains if g))
        for g in mains:
            for t, n in (g.get("tensor_types") or {}).items():
                types[t] = types.get(t, 0) + int(n)
        acc.architecture = NON_TRANSFORMER.get(arch, "transformer" if first.get("has_attention") else "")
        acc.licenses = spdx_licenses(first.get("license"))
        acc.languages = iso_languages(first.get("languages") or [])
        acc.name = str(first.get("name") or "")
        if first.get("has_pooling"):
            acc.add([RERANK] if first.get("pooling_type") == GGUF_POOLING_RANK else [EMBEDDINGS])
        else:
            has_template = bool(first.get("has_chat_template"))
            features: list[str] = []
            if first.get("template_tools"):
                features.append(TOOL_CALLING)
            if first.get("template_thinking"):
                features.append(THINKING)
            hinted = _chat_template(layout, facts, hints)
            if hinted is not None:
                has_template = True
                features += _template_features(hinted)
            vision = bool(layout.projectors)  # an mmproj*.gguf next to the model
            endpoints = [CHAT, TEXT_GENERATION] if has_template else [TEXT_GENERATION]
            if vision:
                endpoints.append(IMAGE_TO_TEXT)
                features += [VISION_INPUT, MULTIMODAL_INPUT]
            acc.add(endpoints, features if has_template or vision else [])
    # Ollama config hints fill what the header did not say.
    acc.set("family", _hint_str(hints, "model_family"))
    acc.set("quantization", gguf_quantization(_hint_str(hints, "file_type")))
    acc.set("parameterCount", parse_param_size(hints.get("model_type")))
    if mains:
        acc.set("parameterCount", parse_param_size(mains[0].get("size_label")))  # type: ignore[union-attr]
    # Quantized blocks (Q4_K, …) have no spec precision: then only quantization says it.
    if "quantization" not in acc.values and all(t in _DTYPE_PRECISION for t in types):
        acc.precision = precision_of(types)


# --- Safetensors ------------------------------------------------------------


def _arch_endpoints(arch: str, config: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """vLLM's suffix rules on ``architectures[0]``, refined by the config."""
    model_type = str(config.get("model_type", "")).lower()
    speech = model_type in SPEECH_MODEL_TYPES or "audio_config" in config
    vision = "vision_config" in config
    if arch.endswith(("ForSpeechSeq2Seq", "ForCTC")) or (
        arch.endswith("ForConditionalGeneration") and speech
    ):
        return [SPEECH_TO_TEXT], [AUDIO_INPUT]
    if arch.endswith(("ForImageTextToText", "ForVision2Seq")) or (
        arch.endswith(("ForConditionalGeneration", "ForCausalLM")) and vision
    ):
        return [CHAT, IMAGE_TO_TEXT], [VISION_INPUT, MULTIMODAL_INPUT]
    if arch.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")):
        return [TEXT_GENERATION], []
    if arch.endswith("ForSequenceClassification"):
        labels = config.get("id2label")
        n = config.get("num_labels", len(labels) if isinstance(labels, dict) else None)
        return ([RERANK], []) if n == 1 else ([], [])
    if arch.endswith(("EmbeddingModel", "Model")):
        return [EMBEDDINGS], []
    return [], []


def _safetensors_params(layout: Layout, facts: Mapping[str, FileFacts]) -> tuple[int | None, dict[str, int]]:
    """Total parameters and elements per dtype; variant twins (``x.fp16.safetensors``) counted once."""
    weights = [p for p in layout.weights if p.lower().endswith(".safetensors")]
    stems = {p[: -len(".safetensors")] for p in weights}
    dtypes: dict[str, int] = {}
    total, complete = 0, True
    for p in weights:
        stem, _, variant = p[: -len(".safetensors")].rpartition(".")
        if variant and stem in stems:
            continue  # a variant of a file we already count
        f = facts.get(p)
        if f is None or f.safetensors is None:
            complete = False
            continue
        total += int(f.safetensors.get("parameter_count") or 0)
        for dt, n in (f.safetensors.get("dtypes") or {}).items():
            dtypes[dt] = dtypes.get(dt, 0) + int(n)
    if any(p.lower().endswith(".bin") for p in layout.weights):
        complete = False  # pickled Diffusers weights: not parsed
    return (total if complete and total else None), dtypes


def _config_precision(config: Mapping[str, Any]) -> str:
    """``torch_dtype`` / ``dtype`` when it is a spec precision value (used only without weight facts)."""
    for key in ("torch_dtype", "dtype"):
        v = config.get(key)
        if isinstance(v, str) and v.removeprefix("torch.") in _DTYPE_PRECISION.values():
            return v.removeprefix("torch.")
    return ""


def _quantization(config: Mapping[str, Any]) -> str:
    """The technique (``quant_method``: awq, gptq, fp8, …) as the spec's examples name it.

    Bits are not appended: ``gptq``, not ``gptq-4bit``, so tools comparing
    against the spec's vocabulary match.
    """
    q = config.get("quantization_config")
    if not isinstance(q, dict):
        return ""
    method = q.get("quant_method")
    if isinstance(method, str) and method.strip():
        return method.strip().lower()
    if q.get("load_in_4bit") or q.get("load_in_8bit"):
        return "bitsandbytes"
    return ""


def _transformer_kind(config: Mapping[str, Any]) -> str:
    """ModelPack architecture of a transformers config: the network kind, as modctl reads it."""
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in NON_TRANSFORMER:
        return NON_TRANSFORMER[model_type]
    return "transformer" if "transformers_version" in config else ""


def _context(config: Mapping[str, Any]) -> int | None:
    text_config = config.get("text_config")
    sources: tuple[Mapping[str, Any], ...] = (config, text_config if isinstance(text_config, dict) else {})
    for source in sources:
        for key in CONTEXT_KEYS:
            v = source.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 31:
                return v
    return None


def _safetensors(layout: Layout, facts: Mapping[str, FileFacts], hints: Mapping[str, Any], acc: _Acc) -> None:
    config = _kept_json(facts, "config.json")
    config = config if isinstance(config, dict) else {}
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else ""
    acc.set("architecture", arch)
    model_type = config.get("model_type")
    acc.set("family", model_type if isinstance(model_type, str) else "")
    acc.set("contextWindowTokens", _context(config))
    acc.set("quantization", _quantization(config))
    params, dtypes = _safetensors_params(layout, facts)
    acc.set("parameterCount", params)
    acc.precision = precision_of(dtypes) or _config_precision(config)
    acc.architecture = _transformer_kind(config)

    template = _chat_template(layout, facts, hints)
    root_names = {p for p in layout.configs if "/" not in p}
    if any(n in root_names for n in SENTENCE_TRANSFORMERS_FILES):
        endpoints, features = [EMBEDDINGS], []
    elif (hinted := _hint_endpoints(hints)) is not None:
        endpoints, features = list(hinted[0]), list(hinted[1])
    else:
        endpoints, features = _arch_endpoints(arch, config)
    if TEXT_GENERATION in endpoints and template is not None and CHAT not in endpoints:
        endpoints.insert(0, CHAT)
    if CHAT in endpoints and template is not None:
        features += _template_features(template)
    acc.add(endpoints, features)
    acc.set("family", _hint_str(hints, "model_family"))


# --- Diffusers --------------------------------------------------------------


def _kebab(class_name: str) -> str:
    base = class_name.removesuffix("Pipeline")
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z]|\d|$)|[A-Z]?[a-z]+|\d+", base)
    return "-".join(w.lower() for w in words) or base.lower()


def _diffusers(layout: Layout, facts: Mapping[str, FileFacts], hints: Mapping[str, Any], acc: _Acc) -> None:
    index = _kept_json(facts, "model_index.json")
    cls = index.get("_class_name") if isinstance(index, dict) else None
    if isinstance(cls, str) and cls:
        acc.set("architecture", cls)
        acc.set("family", _kebab(cls))
        acc.add([IMAGE_GENERATION], [IMAGE_OUTPUT])
    if isinstance(index, dict):
        # The denoiser names the kind: a DiT ("transformer") or a U-Net ("unet").
        acc.architecture = next((k for k in ("transformer", "unet") if k in index), "")
    params, dtypes = _safetensors_params(layout, facts)
    acc.set("parameterCount", params)
    acc.precision = precision_of(dtypes)
    # Component configs may name a dtype too; the weights are the ground truth.


def resolve(
    layout: Layout, facts: Mapping[str, FileFacts], hints: Mapping[str, Any] | None = None
) -> Resolution:
    """Resolve metadata for ``layout`` from ``facts`` (keyed by path) and source ``hints``.

    Hints understood: ``pipeline_tag``, ``library_name``, ``tags``,
    ``license``, ``license_name``, ``language`` (Hugging Face, the card data);
    ``model_family``, ``file_type``, ``model_type`` (Ollama config);
    ``chat_template`` (a template a source carries outside the files).
    """
    hints = hints or {}
    acc = _Acc()
    if layout.format == "GGUF":
        _gguf(layout, facts, hints, acc)
    elif layout.format == "Safetensors":
        _safetensors(layout, facts, hints, acc)
    else:
        _diffusers(layout, facts, hints, acc)
    _card(facts, hints, acc)

    info = ResolvedInfo(format=layout.format)
    for key in ("family", "architecture", "parameterCount", "quantization", "contextWindowTokens"):
        if key in acc.values:
            info[key] = acc.values[key]  # type: ignore[literal-required]
    info["supportedEndpointTypes"] = [e for e in ENDPOINT_ORDER if e in acc.endpoints]
    info["supportedFeatures"] = [f for f in FEATURE_ORDER if f in acc.features]

    required = ["family", "architecture", "parameterCount"]
    if layout.format != "Diffusers":
        required.append("contextWindowTokens")
    missing = [k for k in required if k not in info]
    if not info["supportedEndpointTypes"]:
        missing.append("supportedEndpointTypes")
    return Resolution(
        info=info,
        partial=bool(missing),
        precision=acc.precision,
        missing=missing,
        architecture=acc.architecture,
        licenses=acc.licenses,
        languages=acc.languages,
        name=acc.name,
    )


def _card(facts: Mapping[str, FileFacts], hints: Mapping[str, Any], acc: _Acc) -> None:
    """Licenses and languages the file headers did not give: the model card, then source hints."""
    readme = facts.get("README.md")
    card = front_matter(readme.content if readme is not None else None)
    for source in (card, hints):
        if not acc.licenses:
            acc.licenses = spdx_licenses(source.get("license"), source.get("license_name"))
        if not acc.languages:
            acc.languages = iso_languages(source.get("language"))


def summary(res: Resolution) -> str:
    """One line for the MetadataResolved condition message."""
    if not res.partial:
        return "metadata resolved from the model files"
    return "could not determine: " + ", ".join(res.missing)
