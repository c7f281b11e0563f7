"""The Hugging Face adapter against the local Hub stand-in."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.hf_hub import HubStandIn
from lib.api.types import Reason
from lib.retry import RetryPolicy
from lib.sources.base import SourceError, SourceFile, SourceSnapshot
from lib.sources.http import HttpPolicy
from lib.sources.huggingface import (
    HuggingFaceSource,
    classify,
    hints_from,
    is_safe_path,
    read_hf_token,
    select_files,
)
from lib.sources.urls import parse_source_url

GOOD = "hf_alice"  # a valid token, granted where a test says so
OTHER = "hf_bob"  # a valid token never granted anything
FAST = HttpPolicy(retry=RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05), connect_timeout=2, read_timeout=2)


def read_all(f: SourceFile, offset: int = 0) -> bytes:
    with f.open(offset) as chunks:
        return b"".join(chunks)


def weights(n: int, seed: int = 1) -> bytes:
    """Deterministic pseudo-random bytes (incompressible, no repeating blocks)."""
    out = bytearray()
    block = hashlib.sha256(seed.to_bytes(8, "little")).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 32
    return bytes(out[:n])


SMALL_REPO = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}',
    "tokenizer.json": b'{"version": "1.0"}',
    "README.md": b"# tiny\n",
    "model.safetensors": weights(3 * 1024 * 1024 + 17),
    ".gitattributes": b"*.safetensors filter=lfs\n",
    "onnx/model.onnx": b"onnx",
}


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    with HubStandIn(tokens={GOOD, OTHER}) as h:
        yield h


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def source(hub: HubStandIn, url: str, token: str | None = None, **kw) -> HuggingFaceSource:
    kw.setdefault("policy", FAST)
    return HuggingFaceSource(url, token=token, endpoint=hub.endpoint, **kw)


def check_files(snap: SourceSnapshot, expected: dict[str, bytes]) -> None:
    """Every file's bytes, size and sha256 (when declared) match what the repo holds."""
    got = {}
    for f in snap.files:
        data = read_all(f)
        got[f.path] = data
        assert f.size == len(data)
        if f.sha256 is not None:
            assert f.sha256 == hashlib.sha256(data).hexdigest()
    assert got == expected


# --------------------------------------------------------------------------
# Happy paths
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_hub(minilm_dir: Path) -> Iterator[HubStandIn]:
    with HubStandIn(tokens={GOOD}) as h:
        h.add_repo(
            "sentence-transformers/all-MiniLM-L6-v2",
            minilm_dir,
            pipeline_tag="sentence-similarity",
            library_name="sentence-transformers",
            tags=["sentence-transformers", "pytorch", "bert", "feature-extraction"],
            cardData={"license": "apache-2.0", "language": "en"},
        )
        yield h


def test_public_repo_real_model(minilm_hub: HubStandIn, minilm_dir: Path) -> None:
    src = source(minilm_hub, "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2")
    snap = src.snapshot()
    repo = minilm_hub.repos["sentence-transformers/all-MiniLM-L6-v2"]
    assert snap.resolved_type == "HuggingFace"
    assert snap.revision == repo.commit
    paths = [f.path for f in snap.files]
    # Small files first, the weights last; .gitattributes left out.
    assert paths[-1] == "model.safetensors"
    assert ".gitattributes" not in paths
    assert set(paths) == {p.relative_to(minilm_dir).as_posix() for p in minilm_dir.rglob("*")
                          if p.is_file() and p.name != ".gitattributes"}
    weights_file = snap.files[-1]
    assert weights_file.sha256 == repo.files["model.safetensors"].sha256
    assert weights_file.kind == "weight"
    assert next(f for f in snap.files if f.path == "config.json").sha256 is None  # not LFS
    check_files(snap, {f.path: (minilm_dir / f.path).read_bytes() for f in snap.files})
    assert snap.hints == {
        "repo_id": "sentence-transformers/all-MiniLM-L6-v2",
        "pipeline_tag": "sentence-similarity",
        "library_name": "sentence-transformers",
        "tags": ["sentence-transformers", "pytorch", "bert", "feature-extraction"],
        "license": "apache-2.0",
        "language": "en",
    }
    # The ModelPack descriptor's facts: the repo id, its canonical page, the commit's date.
    from devstack.hf_hub import commit_date

    assert snap.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert snap.source_url == "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2"
    assert snap.created == commit_date(repo.commit).replace(".000Z", "Z")


def test_downloads_pinned_to_commit_and_cdn_gets_no_token(hub: HubStandIn) -> None:
    repo = hub.add_repo("acme/tiny", SMALL_REPO, refs=("main", "v1.0"))
    hub.log.clear()
    snap = source(hub, "https://hf.co/acme/tiny/tree/v1.0", token=GOOD).snapshot()
    assert snap.revision == repo.commit
    check_files(snap, {p: SMALL_REPO[p] for p in ("README.md", "config.json", "tokenizer.json",
                                                   "model.safetensors")})
    resolves = [r for r in hub.log if "/resolve/" in r.path]
    assert resolves and all(f"/resolve/{repo.commit}/" in r.path for r in resolves)
    # The token goes to the Hub, never to the CDN a redirect points to.
    assert all(r.headers.get("Authorization") == f"Bearer {GOOD}" for r in hub.log if "/cdn/" not in r.path)
    cdn = [r for r in hub.log if "/cdn/" in r.path]
    assert cdn and all("Authorization" not in r.headers for r in cdn)
    assert hub.cdn.split("//")[1].split(":")[0] in {r.host.split(":")[0] for r in cdn}


def test_open_at_offset(hub: HubStandIn) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    snap = source(hub, "https://huggingface.co/acme/tiny").snapshot()
    f = next(f for f in snap.files if f.path == "model.safetensors")
    assert read_all(f, 1_000_000) == SMALL_REPO["model.safetensors"][1_000_000:]
    small = next(f for f in snap.files if f.path == "config.json")
    assert read_all(small, 5) == SMALL_REPO["config.json"][5:]
    assert read_all(f, f.size or 0) == b""


def test_parsed_source_accepted_and_other_kinds_refused(hub: HubStandIn) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    snap = HuggingFaceSource(parse_source_url("https://huggingface.co/acme/tiny"), token=None,
                             endpoint=hub.endpoint + "/").snapshot()
    assert len(snap.files) == 4
    with pytest.raises(SourceError) as info:
        HuggingFaceSource(parse_source_url("https://ollama.com/library/qwen3"), token=None)
    assert info.value.reason == Reason.UNSUPPORTED_SOURCE


# --------------------------------------------------------------------------
# Errors a user can act on
# --------------------------------------------------------------------------


def snapshot_error(hub: HubStandIn, url: str, token: str | None = None) -> SourceError:
    with pytest.raises(SourceError) as info:
        source(hub, url, token).snapshot()
    return info.value


def test_private_repo(hub: HubStandIn) -> None:
    hub.add_repo("acme/private-llm", SMALL_REPO, private=True, granted={GOOD})
    url = "https://huggingface.co/acme/private-llm"
    err = snapshot_error(hub, url)
    assert err.reason == Reason.PUBLICATION_FAILED
    assert "not found, or it is private" in err.message and "authSecretRef" in err.message
    err = snapshot_error(hub, url, OTHER)
    assert "cannot read it" in err.message
    err = snapshot_error(hub, url, "hf_wrong")
    assert "token was rejected" in err.message
    snap = source(hub, url, GOOD).snapshot()
    assert read_all(snap.files[-1]) == SMALL_REPO["model.safetensors"]


def test_missing_repo(hub: HubStandIn) -> None:
    err = snapshot_error(hub, "https://huggingface.co/acme/nothing")
    assert err.reason == Reason.PUBLICATION_FAILED
    assert "acme/nothing not found, or it is private" in err.message
    err = snapshot_error(hub, "https://huggingface.co/acme/nothing", GOOD)
    assert "acme/nothing not found" in err.message


def test_gated_repo(hub: HubStandIn) -> None:
    hub.add_repo("meta/llm", SMALL_REPO, gated=True, granted={GOOD})
    url = "https://huggingface.co/meta/llm"
    err = snapshot_error(hub, url)
    assert err.reason == Reason.PUBLICATION_FAILED
    assert "gated" in err.message and "provide a token" in err.message
    err = snapshot_error(hub, url, OTHER)
    assert f"request access at {hub.endpoint}/meta/llm" in err.message
    snap = source(hub, url, GOOD).snapshot()
    assert snap.hints["gated"] is True
    check_files(snap, {f.path: SMALL_REPO[f.path] for f in snap.files})


def test_missing_revision(hub: HubStandIn) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    err = snapshot_error(hub, "https://huggingface.co/acme/tiny/tree/v9")
    assert err.reason == Reason.PUBLICATION_FAILED
    assert "revision 'v9' not found in acme/tiny" in err.message


def test_missing_file(hub: HubStandIn) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    snap = source(hub, "https://huggingface.co/acme/tiny").snapshot()
    hub.faults.missing.add("model.safetensors")
    with pytest.raises(SourceError) as info:
        read_all(snap.files[-1])
    assert info.value.reason == Reason.PUBLICATION_FAILED
    assert "model.safetensors" in info.value.message and "missing" in info.value.message


def test_repo_without_weights(hub: HubStandIn) -> None:
    hub.add_repo("acme/docs", {"README.md": b"hi", "config.json": b"{}", "model.onnx": b"x"})
    err = snapshot_error(hub, "https://huggingface.co/acme/docs")
    assert err.reason == Reason.PUBLICATION_FAILED
    assert "no model weights" in err.message


def test_unsafe_file_names_refused(hub: HubStandIn) -> None:
    hub.add_repo("acme/evil", {"../model.safetensors": b"x"})
    err = snapshot_error(hub, "https://huggingface.co/acme/evil")
    assert "unsafe file names" in err.message


# --------------------------------------------------------------------------
# Integrity
# --------------------------------------------------------------------------


def test_tampered_lfs_file_detected_by_declared_sha256(hub: HubStandIn) -> None:
    """The adapter declares lfs.sha256; the pipeline's hash of the stream differs from it."""
    hub.add_repo("acme/tiny", SMALL_REPO)
    snap = source(hub, "https://huggingface.co/acme/tiny").snapshot()
    hub.faults.tamper.add("model.safetensors")
    f = snap.files[-1]
    data = read_all(f)
    assert len(data) == f.size
    assert hashlib.sha256(data).hexdigest() != f.sha256
    assert f.sha256 == hashlib.sha256(SMALL_REPO["model.safetensors"]).hexdigest()


def test_tampered_small_file_fails_git_blob_check(hub: HubStandIn) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    snap = source(hub, "https://huggingface.co/acme/tiny").snapshot()
    hub.faults.tamper.add("config.json")
    f = next(f for f in snap.files if f.path == "config.json")
    with pytest.raises(SourceError) as info:
        read_all(f)
    assert info.value.reason == Reason.PUBLICATION_FAILED
    assert "config.json" in info.value.message and "git blob id" in info.value.message


def test_cdn_serving_another_size_fails_before_any_byte(hub: HubStandIn) -> None:
    repo = hub.add_repo("acme/tiny", SMALL_REPO)
    snap = source(hub, "https://huggingface.co/acme/tiny").snapshot()
    entry = repo.files["model.safetensors"]
    entry.data = (entry.data or b"") + b"appended"
    entry.size += 8
    got: list[bytes] = []
    with pytest.raises(SourceError) as info:
        with snap.files[-1].open(0) as chunks:
            got.extend(chunks)
    assert got == []
    assert info.value.reason == Reason.PUBLICATION_FAILED
    assert "model.safetensors" in info.value.message and f"expected {entry.size - 8}" in info.value.message


# --------------------------------------------------------------------------
# Resilience
# --------------------------------------------------------------------------


def test_api_429_waits_retry_after(hub: HubStandIn) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    hub.rate_limit("api", 2, {"Retry-After": "7"})
    sleeps = Sleeps()
    snap = source(hub, "https://huggingface.co/acme/tiny", sleep=sleeps).snapshot()
    assert sleeps == [7.0, 7.0]
    assert snap.revision


def test_file_429_waits_ratelimit_header(hub: HubStandIn) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    hub.rate_limit("model.safetensors", 3, {"RateLimit": '"api";r=0;t=42',
                                             "RateLimit-Policy": '"fixed window";"api";q=500;w=300'})
    sleeps = Sleeps()
    snap = source(hub, "https://huggingface.co/acme/tiny", sleep=sleeps).snapshot()
    assert read_all(snap.files[-1]) == SMALL_REPO["model.safetensors"]
    assert sleeps == [42.0, 42.0, 42.0]


def test_429_with_too_long_wait_is_unavailable(hub: HubStandIn) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    hub.rate_limit("api", 1, {"RateLimit-Reset": "3600"})
    err = snapshot_error(hub, "https://huggingface.co/acme/tiny")
    assert err.reason == Reason.SOURCE_UNAVAILABLE
    assert "3600" in err.message


def test_5xx_retried_then_success(hub: HubStandIn) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    hub.server_error("api", 2, 502)
    hub.server_error("model.safetensors", 3, 503)
    sleeps = Sleeps()
    snap = source(hub, "https://huggingface.co/acme/tiny", sleep=sleeps).snapshot()
    assert read_all(snap.files[-1]) == SMALL_REPO["model.safetensors"]
    assert len(sleeps) == 5
    # Exponential backoff: each wait within [delay/2, delay] of a doubling delay.
    assert 0.005 <= sleeps[0] <= 0.01 and 0.01 <= sleeps[1] <= 0.02


def test_5xx_forever_is_unavailable(hub: HubStandIn) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    snap = source(hub, "https://huggingface.co/acme/tiny").snapshot()
    hub.server_error("model.safetensors", 100, 500)
    with pytest.raises(SourceError) as info:
        read_all(snap.files[-1])
    assert info.value.reason == Reason.SOURCE_UNAVAILABLE
    assert "model.safetensors" in info.value.message


def test_unreachable_hub_is_unavailable() -> None:
    with HubStandIn() as h:
        endpoint = h.endpoint
    err = None
    try:
        HuggingFaceSource("https://huggingface.co/a/b", token=None, endpoint=endpoint, policy=FAST,
                          sleep=Sleeps()).snapshot()
    except SourceError as e:
        err = e
    assert err is not None and err.reason == Reason.SOURCE_UNAVAILABLE


@pytest.mark.parametrize("cut_at", [1024 * 1024, 2 * 1024 * 1024 + 5, 3 * 1024 * 1024 + 16],
                         ids=["chunk-boundary", "mid-chunk", "last-byte"])
def test_connection_cut_resumes_with_range(hub: HubStandIn, cut_at: int) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    snap = source(hub, "https://huggingface.co/acme/tiny").snapshot()
    hub.cut("model.safetensors", cut_at)
    hub.log.clear()
    assert read_all(snap.files[-1]) == SMALL_REPO["model.safetensors"]
    ranges = [r.headers.get("Range") for r in hub.log if "/cdn/" in r.path]
    # Resumed from the last byte handed to the caller (the HTTP library may
    # drop a partial read buffer, never bytes already yielded).
    assert len(ranges) == 2 and ranges[0] is None
    resumed = int(ranges[1].removeprefix("bytes=").removesuffix("-"))
    assert cut_at - 1024 * 1024 < resumed <= cut_at


def test_small_file_cut_resumes_and_still_passes_git_check(hub: HubStandIn) -> None:
    repo = {**SMALL_REPO, "tokenizer.json": b'{"model": "' + b"x" * 5000 + b'"}'}
    hub.add_repo("acme/tiny", repo)
    snap = source(hub, "https://huggingface.co/acme/tiny").snapshot()
    hub.cut("tokenizer.json", 2000)
    f = next(f for f in snap.files if f.path == "tokenizer.json")
    assert read_all(f) == repo["tokenizer.json"]


def test_stalled_read_times_out_and_resumes(hub: HubStandIn) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    policy = HttpPolicy(retry=RetryPolicy(attempts=3, base_delay=0.01), connect_timeout=2, read_timeout=0.5)
    snap = source(hub, "https://huggingface.co/acme/tiny", policy=policy).snapshot()
    hub.stall("model.safetensors", 2 * 1024 * 1024, seconds=4)
    hub.log.clear()
    start = time.monotonic()
    assert read_all(snap.files[-1]) == SMALL_REPO["model.safetensors"]
    assert time.monotonic() - start < 3
    assert [r.headers.get("Range") for r in hub.log if "/cdn/" in r.path] == [None, "bytes=2097152-"]


def test_stalled_forever_is_unavailable(hub: HubStandIn) -> None:
    hub.add_repo("acme/tiny", SMALL_REPO)
    policy = HttpPolicy(retry=RetryPolicy(attempts=2, base_delay=0.01), connect_timeout=2, read_timeout=0.3)
    snap = source(hub, "https://huggingface.co/acme/tiny", policy=policy).snapshot()
    hub.stall("model.safetensors", 100, seconds=1.5, times=5)
    with pytest.raises(SourceError) as info:
        read_all(snap.files[-1])
    assert info.value.reason == Reason.SOURCE_UNAVAILABLE


# --------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------

SELECTION = {
    "transformers-safetensors": (
        ["config.json", "generation_config.json", "model-00001-of-00002.safetensors",
         "model-00002-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
         "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack", "rust_model.ot",
         "onnx/model.onnx", "onnx/config.json", "openvino/openvino_model.xml", "tokenizer.json",
         "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "chat_template.jinja",
         "README.md", "LICENSE", ".gitattributes", "assets/logo.png", "model.gguf", "model-q4_k_m.gguf"],
        ["LICENSE", "README.md", "chat_template.jinja", "config.json", "generation_config.json",
         "model.safetensors.index.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
         "tokenizer_config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
    ),
    "pytorch-only": (
        ["config.json", "pytorch_model.bin", "training_args.bin", "optimizer.pt", "vocab.txt", "merges.txt"],
        ["config.json", "merges.txt", "vocab.txt", "pytorch_model.bin"],
    ),
    "gguf-only": (
        ["README.md", "qwen-q4_k_m.gguf", "qwen-q8_0.gguf", "mmproj-f16.gguf", "params"],
        ["README.md", "mmproj-f16.gguf", "qwen-q4_k_m.gguf", "qwen-q8_0.gguf"],
    ),
    "diffusers": (
        ["model_index.json", "v1-5-pruned.ckpt", "v1-5-pruned.safetensors", "unet/config.json",
         "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
         "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.non_ema.bin",
         "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
         "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
         "feature_extractor/preprocessor_config.json", "safety_checker/pytorch_model.bin",
         "vae/diffusion_pytorch_model.safetensors", "vae_decoder/model.onnx"],
        ["feature_extractor/preprocessor_config.json", "model_index.json", "scheduler/scheduler_config.json",
         "tokenizer/merges.txt", "tokenizer/vocab.json", "unet/config.json", "safety_checker/pytorch_model.bin",
         "text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
         "vae/diffusion_pytorch_model.safetensors"],
    ),
    "diffusers-variant-only": (
        ["model_index.json", "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
         "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
         "unet/diffusion_pytorch_model.safetensors.index.fp16.json"],
        ["model_index.json", "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
         "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
         "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors"],
    ),
    "sharded-variant-with-plain": (
        ["model_index.json", "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
         "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
         "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
         "unet/diffusion_pytorch_model.safetensors.index.json",
         "unet/diffusion_pytorch_model.safetensors.index.fp16.json"],
        ["model_index.json", "unet/diffusion_pytorch_model.safetensors.index.json",
         "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
         "unet/diffusion_pytorch_model-00002-of-00002.safetensors"],
    ),
    "sentence-transformers": (
        ["modules.json", "1_Pooling/config.json", "2_Normalize/.keep", "model.safetensors",
         "pytorch_model.bin", "openvino/openvino_model_qint8_quantized.bin", "config_sentence_transformers.json",
         "checkpoint-500/model.safetensors"],
        ["1_Pooling/config.json", "config_sentence_transformers.json", "modules.json", "model.safetensors"],
    ),
    "custom-code": (
        ["config.json", "configuration_phi3.py", "modeling_phi3.py", "model.safetensors", "USE_POLICY.md",
         "NOTICE.txt", "sample.wav"],
        ["NOTICE.txt", "USE_POLICY.md", "config.json", "configuration_phi3.py", "modeling_phi3.py",
         "model.safetensors"],
    ),
}


@pytest.mark.parametrize(("paths", "expected"), SELECTION.values(), ids=SELECTION.keys())
def test_select_files(paths: list[str], expected: list[str]) -> None:
    assert select_files(paths) == expected


@pytest.mark.parametrize(
    ("path", "kind"),
    [("config.json", "config"), ("LICENSE", "doc"), ("license.txt", "doc"), ("README.md", "doc"),
     ("model.safetensors", "weight"), ("x.gguf", "weight"), ("pytorch_model.bin", "weight"),
     ("modeling_x.py", "code"), ("tokenizer.model", "config"), ("qwen.tiktoken", "config"),
     ("image.png", None), ("model.onnx", None), ("tf_model.h5", None), ("flax_model.msgpack", None),
     ("onnx/config.json", None), (".gitattributes", None), (".github/x.md", None), ("archive.zip", None)],
)
def test_classify(path: str, kind: str | None) -> None:
    assert classify(path) == kind


@pytest.mark.parametrize(("path", "safe"), [("a/b.json", True), ("a.json", True), ("../a", False),
                                             ("/etc/passwd", False), ("a//b", False), ("a/./b", False),
                                             ("a\\b", False), ("", False), ("a\nb", False)])
def test_is_safe_path(path: str, safe: bool) -> None:
    assert is_safe_path(path) is safe


def test_hints_ignore_malformed_fields() -> None:
    doc = {"pipeline_tag": 3, "library_name": "transformers", "tags": ["a", 1], "cardData": {"license": 5}}
    assert hints_from(doc, "a/b") == {"repo_id": "a/b", "library_name": "transformers", "tags": ["a"]}
    assert hints_from({"cardData": {"license": ["mit", "other"]}}, "a/b")["license"] == ["mit", "other"]


def test_read_hf_token(tmp_path: Path) -> None:
    p = tmp_path / "token"
    p.write_text("  hf_abc123\n")
    assert read_hf_token(p) == "hf_abc123"
    for bad, why in [("\n", "empty"), ("hf_a b", "whitespace"), ("hf_é", "non-ASCII")]:
        p.write_text(bad)
        with pytest.raises(SourceError) as info:
            read_hf_token(p)
        assert info.value.reason == Reason.AUTH_SECRET_INVALID and why in info.value.message
    with pytest.raises(SourceError) as info:
        read_hf_token(tmp_path / "absent")
    assert info.value.reason == Reason.AUTH_SECRET_INVALID
    os.chmod(p, 0o644)
