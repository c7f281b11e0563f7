"""Parse a Model's ``spec.source.url`` into the source it names.

Pure: the hooks call this at sync time to fail a malformed URL at once with
``UnsupportedSource`` (no worker, no network), and the worker calls it again
to pick its adapter, so both always agree on what a URL means.

Accepted forms (everything else is rejected with a message listing them):

- ``https://huggingface.co/<owner>/<repo>`` or ``https://hf.co/<owner>/<repo>``,
  optionally followed by ``/tree/<revision>`` and/or a trailing slash. The
  revision is one path segment (a branch, a tag or a commit sha), percent-
  decoded, so ``refs%2Fpr%2F1`` (as the Hub's web pages write it) works; the
  literal multi-segment Hub refs ``refs/pr/<n>`` and ``refs/convert/<name>``
  are also accepted. Any other path after ``/tree/<revision>`` is a folder
  view, not a model, and is rejected.
- ``https://ollama.com/library/<name>[:<tag>]`` (tag defaults to ``latest``),
  optionally with a trailing slash. The name is lower-cased: registry
  repository names are lower case and Ollama treats names case-insensitively.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

from lib.api.types import Reason
from lib.sources.base import SourceError

HF_HOSTS = frozenset({"huggingface.co", "hf.co"})
OLLAMA_HOSTS = frozenset({"ollama.com"})
DEFAULT_HF_REVISION = "main"
DEFAULT_OLLAMA_TAG = "latest"

HF_FORM = "https://huggingface.co/<owner>/<repo>[/tree/<revision>] (or https://hf.co/...)"
OLLAMA_FORM = "https://ollama.com/library/<name>[:<tag>]"
ACCEPTED_FORMS = f"{HF_FORM} or {OLLAMA_FORM}"

# Hub repo-id parts: letters, digits, '-', '_', '.', not starting or ending
# with '-' or '.', at most 96 characters, no '--' or '..' (huggingface_hub's rule).
_HF_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")
# Hub namespaces that are not model owners.
_HF_NOT_MODELS = frozenset({"datasets", "spaces", "api", "docs", "collections", "organizations", "settings"})
# Characters git forbids in ref names (git-check-ref-format), plus whitespace.
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
_HF_MULTI_SEGMENT_REF = re.compile(r"refs/(?:pr/[0-9]+|convert/[A-Za-z0-9_.-]+)")

# Ollama model names become a registry path component: the OCI distribution
# grammar for one component, at most 80 characters (Ollama's limit).
_OLLAMA_NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_OLLAMA_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

SourceKind = Literal["huggingface", "ollama"]


@dataclass(frozen=True)
class ParsedSource:
    """A source URL taken apart.

    ``repository`` is ``<owner>/<repo>`` for Hugging Face and ``library/<name>``
    for Ollama; ``revision`` is the Hub revision (default ``main``) or the
    Ollama tag (default ``latest``).
    """

    kind: SourceKind
    repository: str
    revision: str

    @property
    def name(self) -> str:
        """The last path part: the Hub repo name or the Ollama model name."""
        return self.repository.rsplit("/", 1)[-1]

    @property
    def tag(self) -> str:
        return self.revision

    @property
    def url(self) -> str:
        """The canonical URL (hosts and defaults normalised)."""
        if self.kind == "huggingface":
            if self.revision == DEFAULT_HF_REVISION:
                return f"https://huggingface.co/{self.repository}"
            return f"https://huggingface.co/{self.repository}/tree/{quote(self.revision, safe='')}"
        return f"https://ollama.com/{self.repository}:{self.revision}"


def _unsupported(url: str, why: str, form: str = ACCEPTED_FORMS) -> SourceError:
    return SourceError(Reason.UNSUPPORTED_SOURCE, f"unsupported source URL {url!r}: {why}; expected {form}")


def parse_source_url(url: str) -> ParsedSource:
    """Parse ``url`` or raise ``SourceError(UnsupportedSource, ...)`` saying why."""
    if not isinstance(url, str) or not url.strip():
        raise _unsupported(str(url), "empty URL")
    if url != url.strip():
        raise _unsupported(url, "leading or trailing whitespace")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise _unsupported(url, f"not a URL ({e})") from None
    host = (parts.hostname or "").lower()
    if host not in HF_HOSTS and host not in OLLAMA_HOSTS:
        raise _unsupported(url, f"unknown host {host or '(none)'!r}")
    form = HF_FORM if host in HF_HOSTS else OLLAMA_FORM
    if parts.scheme.lower() != "https":
        raise _unsupported(url, "only https URLs are accepted", form)
    if parts.username is not None or parts.password is not None:
        raise _unsupported(url, "credentials in the URL are not accepted (use authSecretRef)", form)
    if port is not None:
        raise _unsupported(url, "a port is not accepted", form)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise _unsupported(url, "query strings and fragments are not accepted", form)
    path = parts.path
    if path.endswith("/"):
        path = path[:-1]
    segments = path.split("/")[1:] if path else []
    if host in HF_HOSTS:
        return _parse_hf(url, segments)
    return _parse_ollama(url, segments)


def _parse_hf(url: str, segments: list[str]) -> ParsedSource:
    if len(segments) < 2 or not segments[0] or not segments[1]:
        raise _unsupported(url, "the path must name <owner>/<repo>", HF_FORM)
    owner, repo = segments[0], segments[1]
    if owner.lower() in _HF_NOT_MODELS:
        raise _unsupported(url, f"'{owner}/...' is not a model repository", HF_FORM)
    for part in (owner, repo):
        if not _HF_PART.fullmatch(part) or "--" in part or ".." in part:
            raise _unsupported(url, f"invalid repository name part {part!r}", HF_FORM)
    if repo.endswith(".git"):
        raise _unsupported(url, "use the repository page URL, not its .git clone URL", HF_FORM)
    rest = segments[2:]
    revision = DEFAULT_HF_REVISION
    if rest:
        if rest[0] != "tree" or len(rest) < 2:
            raise _unsupported(url, f"unexpected path /{'/'.join(rest)} after the repository", HF_FORM)
        revision = _hf_revision(url, rest[1:])
    return ParsedSource("huggingface", f"{owner}/{repo}", revision)


def _hf_revision(url: str, segments: list[str]) -> str:
    """One (percent-decoded) segment, or the literal Hub refs refs/pr/N, refs/convert/X."""
    literal = "/".join(segments)
    if len(segments) > 1 and not _HF_MULTI_SEGMENT_REF.fullmatch(literal):
        raise _unsupported(
            url,
            f"'/tree/{literal}' is a folder view or an unencoded revision; "
            "give the revision as one segment (encode '/' as %2F)",
            HF_FORM,
        )
    revision = unquote(literal)
    if (
        not revision
        or _BAD_REF.search(revision)
        or revision.startswith(("/", ".", "-"))
        or revision.endswith(("/", ".", ".lock"))
        or len(revision) > 255
    ):
        raise _unsupported(url, f"invalid revision {revision!r}", HF_FORM)
    return revision


def _parse_ollama(url: str, segments: list[str]) -> ParsedSource:
    if not segments or segments[0] != "library":
        why = "only models of the Ollama library (/library/<name>) are accepted"
        raise _unsupported(url, why, OLLAMA_FORM)
    if len(segments) != 2 or not segments[1]:
        why = "the model name is missing" if len(segments) < 2 or not segments[1] else "unexpected extra path"
        raise _unsupported(url, why, OLLAMA_FORM)
    name, sep, tag = unquote(segments[1]).partition(":")
    name = name.lower()
    if sep and not tag:
        raise _unsupported(url, "empty tag after ':'", OLLAMA_FORM)
    if not name:
        raise _unsupported(url, "the model name is missing", OLLAMA_FORM)
    if len(name) > 80 or not _OLLAMA_NAME.fullmatch(name):
        raise _unsupported(
            url,
            f"invalid model name {name!r} (letters, digits and single '.', '_' or '-' between them)",
            OLLAMA_FORM,
        )
    tag = tag or DEFAULT_OLLAMA_TAG
    if not _OLLAMA_TAG.fullmatch(tag):
        raise _unsupported(url, f"invalid tag {tag!r}", OLLAMA_FORM)
    return ParsedSource("ollama", f"library/{name}", tag)
