"""Source URL parsing: a table of accepted and rejected forms."""

from __future__ import annotations

import pytest

from lib.api.types import Reason
from lib.sources.base import SourceError
from lib.sources.urls import ParsedSource, parse_source_url

ACCEPTED = [
    ("https://huggingface.co/BAAI/bge-m3", ("huggingface", "BAAI/bge-m3", "main")),
    ("https://huggingface.co/BAAI/bge-m3/", ("huggingface", "BAAI/bge-m3", "main")),
    ("https://hf.co/BAAI/bge-m3", ("huggingface", "BAAI/bge-m3", "main")),
    ("https://HuggingFace.co/acme/private-llm", ("huggingface", "acme/private-llm", "main")),
    ("https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/tree/v1.0",
     ("huggingface", "Qwen/Qwen2.5-0.5B-Instruct", "v1.0")),
    ("https://huggingface.co/a/b/tree/0123456789abcdef0123456789abcdef01234567/",
     ("huggingface", "a/b", "0123456789abcdef0123456789abcdef01234567")),
    ("https://huggingface.co/a/b/tree/refs%2Fpr%2F1", ("huggingface", "a/b", "refs/pr/1")),
    ("https://huggingface.co/a/b/tree/refs/pr/12", ("huggingface", "a/b", "refs/pr/12")),
    ("https://huggingface.co/a/b/tree/refs/convert/parquet", ("huggingface", "a/b", "refs/convert/parquet")),
    ("https://huggingface.co/a/b/tree/feature%2Fx", ("huggingface", "a/b", "feature/x")),
    ("https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
     ("huggingface", "sentence-transformers/all-MiniLM-L6-v2", "main")),
    ("https://ollama.com/library/qwen3.6:latest", ("ollama", "library/qwen3.6", "latest")),
    ("https://ollama.com/library/qwen3.6", ("ollama", "library/qwen3.6", "latest")),
    ("https://ollama.com/library/nomic-embed-text:v1.5", ("ollama", "library/nomic-embed-text", "v1.5")),
    ("https://ollama.com/library/Llama3.2:1b/", ("ollama", "library/llama3.2", "1b")),
    ("https://ollama.com/library/deepseek-r1:1.5b-qwen-distill-q4_K_M",
     ("ollama", "library/deepseek-r1", "1.5b-qwen-distill-q4_K_M")),
]

REJECTED = [
    ("", "empty"),
    ("   ", "empty"),
    (" https://huggingface.co/a/b", "whitespace"),
    ("http://huggingface.co/a/b", "only https"),
    ("https://example.com/a/b", "unknown host"),
    ("https://huggingface.com/a/b", "unknown host"),
    ("s3://bucket/model", "unknown host"),
    ("huggingface.co/a/b", "unknown host"),
    ("https://huggingface.co", "<owner>/<repo>"),
    ("https://huggingface.co/", "<owner>/<repo>"),
    ("https://huggingface.co/gpt2", "<owner>/<repo>"),
    ("https://huggingface.co/a//", "<owner>/<repo>"),
    ("https://huggingface.co/datasets/squad", "not a model repository"),
    ("https://huggingface.co/spaces/a/b", "not a model repository"),
    ("https://huggingface.co/a/b/blob/main/config.json", "unexpected path"),
    ("https://huggingface.co/a/b/resolve/main/model.safetensors", "unexpected path"),
    ("https://huggingface.co/a/b/tree", "unexpected path"),
    ("https://huggingface.co/a/b/tree/", "unexpected path"),
    ("https://huggingface.co/a/b/tree/main/onnx", "folder view"),
    ("https://huggingface.co/a/b/tree/a..b", "invalid revision"),
    ("https://huggingface.co/a/b/tree/x.lock", "invalid revision"),
    ("https://huggingface.co/a/b/tree/has%20space", "invalid revision"),
    ("https://huggingface.co/a/b.git", ".git"),
    ("https://huggingface.co/-a/b", "invalid repository name"),
    ("https://huggingface.co/a/b--c", "invalid repository name"),
    ("https://huggingface.co/a/b?library=transformers", "query"),
    ("https://huggingface.co/a/b#readme", "query"),
    ("https://user:pw@huggingface.co/a/b", "credentials"),
    ("https://huggingface.co:8443/a/b", "port"),
    ("https://ollama.com/qwen3", "/library/<name>"),
    ("https://ollama.com/someone/model", "/library/<name>"),
    ("https://ollama.com/", "/library/<name>"),
    ("https://ollama.com/library", "name is missing"),
    ("https://ollama.com/library/", "name is missing"),
    ("https://ollama.com/library/:latest", "name is missing"),
    ("https://ollama.com/library/qwen3/tags", "extra path"),
    ("https://ollama.com/library/qwen3:", "empty tag"),
    ("https://ollama.com/library/qwen3:a:b", "invalid tag"),
    ("https://ollama.com/library/qwen3:.x", "invalid tag"),
    ("https://ollama.com/library/-qwen", "invalid model name"),
    ("https://ollama.com/library/qw en", "invalid model name"),
    ("http://ollama.com/library/qwen3", "only https"),
    ("https://registry.ollama.ai/library/qwen3", "unknown host"),
]


@pytest.mark.parametrize(("url", "expected"), ACCEPTED, ids=[u for u, _ in ACCEPTED])
def test_accepted(url: str, expected: tuple[str, str, str]) -> None:
    parsed = parse_source_url(url)
    assert (parsed.kind, parsed.repository, parsed.revision) == expected
    # The canonical URL parses back to the same thing.
    assert parse_source_url(parsed.url) == parsed


@pytest.mark.parametrize(("url", "why"), REJECTED, ids=[u or "empty" for u, _ in REJECTED])
def test_rejected(url: str, why: str) -> None:
    with pytest.raises(SourceError) as info:
        parse_source_url(url)
    assert info.value.reason == Reason.UNSUPPORTED_SOURCE
    assert why in info.value.message
    # Every message shows the accepted form(s).
    assert "https://huggingface.co/<owner>/<repo>" in info.value.message or (
        "https://ollama.com/library/<name>[:<tag>]" in info.value.message
    )


def test_ollama_message_shows_only_ollama_form() -> None:
    with pytest.raises(SourceError) as info:
        parse_source_url("https://ollama.com/qwen3")
    assert "https://ollama.com/library/<name>[:<tag>]" in info.value.message
    assert "huggingface" not in info.value.message


def test_properties() -> None:
    hf = parse_source_url("https://hf.co/BAAI/bge-m3/tree/refs%2Fpr%2F3")
    assert hf.name == "bge-m3"
    assert hf.url == "https://huggingface.co/BAAI/bge-m3/tree/refs%2Fpr%2F3"
    ol = parse_source_url("https://ollama.com/library/qwen3")
    assert (ol.name, ol.tag) == ("qwen3", "latest")
    assert ol.url == "https://ollama.com/library/qwen3:latest"
    assert ParsedSource("ollama", "library/x", "1b").url == "https://ollama.com/library/x:1b"


def test_non_string_is_rejected() -> None:
    with pytest.raises(SourceError):
        parse_source_url(None)  # type: ignore[arg-type]
