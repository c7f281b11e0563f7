"""Which format a set of files is, and what each file is for.

``detect_layout(paths)`` looks at names only, so the pipeline can decide
before any byte moves which files to publish and which to leave out. Rules
(user guide, "Upload Model"; the table is in ``docs/formats.md``):

- **Safetensors**: a root ``config.json`` and at least one ``*.safetensors``;
- **Diffusers**: a root ``model_index.json`` and ``*.safetensors`` or ``*.bin``
  weights in component folders;
- **GGUF**: a ``*.gguf``; several are allowed only as one complete shard set
  (``<name>-00001-of-0000N.gguf`` …) plus ``mmproj*.gguf`` projectors.

Exactly one format must match, else ``FormatError`` naming what is missing or
ambiguous. Files that are not part of the chosen format's model are
*excluded* (left out of the artifact, never fetched), never refused: Hugging
Face repositories routinely carry ONNX/OpenVINO exports, ``*.bin`` twins of
Safetensors weights, custom ``*.py`` code and images, and refusing them would
refuse most real repositories. Unsafe paths (absolute, ``..``, empty parts)
are refused.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Literal

from lib.formats.errors import FormatError

Format = Literal["GGUF", "Safetensors", "Diffusers"]
Role = Literal["weight", "config", "doc"]

# Top-level folders holding other export formats of the same model.
EXPORT_DIRS = frozenset(
    {
        "onnx",
        "openvino",
        "coreml",
        "tflite",
        "tensorflow",
        "tf",
        "flax",
        "jax",
        "mlx",
        "tensorrt",
        "ov",
        "gguf",
    }
)
# Weight formats we never publish: pickles (executable on load) and other frameworks' weights.
OTHER_WEIGHTS = (
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".pkl",
    ".pickle",
    ".h5",
    ".msgpack",
    ".onnx",
    ".onnx_data",
    ".ot",
    ".tflite",
    ".mlmodel",
    ".npz",
    ".npy",
    ".joblib",
    ".keras",
    ".pb",
    ".xml",
    ".engine",
    ".plan",
)
CODE = (".py", ".pyc", ".sh", ".bash", ".ps1", ".bat", ".cmd", ".js", ".ipynb")
EXECUTABLES = (
    ".exe",
    ".so",
    ".dll",
    ".dylib",
    ".out",
    ".elf",
    ".app",
    ".jar",
    ".whl",
    ".msi",
    ".deb",
    ".rpm",
)
ARCHIVES = (
    ".zip",
    ".tar",
    ".tgz",
    ".gz",
    ".tar.gz",
    ".zst",
    ".zstd",
    ".tzst",
    ".xz",
    ".bz2",
    ".7z",
    ".rar",
    ".lz4",
)
CONFIG_EXT = (".json", ".jinja", ".model", ".tiktoken", ".txt", ".yaml", ".yml", ".vocab", ".spm", ".bpe")
CONFIG_NAMES = frozenset({"template", "params", "system", "messages"})  # Ollama companion layers
DOC_EXT = (".md", ".rst")
DOC_PREFIXES = (
    "readme",
    "license",
    "licence",
    "notice",
    "copying",
    "use_policy",
    "acceptable_use",
    "model_card",
)

GGUF_SHARD = re.compile(r"^(?P<base>.+)-(?P<idx>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)


@dataclass
class Layout:
    """A detected model: its format and every path sorted into a role or left out."""

    format: Format
    weights: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    docs: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    # Weight files that are not the model proper (GGUF vision projectors).
    projectors: list[str] = field(default_factory=list)

    def role(self, path: str) -> Role | None:
        """``weight`` / ``config`` / ``doc`` for published files, ``None`` for excluded ones."""
        if path in self.weights:
            return "weight"
        if path in self.configs:
            return "config"
        if path in self.docs:
            return "doc"
        return None

    @property
    def included(self) -> list[str]:
        return sorted(self.weights + self.configs + self.docs)


def _check_path(p: str) -> str:
    if not p or p.startswith("/") or "\\" in p or "\0" in p:
        raise FormatError(f"unsafe file path {p!r} in the model")
    parts = p.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FormatError(f"unsafe file path {p!r} in the model")
    return p


def _lower_name(p: str) -> str:
    return posixpath.basename(p).lower()


def _is_hidden(p: str) -> bool:
    return any(part.startswith(".") for part in p.split("/"))


def _in_export_dir(p: str) -> bool:
    return "/" in p and p.split("/", 1)[0].lower() in EXPORT_DIRS


def _is_doc(p: str) -> bool:
    name = _lower_name(p)
    return name.endswith(DOC_EXT) or name.startswith(DOC_PREFIXES)


def _is_config(p: str) -> bool:
    name = _lower_name(p)
    return name.endswith(CONFIG_EXT) or name in CONFIG_NAMES or name in ("tokenizer.model", "spiece.model")


def _never(p: str) -> bool:
    """Files no format publishes: hidden, other exports, code, executables, nested archives."""
    name = _lower_name(p)
    return (
        _is_hidden(p)
        or _in_export_dir(p)
        or name.endswith(CODE)
        or name.endswith(EXECUTABLES)
        or name.endswith(ARCHIVES)
    )


def _candidates(paths: list[str]) -> dict[Format, bool]:
    usable = [p for p in paths if not _never(p)]
    names = {p.lower() for p in usable}
    has_st = any(p.lower().endswith(".safetensors") for p in usable)
    has_bin_in_sub = any(p.lower().endswith(".bin") and "/" in p for p in usable)
    has_st_in_sub = any(p.lower().endswith(".safetensors") and "/" in p for p in usable)
    return {
        "GGUF": any(p.lower().endswith(".gguf") for p in usable),
        "Safetensors": "config.json" in names and has_st,
        "Diffusers": "model_index.json" in names and (has_st_in_sub or has_bin_in_sub),
    }


def _missing_message(paths: list[str]) -> str:
    names = {p.lower() for p in paths if not _never(p)}
    hints = []
    if "model_index.json" in names:
        hints.append("model_index.json is present but no *.safetensors or *.bin weights in component folders")
    elif "config.json" in names:
        hints.append("config.json is present but no *.safetensors weights")
    elif any(n.endswith(".safetensors") for n in names):
        hints.append("*.safetensors weights are present but the root config.json is missing")
    else:
        hints.append("no *.gguf, *.safetensors or Diffusers weights found")
    if any(p.lower().endswith(OTHER_WEIGHTS) for p in paths) and not any(
        n.endswith((".safetensors", ".gguf")) for n in names
    ):
        hints.append("pickle/ONNX/other framework weights are not supported; convert to Safetensors or GGUF")
    return (
        "no supported model format found: "
        + "; ".join(hints)
        + ". Expected a *.gguf file, root config.json with *.safetensors (Safetensors), "
        "or root model_index.json with component weights (Diffusers)"
    )


def detect_layout(paths: list[str]) -> Layout:
    """Classify ``paths`` ('/'-separated, relative to the model root) into one format's layout."""
    paths = sorted({_check_path(p) for p in paths})
    if not paths:
        raise FormatError("the model has no files")
    matched = [f for f, ok in _candidates(paths).items() if ok]
    if not matched:
        raise FormatError(_missing_message(paths))
    if len(matched) > 1:
        raise FormatError(
            f"the files match more than one format ({', '.join(matched)}); "
            "publish one model per source (e.g. remove the *.gguf files or the Safetensors weights)"
        )
    fmt: Format = matched[0]  # type: ignore[assignment]
    if fmt == "GGUF":
        return _gguf_layout(paths)
    if fmt == "Safetensors":
        return _safetensors_layout(paths)
    return _diffusers_layout(paths)


def _companions(layout: Layout, rest: list[str]) -> Layout:
    """Sort non-weight files into docs, configs or excluded."""
    for p in rest:
        name = _lower_name(p)
        if _never(p) or name.endswith(OTHER_WEIGHTS) or name.endswith((".gguf", ".safetensors")):
            layout.excluded.append(p)
        elif _is_doc(p):
            layout.docs.append(p)
        elif _is_config(p):
            layout.configs.append(p)
        else:
            layout.excluded.append(p)  # images, unknown formats: not needed to load the model
    return layout


def _gguf_layout(paths: list[str]) -> Layout:
    ggufs = [p for p in paths if p.lower().endswith(".gguf") and not _never(p)]
    projectors = [p for p in ggufs if _lower_name(p).startswith("mmproj")]
    main = [p for p in ggufs if p not in projectors]
    if not main:
        raise FormatError(
            f"only vision projector files found ({', '.join(projectors)}); the model's *.gguf is missing"
        )
    if len(main) > 1:
        shards = [GGUF_SHARD.match(posixpath.basename(p)) for p in main]
        groups = {
            (posixpath.dirname(p), m.group("base"), int(m.group("total"))) if m else None
            for p, m in zip(main, shards, strict=True)
        }
        if None in groups or len(groups) != 1:
            raise FormatError(
                f"several GGUF models found ({', '.join(main)}); a source must hold one model "
                "(one *.gguf, or one complete set of *-0000i-of-0000N.gguf shards)"
            )
        total = next(iter(groups))[2]  # type: ignore[index]
        have = sorted(int(m.group("idx")) for m in shards if m)
        if have != list(range(1, total + 1)):
            missing = sorted(set(range(1, total + 1)) - set(have))
            raise FormatError(
                f"incomplete GGUF shard set: {total} shards expected, "
                + (
                    f"missing {', '.join(f'{i:05d}' for i in missing)}"
                    if missing
                    else "numbering is inconsistent"
                )
            )
    if len(projectors) > 1:
        raise FormatError(f"several vision projectors found ({', '.join(projectors)}); keep one")
    layout = Layout(format="GGUF", weights=sorted(main + projectors), projectors=projectors)
    return _companions(layout, [p for p in paths if p not in ggufs])


def _safetensors_layout(paths: list[str]) -> Layout:
    weights = [p for p in paths if p.lower().endswith(".safetensors") and not _never(p)]
    layout = Layout(format="Safetensors", weights=weights)
    return _companions(layout, [p for p in paths if p not in weights])


def _diffusers_layout(paths: list[str]) -> Layout:
    usable = [p for p in paths if not _never(p)]
    st = [p for p in usable if p.lower().endswith(".safetensors") and "/" in p]
    st_dirs = {posixpath.dirname(p) for p in st}
    # A component folder's *.bin is published only when it has no *.safetensors twin.
    bins = [
        p for p in usable if p.lower().endswith(".bin") and "/" in p and posixpath.dirname(p) not in st_dirs
    ]
    weights = sorted(st + bins)
    layout = Layout(format="Diffusers", weights=weights)
    return _companions(layout, [p for p in paths if p not in weights])
