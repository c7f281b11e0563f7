"""Hugging Face Hub source: one commit of a model repository, file by file.

The revision named in the URL (default ``main``) is resolved to its commit
sha first (``/api/models/{repo}/revision/{rev}?blobs=true``) and every file
is downloaded at that commit (``/{repo}/resolve/{sha}/{file}``), so a branch
moving during a long publish cannot mix two snapshots.

Verification is split by who knows what:

- LFS files (weights) declare ``sha256`` (``lfs.sha256``) and ``size``; the
  publish pipeline hashes every byte it pushes and fails the publish naming
  the file when they differ. The adapter does not hash them a second time.
- Small (non-LFS) files have no sha256 on the Hub, only their git blob id
  (``sha1("blob <size>\\0" + content)``). The adapter checks it while the
  file streams from offset 0 and raises ``PublicationFailed`` naming the file;
  the pipeline still checks the size.
- A server announcing another size than the model info said fails before
  any byte is yielded.

Which files make the model is the pure ``select_files`` (see
``docs/sources.md`` for the rule and its reasons).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lib.api.types import Reason
from lib.sources.adapter import SourceOptions
from lib.sources.base import Opener, SourceError, SourceFile, SourceSnapshot, owned_snapshot
from lib.sources.http import (
    READ_AHEAD,
    ContentMismatch,
    HttpClient,
    HttpError,
    HttpPolicy,
    HttpStatusError,
    Unavailable,
)
from lib.sources.urls import ParsedSource, parse_source_url

DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA1 = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

# --------------------------------------------------------------------------
# File selection (pure).
# --------------------------------------------------------------------------

SAFE_WEIGHTS = (".safetensors",)
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt")
GGUF_WEIGHTS = (".gguf",)
CONFIG_EXTENSIONS = (".json", ".txt", ".model", ".tiktoken", ".jinja", ".yaml", ".yml", ".vocab", ".spm")
CODE_EXTENSIONS = (".py",)
DOC_EXTENSIONS = (".md",)
DOC_STEMS = ("readme", "license", "licence", "notice", "copying", "use_policy", "usage_policy")
# Other export formats of the same weights, and tooling leftovers.
EXCLUDED_DIRS = frozenset(
    {"onnx", "openvino", "coreml", "tflite", "tf", "flax", "jax", "mlx", "runs", "logs"}
)
EXCLUDED_NAME_PREFIXES = ("flax_model", "tf_model", "openvino_", "rust_model", "model.onnx", "optimizer.",
                          "rng_state", "training_args.", "trainer_state.", "scheduler.pt")
# Diffusers weight variants: name.fp16.safetensors, name.fp16-00001-of-00002.safetensors,
# name.safetensors.index.fp16.json.
_VARIANT = re.compile(r"^(?P<stem>.+?)\.(?P<variant>fp16|fp32|bf16|non_ema|ema_only|ema)"
                      r"(?:-\d+-of-\d+)?\.(?P<ext>safetensors|bin)$")
_VARIANT_INDEX = re.compile(r"^(?P<stem>.+?)\.(?P<ext>safetensors|bin)\.index\."
                            r"(?P<variant>fp16|fp32|bf16|non_ema|ema_only|ema)\.json$")
_SHARD = re.compile(r"-\d+-of-\d+(?=\.(?:safetensors|bin)$)")


def classify(path: str) -> str | None:
    """``weight``, ``config``, ``code`` or ``doc`` for a file the model may need; None to leave out."""
    parts = path.split("/")
    name = parts[-1]
    lower = name.lower()
    if any(p.startswith(".") for p in parts):
        return None  # .gitattributes, .github/, .cache/
    if any(p.lower() in EXCLUDED_DIRS or p.startswith("checkpoint-") for p in parts[:-1]):
        return None
    if lower.startswith(EXCLUDED_NAME_PREFIXES):
        return None
    stem = lower.split(".", 1)[0]
    if stem in DOC_STEMS or lower.endswith(DOC_EXTENSIONS):
        return "doc"
    if lower.endswith(SAFE_WEIGHTS + PICKLE_WEIGHTS + GGUF_WEIGHTS):
        return "weight"
    if lower.endswith(CONFIG_EXTENSIONS):
        return "config"
    if lower.endswith(CODE_EXTENSIONS):
        return "code"
    return None  # images, onnx/h5/msgpack/ot/tflite exports, archives, anything unknown


def select_files(paths: Iterable[str]) -> list[str]:
    """The files of a repo that make the model, in publish order (small files, then weights).

    1. Keep weights, configs/tokenizer/chat templates, code and docs
       (``classify``); drop dotfiles, images, other export formats (onnx/,
       openvino/, flax/tf weights, ``*.h5``/``*.msgpack``/``*.ot``...) and
       training leftovers.
    2. In a directory with ``*.safetensors``, drop pickle weights
       (``*.bin``/``*.pt``/``*.pth``/``*.ckpt``) and their ``*.bin.index.json``.
    3. Drop diffusers variants (``*.fp16.safetensors``, ...) where the plain
       weights exist in the same directory.
    4. In a diffusers repo (root ``model_index.json``), drop root-level
       single-file checkpoints: the components hold the weights.
    5. Drop ``*.gguf`` when Safetensors or PyTorch weights are kept: a GGUF
       next to them is a quantised export. A GGUF-only repo keeps all its GGUFs.
    """
    kinds = {p: k for p in paths if (k := classify(p)) is not None}
    dirs: dict[str, list[str]] = {}
    for p in kinds:
        dirs.setdefault(posixpath.dirname(p), []).append(posixpath.basename(p))

    def drop(p: str) -> bool:
        d, name = posixpath.dirname(p), posixpath.basename(p).lower()
        siblings = [n.lower() for n in dirs[d]]
        has_safe = any(n.endswith(SAFE_WEIGHTS) for n in siblings)
        if has_safe and (name.endswith(PICKLE_WEIGHTS) or name.endswith(".bin.index.json")):
            return True
        m = _VARIANT.match(name) or _VARIANT_INDEX.match(name)
        if m:
            plain = [n for n in siblings if n.endswith("." + m["ext"]) and not _VARIANT.match(n)]
            if any(_SHARD.sub("", n) == f"{m['stem']}.{m['ext']}" for n in plain):
                return True
        if d == "" and "model_index.json" in siblings and kinds[p] == "weight":
            return True
        return False

    kept = [p for p in kinds if not drop(p)]
    has_tensors = any(p.lower().endswith(SAFE_WEIGHTS + PICKLE_WEIGHTS) for p in kept)
    if has_tensors:
        kept = [p for p in kept if not p.lower().endswith(GGUF_WEIGHTS)]
    return sorted(kept, key=lambda p: (kinds[p] == "weight", p))


def is_safe_path(path: str) -> bool:
    """A relative '/'-separated path that cannot escape the model directory."""
    if not path or path.startswith("/") or "\\" in path or any(ord(c) < 32 for c in path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


# --------------------------------------------------------------------------
# Tokens.
# --------------------------------------------------------------------------


def read_hf_token(path: str | os.PathLike[str]) -> str:
    """The token in ``path`` (the Secret's value, mounted as a file), whitespace stripped."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(Reason.AUTH_SECRET_INVALID, f"cannot read the Hugging Face token: {e}") from e
    if not token:
        raise SourceError(Reason.AUTH_SECRET_INVALID, "the Hugging Face token in authSecretRef is empty")
    if not token.isascii() or any(c.isspace() or not c.isprintable() for c in token):
        raise SourceError(
            Reason.AUTH_SECRET_INVALID,
            "the Hugging Face token in authSecretRef contains whitespace or non-ASCII characters",
        )
    return token


# --------------------------------------------------------------------------
# The adapter.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sibling:
    path: str
    size: int | None
    blob_id: str | None
    sha256: str | None  # set for LFS files


def parse_siblings(doc: Any) -> list[Sibling]:
    """Siblings of a model-info answer, validated; raises ValueError on a malformed one."""
    raw = doc.get("siblings")
    if not isinstance(raw, list):
        raise ValueError("no siblings list")
    out = []
    for s in raw:
        if not isinstance(s, dict) or not isinstance(s.get("rfilename"), str):
            raise ValueError(f"malformed sibling {s!r:.100}")
        lfs = s.get("lfs") if isinstance(s.get("lfs"), dict) else None
        size = lfs.get("size") if lfs and isinstance(lfs.get("size"), int) else s.get("size")
        sha256 = lfs.get("sha256") if lfs else None
        if sha256 is not None and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
            raise ValueError(f"malformed lfs.sha256 for {s['rfilename']}")
        blob_id = s.get("blobId")
        out.append(Sibling(
            s["rfilename"],
            size if isinstance(size, int) and size >= 0 else None,
            blob_id if isinstance(blob_id, str) and _SHA1.fullmatch(blob_id) else None,
            sha256,
        ))
    return out


def hints_from(doc: dict[str, Any], repo: str) -> dict[str, Any]:
    hints: dict[str, Any] = {"repo_id": repo}
    for key in ("pipeline_tag", "library_name"):
        if isinstance(doc.get(key), str):
            hints[key] = doc[key]
    if isinstance(doc.get("tags"), list):
        hints["tags"] = [t for t in doc["tags"] if isinstance(t, str)]
    card = doc.get("cardData")
    if isinstance(card, dict):
        for key in ("license", "language"):
            if isinstance(card.get(key), str | list):
                hints[key] = card[key]
        if isinstance(card.get("license_name"), str):
            hints["license_name"] = card["license_name"]
    if doc.get("gated"):
        hints["gated"] = True
    return hints


def commit_date(doc: dict[str, Any]) -> str:
    """The revision's commit date (model info ``lastModified``) as RFC 3339 UTC, or ``""``.

    huggingface_hub documents ``lastModified`` as "date of last commit to the
    repo"; we ask for the pinned revision and take it as that commit's date,
    fixed for a commit sha, hence fit for the ModelPack ``createdAt`` and the
    files' mtime (not verified against the live Hub here: docs/publish.md).
    """
    value = doc.get("lastModified")
    if not isinstance(value, str):
        return ""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return ""
    if when.tzinfo is None:
        return ""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HuggingFaceSource:
    """``snapshot()`` resolves the revision and lists the files; bytes move on ``open``."""

    def __init__(
        self,
        url_or_parsed: str | ParsedSource,
        *,
        token: str | None,
        endpoint: str | None = None,
        policy: HttpPolicy = HttpPolicy(),
        sleep: Callable[[float], None] = time.sleep,
    ):
        parsed = parse_source_url(url_or_parsed) if isinstance(url_or_parsed, str) else url_or_parsed
        if parsed.kind != "huggingface":
            raise SourceError(Reason.UNSUPPORTED_SOURCE, f"{parsed.url} is not a Hugging Face URL")
        self.repo = parsed.repository
        self.revision = parsed.revision
        self.token = token or None
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.http = HttpClient(
            authorization=f"Bearer {self.token}" if self.token else None,
            auth_origins={self.endpoint},
            policy=policy,
            sleep=sleep,
        )
        self.commit = ""

    # -- errors a user can act on ------------------------------------------------

    def _error(self, e: HttpError, path: str | None = None) -> SourceError:
        repo, page = self.repo, f"{self.endpoint}/{self.repo}"
        where = f"{path}: " if path else ""
        if isinstance(e, Unavailable):
            return SourceError(Reason.SOURCE_UNAVAILABLE, f"Hugging Face unavailable: {where}{e.message}")
        if isinstance(e, ContentMismatch):
            return SourceError(Reason.PUBLICATION_FAILED, f"{where}{e.message}")
        if not isinstance(e, HttpStatusError):
            return SourceError(Reason.PUBLICATION_FAILED, f"{where}{e.message}")
        code, status = e.error_code, e.status
        if code == "GatedRepo":
            if status == 401 or not self.token:
                msg = (f"{repo} is a gated repository: provide a token (spec.source.authSecretRef) of an "
                       f"account that has been granted access at {page}")
            else:
                msg = (f"{repo} is a gated repository and the token's account has no access: "
                       f"request access at {page}")
            return SourceError(Reason.PUBLICATION_FAILED, msg)
        if code == "RevisionNotFound":
            return SourceError(Reason.PUBLICATION_FAILED, f"revision {self.revision!r} not found in {repo}")
        if code == "EntryNotFound":
            return SourceError(Reason.PUBLICATION_FAILED,
                               f"{where}file missing from {repo} at commit {self.commit or self.revision}")
        if status == 401 and self.token and code != "RepoNotFound":
            return SourceError(Reason.PUBLICATION_FAILED,
                               "the Hugging Face token was rejected (invalid or expired): "
                               "update the Secret named in spec.source.authSecretRef")
        if code == "RepoNotFound" or status in (401, 404):
            if self.token:
                msg = (f"repository {repo} not found, or the token in spec.source.authSecretRef "
                       "cannot read it: check the URL and the token's access")
            else:
                msg = (f"repository {repo} not found, or it is private: check the URL, or set "
                       "spec.source.authSecretRef to a Secret with a token that can read it")
            return SourceError(Reason.PUBLICATION_FAILED, msg)
        if status == 403:
            msg = f"{where}access to {repo} denied: {e.error_message}"
            return SourceError(Reason.PUBLICATION_FAILED, msg)
        return SourceError(Reason.PUBLICATION_FAILED, f"{where}{e.message}")

    # -- resolution ----------------------------------------------------------------

    def _file_url(self, path: str) -> str:
        return f"{self.endpoint}/{self.repo}/resolve/{self.commit}/{quote(path)}"

    def snapshot(self) -> SourceSnapshot:
        url = f"{self.endpoint}/api/models/{self.repo}/revision/{quote(self.revision, safe='')}?blobs=true"
        try:
            doc = self.http.get_json(url)
        except HttpError as e:
            raise self._error(e) from e
        try:
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            commit = doc.get("sha")
            if not isinstance(commit, str) or not _SHA1.fullmatch(commit):
                raise ValueError(f"no commit sha (got {commit!r:.60})")
            siblings = parse_siblings(doc)
        except ValueError as e:
            raise SourceError(Reason.PUBLICATION_FAILED, f"unexpected model info for {self.repo}: {e}") from e
        self.commit = commit
        unsafe = [s.path for s in siblings if not is_safe_path(s.path)]
        if unsafe:
            raise SourceError(Reason.PUBLICATION_FAILED, f"{self.repo} has unsafe file names: {unsafe[:3]}")
        by_path = {s.path: s for s in siblings}
        selected = select_files(by_path)
        if not any(classify(p) == "weight" for p in selected):
            raise SourceError(
                Reason.PUBLICATION_FAILED,
                f"{self.repo} at {commit[:12]} has no model weights (*.safetensors, *.gguf, *.bin): "
                f"{len(siblings)} files, e.g. {sorted(by_path)[:5]}",
            )
        if doc.get("gated"):
            # Model info of a gated repo is public; downloads are not. Fail now,
            # not after some files were pushed.
            self._probe(selected[0])
        files = [
            SourceFile(path=p, open=self._opener(by_path[p]), size=by_path[p].size,
                       sha256=by_path[p].sha256, kind=classify(p),
                       git_blob=None if by_path[p].sha256 else by_path[p].blob_id)
            for p in selected
        ]
        return SourceSnapshot(
            resolved_type="HuggingFace",
            files=files,
            revision=commit,
            hints=hints_from(doc, self.repo),
            name=self.repo,
            source_url=f"{DEFAULT_ENDPOINT}/{self.repo}",
            created=commit_date(doc),
        )

    def _probe(self, path: str) -> None:
        try:
            self.http.request(self._file_url(path), headers={"Range": "bytes=0-0"}, stream=True).close()
        except HttpError as e:
            raise self._error(e, path) from e

    # -- bytes ----------------------------------------------------------------------

    def _opener(self, sibling: Sibling) -> Opener:
        return partial(self._open, sibling)

    @contextmanager
    def _open(self, sibling: Sibling, offset: int) -> Iterator[Iterator[bytes]]:
        url = self._file_url(sibling.path)
        with self.http.open_stream(url, offset=offset, size=sibling.size, read_ahead=READ_AHEAD) as chunks:
            yield self._checked(sibling, chunks, offset)

    def _checked(self, sibling: Sibling, chunks: Iterator[bytes], offset: int) -> Iterator[bytes]:
        """Translate transfer errors; check the git blob id of a small file read from the start."""
        git = None
        if sibling.sha256 is None and sibling.blob_id and sibling.size is not None and offset == 0:
            git = hashlib.sha1(b"blob %d\x00" % sibling.size)
        try:
            for chunk in chunks:
                if git is not None:
                    git.update(chunk)
                yield chunk
        except HttpError as e:
            raise self._error(e, sibling.path) from e
        if git is not None and git.hexdigest() != sibling.blob_id:
            raise SourceError(
                Reason.PUBLICATION_FAILED,
                f"{sibling.path}: content does not match its git blob id {sibling.blob_id} "
                f"(got {git.hexdigest()})",
            )

    def close(self) -> None:
        self.http.close()


def open_source(source: str, options: SourceOptions) -> SourceSnapshot:
    """The registry's adapter: a Hub URL, the token file in ``--auth-file``, ``HF_ENDPOINT`` for mirrors."""
    token = read_hf_token(options.auth_file) if options.auth_file else None
    hub = HuggingFaceSource(parse_source_url(source), token=token, endpoint=options.env.get("HF_ENDPOINT"))
    return owned_snapshot(hub)
