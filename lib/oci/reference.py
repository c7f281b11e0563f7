"""OCI references: ``host[:port]/repository[:tag][@algorithm:hex]``.

Every reference this project handles names its registry explicitly (DMCR,
a catalog, Ollama's registry), so unlike Docker there is no implicit
``docker.io`` and a missing host is an error instead of a silent guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

# The grammar of distribution's reference package, written from the spec.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?$")
MAX_NAME = 255


class InvalidReference(ValueError):
    """The text is not a ``host/repository[:tag][@digest]`` reference."""


def is_digest(value: str) -> bool:
    """True for ``algorithm:hex`` digests; sha256 must be 64 lowercase hex digits."""
    if value.startswith("sha256:"):
        return bool(SHA256_RE.match(value))
    return bool(DIGEST_RE.match(value))


def validate_repository(repo: str) -> str:
    if not repo or len(repo) > MAX_NAME or not REPOSITORY_RE.match(repo):
        raise InvalidReference(
            f"invalid repository name {repo!r}: use lowercase letters, digits and . _ - separators, "
            "'/' between path components"
        )
    return repo


def validate_digest(digest: str) -> str:
    if not is_digest(digest):
        raise InvalidReference(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex digits>")
    return digest


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port], no scheme
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse ``host[:port]/repo[:tag][@digest]``; a scheme prefix is refused."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidReference("empty reference: expected host[:port]/repository[:tag][@digest]")
        text = text.strip()
        if "://" in text:
            raise InvalidReference(
                f"reference {text!r} must not contain a scheme (drop '{text.split('://')[0]}://')"
            )
        name, _, digest = text.partition("@")
        registry, slash, rest = name.partition("/")
        if not slash or not rest:
            raise InvalidReference(f"reference {text!r} has no repository: expected host[:port]/repository")
        if not _HOST_RE.match(registry) or not (
            "." in registry or ":" in registry or registry == "localhost"
        ):
            raise InvalidReference(
                f"reference {text!r} does not start with a registry host "
                "(host[:port], e.g. registry.local:5000)"
            )
        tag: str | None = None
        # A ':' after the last '/' separates the tag (a ':' in the host is before any '/').
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, _, tag = rest.rpartition(":")
            if not TAG_RE.match(tag):
                raise InvalidReference(f"invalid tag {tag!r} in {text!r}")
        validate_repository(rest)
        if digest:
            validate_digest(digest)
        elif "@" in text:
            raise InvalidReference(f"reference {text!r} has an empty digest after '@'")
        return cls(registry=registry, repository=rest, tag=tag, digest=digest or None)

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def ref(self) -> str:
        """What to ask the manifests endpoint for: the digest if pinned, else the tag, else ``latest``."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        return replace(self, tag=None, digest=validate_digest(digest))

    def with_tag(self, tag: str) -> Reference:
        if not TAG_RE.match(tag):
            raise InvalidReference(f"invalid tag {tag!r}")
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s
