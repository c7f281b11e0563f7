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
``ModelMetadataPartial``), the ModelPack ``precision`` and the names of the
missing fields. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lib.api.types import ResolvedInfo
from lib.formats.inspect import FileFacts, template_flags
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
_DTYPE_PRECISION = {
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F64": "float64",
    "F8_E4M3": "float8_e4m3",
    "F8_E5M2": "float8_e5m2",
    "I8": "int8",
    "U8": "uint8",
    "F4": "float4",
}
_GGUF_PRECISION = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


@dataclass
class Resolution:
    """The outcome of ``resolve``: ``info`` for status, ``partial`` for the condition."""

    info: ResolvedInfo
    partial: bool
    precision: str = ""
    missing: list[str] = field(default_factory=list)

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


def _gguf(layout: Layout, facts: Mapping[str, FileFacts], hints: Mapping[str, Any], acc: _Acc) -> None:
    mains = [
        g for g in (facts[p].gguf for p in layout.weights if p not in layout.projectors and p in facts) if g
    ]
    if mains:
        first = next((g for g in mains if not g.get("split_no")), mains[0])
        assert first is not None
        arch = first.get("architecture") or ""
        acc.set("architecture", arch)
        acc.set("family", arch)
        acc.set("quantization", first.get("file_type_name"))
        acc.set("contextWindowTokens", first.get("context_length"))
        acc.set("parameterCount", sum(int(g.get("parameter_count") or 0) for g in mains if g))
        acc.precision = _GGUF_PRECISION.get(first.get("file_type_name") or "", "")
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
    acc.set("quantization", _hint_str(hints, "file_type"))
    acc.set("parameterCount", parse_param_size(hints.get("model_type")))
    if mains:
        acc.set("parameterCount", parse_param_size(mains[0].get("size_label")))  # type: ignore[union-attr]


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


def _dominant_precision(dtypes: Mapping[str, int]) -> str:
    if not dtypes:
        return ""
    dt = max(sorted(dtypes), key=lambda k: dtypes[k])
    return _DTYPE_PRECISION.get(dt, dt.lower())


def _config_precision(config: Mapping[str, Any]) -> str:
    for key in ("torch_dtype", "dtype"):
        v = config.get(key)
        if isinstance(v, str) and v:
            return v.removeprefix("torch.")
    return ""


def _quantization(config: Mapping[str, Any]) -> str:
    q = config.get("quantization_config")
    if not isinstance(q, dict):
        return ""
    method = q.get("quant_method")
    method = method.lower() if isinstance(method, str) else ""
    bits = q.get("bits") or q.get("w_bit")
    bits = bits if isinstance(bits, int) and not isinstance(bits, bool) else None
    if q.get("load_in_4bit"):
        bits = 4
    elif q.get("load_in_8bit"):
        bits = 8
    if method and bits:
        return f"{method}-{bits}bit"
    return method


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
    acc.precision = _config_precision(config) or _dominant_precision(dtypes)

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
    params, dtypes = _safetensors_params(layout, facts)
    acc.set("parameterCount", params)
    acc.precision = _dominant_precision(dtypes)
    # Component configs may name a dtype too; the weights are the ground truth.


def resolve(
    layout: Layout, facts: Mapping[str, FileFacts], hints: Mapping[str, Any] | None = None
) -> Resolution:
    """Resolve metadata for ``layout`` from ``facts`` (keyed by path) and source ``hints``.

    Hints understood: ``pipeline_tag``, ``library_name``, ``tags`` (Hugging
    Face); ``model_family``, ``file_type``, ``model_type`` (Ollama config);
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
    return Resolution(info=info, partial=bool(missing), precision=acc.precision, missing=missing)


def summary(res: Resolution) -> str:
    """One line for the MetadataResolved condition message."""
    if not res.partial:
        return "metadata resolved from the model files"
    return "could not determine: " + ", ".join(res.missing)
