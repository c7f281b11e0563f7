"""Real model files for `make run`, the tests and benchmarks, written by the real libraries.

GGUF files come from ``gguf.GGUFWriter`` and Safetensors files from
``safetensors.numpy.save_file``, so the parsers are tested against what the
ecosystem actually writes. Corrupt variants are derived from those files (or,
where a writer cannot produce the lie, assembled byte by byte with the layout
documented in ``references.md``).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import save_file

# ---------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------

TOOLS_TEMPLATE = (
    "{% if tools %}{% for tool in tools %}{{ tool | tojson }}{% endfor %}{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
)
THINK_TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}<think>\n"
PLAIN_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"


def make_gguf(
    path: str | os.PathLike[str],
    *,
    arch: str = "llama",
    name: str = "tiny",
    context_length: int | None = 2048,
    pooling: bool | int = False,
    chat_template: str | None = None,
    file_type: int | None = 15,
    n_tensors: int = 2,
    tensor_elems: int = 64,
    size_label: str | None = None,
    vocab: int = 0,
    alignment: int | None = None,
    extra_kv: dict[str, Any] | None = None,
) -> Path:
    """Write a small valid GGUF (F32 tensors of ``tensor_elems`` elements each).

    ``pooling`` True writes ``<arch>.pooling_type = 1`` (mean); an int writes that
    value (4 = rank). ``vocab`` > 0 writes a ``tokenizer.ggml.tokens`` string array
    of that many entries, the part of real headers that makes them megabytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch)
    if name:
        w.add_name(name)
    if size_label:
        w.add_size_label(size_label)
    if file_type is not None:
        w.add_file_type(file_type)
    if context_length is not None:
        w.add_context_length(context_length)
    if pooling is not False:
        w.add_pooling_type(gguf.PoolingType(1 if pooling is True else int(pooling)))
    if chat_template is not None:
        w.add_chat_template(chat_template)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    if vocab:
        w.add_tokenizer_model("gpt2")
        w.add_token_list([f"tok{i}" for i in range(vocab)])
        w.add_token_scores([0.0] * vocab)
    for key, value in (extra_kv or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_array(key, value)
    for i in range(n_tensors):
        w.add_tensor(f"blk.{i}.weight", np.arange(tensor_elems, dtype=np.float32) + i)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def make_gguf_shards(
    dir: str | os.PathLike[str],
    *,
    stem: str = "model",
    shards: int = 3,
    arch: str = "llama",
    tensor_elems: int = 64,
) -> list[Path]:
    """A GGUF split into ``shards`` files by GGUFWriter (``<stem>-0000i-of-0000N.gguf``), one tensor each."""
    root = Path(dir)
    root.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(root / f"{stem}.gguf"), arch, split_max_tensors=1)
    w.add_name("sharded")
    w.add_file_type(1)
    w.add_context_length(8192)
    w.add_chat_template(PLAIN_TEMPLATE)
    for i in range(shards):
        w.add_tensor(f"blk.{i}.weight", np.ones(tensor_elems, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sorted(root.glob(f"{stem}-*-of-*.gguf"))


def make_large_gguf(
    path: str | os.PathLike[str], size_bytes: int, *, arch: str = "llama", chunk: int = 16 << 20
) -> Path:
    """Write a valid GGUF of about ``size_bytes`` without holding it in memory.

    GGUFWriter writes the header and the tensor info of one F32 tensor of the
    right size; the data is then streamed as a repeated block of random bytes
    (not a sparse file, so reading it costs real I/O, and not zeros, so no
    layer of the stack can shortcut it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_elems = max(1, size_bytes // 4 - 1024)
    nbytes = n_elems * 4
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("large")
    w.add_file_type(0)
    w.add_context_length(4096)
    w.add_tensor_info("blob.weight", [n_elems], np.dtype(np.float32), nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    block = os.urandom(min(chunk, nbytes))
    with open(path, "ab") as f:
        f.write(b"\0" * (-f.tell() % gguf.GGUF_DEFAULT_ALIGNMENT))
        left = nbytes
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
        f.write(b"\0" * (-nbytes % gguf.GGUF_DEFAULT_ALIGNMENT))
    return path


def gguf_raw(
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    tensor_count: int = 0,
    kv_count: int = 0,
    body: bytes = b"",
) -> bytes:
    """A GGUF prefix assembled by hand, for headers no writer would produce."""
    return magic + struct.pack("<IQQ", version, tensor_count, kv_count) + body


def gguf_string(s: str | bytes, *, length: int | None = None) -> bytes:
    """A GGUF string (u64 length + bytes); ``length`` lies about the length."""
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def gguf_kv_string(key: str, value: str) -> bytes:
    return gguf_string(key) + struct.pack("<I", 8) + gguf_string(value)


def gguf_header_end(path: str | os.PathLike[str]) -> int:
    """Offset where tensor data starts in a GGUF written by GGUFWriter (via GGUFReader)."""
    return int(gguf.GGUFReader(str(path)).data_offset)


def gguf_set_tensor_offset(path: str | os.PathLike[str], tensor_index: int, offset: int) -> None:
    """Overwrite one tensor's data offset in place (out-of-bounds / overlap variants)."""
    field = gguf.GGUFReader(str(path)).tensors[tensor_index].field
    # A tensor info ends with its u64 offset; the field knows where it starts and its parts' sizes.
    pos = int(field.offset) + sum(int(p.nbytes) for p in field.parts) - 8
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(struct.pack("<Q", offset))


# ---------------------------------------------------------------------------
# Safetensors
# ---------------------------------------------------------------------------


def _tensors(seed: int, n: int = 2, dim: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"layer.{i}.weight": rng.standard_normal((dim, dim)).astype(np.float16) for i in range(n)}


def make_safetensors_file(path: str | os.PathLike[str], tensors: dict[str, np.ndarray] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors if tensors is not None else _tensors(0), str(path))
    return path


def make_safetensors_model(
    dir: str | os.PathLike[str],
    *,
    architectures: Sequence[str] | None = ("LlamaForCausalLM",),
    model_type: str | None = "llama",
    with_tokenizer: bool = True,
    shards: int = 1,
    sentence_transformers: bool = False,
    chat_template: str | None = None,
    max_position_embeddings: int | None = 4096,
    torch_dtype: str | None = "float16",
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """A Hugging Face-style Safetensors model directory.

    ``shards`` > 1 writes ``model-0000i-of-0000N.safetensors`` plus
    ``model.safetensors.index.json``. ``sentence_transformers`` adds
    ``modules.json``, ``config_sentence_transformers.json`` and ``1_Pooling``.
    """
    root = Path(dir)
    root.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {}
    if architectures is not None:
        config["architectures"] = list(architectures)
    if model_type is not None:
        config["model_type"] = model_type
    if max_position_embeddings is not None:
        config["max_position_embeddings"] = max_position_embeddings
    if torch_dtype is not None:
        config["torch_dtype"] = torch_dtype
    config.update(extra_config or {})
    (root / "config.json").write_text(json.dumps(config, indent=2))
    if shards <= 1:
        save_file(_tensors(0), str(root / "model.safetensors"))
    else:
        weight_map = {}
        for i in range(shards):
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            tensors = {f"shard{i}.{k}": v for k, v in _tensors(i).items()}
            save_file(tensors, str(root / fname))
            weight_map.update({k: fname for k in tensors})
        (root / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
        )
    if with_tokenizer:
        (root / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
        tok_config: dict[str, Any] = {"model_max_length": 4096}
        if chat_template is not None:
            tok_config["chat_template"] = chat_template
        (root / "tokenizer_config.json").write_text(json.dumps(tok_config))
    if sentence_transformers:
        (root / "modules.json").write_text(
            json.dumps(
                [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {
                        "idx": 1,
                        "name": "1",
                        "path": "1_Pooling",
                        "type": "sentence_transformers.models.Pooling",
                    },
                ]
            )
        )
        (root / "config_sentence_transformers.json").write_text(json.dumps({"__version__": {}}))
        (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
        (root / "1_Pooling").mkdir(exist_ok=True)
        (root / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (root / "README.md").write_text("# tiny test model\n")
    return root


def make_diffusers_tree(dir: str | os.PathLike[str], *, class_name: str = "StableDiffusionPipeline") -> Path:
    """A minimal Diffusers pipeline: ``model_index.json`` and component folders."""
    root = Path(dir)
    root.mkdir(parents=True, exist_ok=True)
    index = {
        "_class_name": class_name,
        "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "PNDMScheduler"}))
    (root / "tokenizer").mkdir(exist_ok=True)
    (root / "tokenizer" / "vocab.json").write_text(json.dumps({"a": 0}))
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    for i, (comp, cls, fname) in enumerate(
        [
            ("text_encoder", "CLIPTextModel", "model.safetensors"),
            ("unet", "UNet2DConditionModel", "diffusion_pytorch_model.safetensors"),
            ("vae", "AutoencoderKL", "diffusion_pytorch_model.safetensors"),
        ]
    ):
        (root / comp).mkdir(exist_ok=True)
        (root / comp / "config.json").write_text(json.dumps({"_class_name": cls}))
        save_file(_tensors(10 + i), str(root / comp / fname))
    return root


def write_safetensors_raw(
    path: str | os.PathLike[str],
    header: dict[str, Any] | bytes,
    data: bytes = b"",
    *,
    header_len: int | None = None,
) -> Path:
    """Assemble a Safetensors file by hand: u64 length, header bytes, data.

    ``header_len`` lies about the header length when given.
    """
    path = Path(path)
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if header_len is None else header_len))
        f.write(raw)
        f.write(data)
    return path


def safetensors_variants(dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Corrupt Safetensors files, each breaking one rule (name → path)."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    f16 = {"dtype": "F16", "shape": [2, 2]}  # 8 bytes
    out = {
        "header_len_huge": write_safetensors_raw(d / "huge.safetensors", {}, header_len=1 << 62),
        "header_len_past_end": write_safetensors_raw(
            d / "past.safetensors", {"a": {**f16, "data_offsets": [0, 8]}}, b"\0" * 8, header_len=1000
        ),
        "not_json": write_safetensors_raw(d / "notjson.safetensors", b"{not json", b""),
        "not_object": write_safetensors_raw(d / "list.safetensors", b"[1, 2]", b""),
        "bad_utf8": write_safetensors_raw(d / "utf8.safetensors", b'{"\xff": 1}', b""),
        "out_of_bounds": write_safetensors_raw(
            d / "oob.safetensors", {"a": {**f16, "data_offsets": [0, 16]}}, b"\0" * 8
        ),
        "overlap": write_safetensors_raw(
            d / "overlap.safetensors",
            {"a": {**f16, "data_offsets": [0, 8]}, "b": {**f16, "data_offsets": [4, 12]}},
            b"\0" * 12,
        ),
        "gap": write_safetensors_raw(
            d / "gap.safetensors",
            {"a": {**f16, "data_offsets": [0, 8]}, "b": {**f16, "data_offsets": [12, 20]}},
            b"\0" * 20,
        ),
        "size_mismatch": write_safetensors_raw(
            d / "mismatch.safetensors",
            {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}},
            b"\0" * 8,
        ),
        "trailing_data": write_safetensors_raw(
            d / "trailing.safetensors", {"a": {**f16, "data_offsets": [0, 8]}}, b"\0" * 16
        ),
        "bad_dtype": write_safetensors_raw(
            d / "dtype.safetensors", {"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 1]}}, b"\0"
        ),
        "negative_shape": write_safetensors_raw(
            d / "neg.safetensors", {"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}, b"\0"
        ),
        "reversed_offsets": write_safetensors_raw(
            d / "rev.safetensors", {"a": {"dtype": "U8", "shape": [0], "data_offsets": [1, 0]}}, b"\0"
        ),
    }
    good = make_safetensors_file(d / "good.safetensors")
    raw = good.read_bytes()
    (d / "truncated.safetensors").write_bytes(raw[:-3])
    out["truncated"] = d / "truncated.safetensors"
    return out


def corrupt_bytes(src: str | os.PathLike[str], dst: str | os.PathLike[str], offset: int, data: bytes) -> Path:
    """Copy ``src`` to ``dst`` with ``data`` written over it at ``offset``."""
    raw = bytearray(Path(src).read_bytes())
    raw[offset : offset + len(data)] = data
    Path(dst).write_bytes(bytes(raw))
    return Path(dst)


def truncate_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str], length: int) -> Path:
    """Copy the first ``length`` bytes of ``src`` to ``dst``."""
    Path(dst).write_bytes(Path(src).read_bytes()[:length])
    return Path(dst)
