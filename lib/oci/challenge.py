"""``WWW-Authenticate`` parsing and scopes (no I/O; token fetching is in ``auth``).

A header may hold several challenges, each ``Scheme k=v, k="quoted, with commas"``;
distribution sends one ``Bearer`` (token auth) or ``Basic`` (htpasswd) challenge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercased: "bearer", "basic", ...
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t":
        i += 1
    return i


def _quoted(s: str, i: int) -> tuple[str, int]:
    """Parse a quoted string starting at s[i] == '"'; returns (value, index after)."""
    out = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise ValueError("unterminated quoted string in WWW-Authenticate")


def parse_www_authenticate(header: str | None) -> list[Challenge]:
    """All challenges in the header; malformed parameters raise ``ValueError``."""
    if not header:
        return []
    s = header
    i = 0
    out: list[Challenge] = []
    current: Challenge | None = None
    while True:
        i = _skip_ws(s, i)
        while i < len(s) and s[i] == ",":
            i = _skip_ws(s, i + 1)
        if i >= len(s):
            break
        m = _TOKEN.match(s, i)
        if not m:
            raise ValueError(f"unexpected character {s[i]!r} in WWW-Authenticate at {i}")
        word, j = m.group(0), m.end()
        j2 = _skip_ws(s, j)
        if j2 < len(s) and s[j2] == "=" and current is not None and not s.startswith("==", j2):
            # auth-param of the current challenge
            k = _skip_ws(s, j2 + 1)
            if k < len(s) and s[k] == '"':
                value, i = _quoted(s, k)
            else:
                mv = re.compile(r"[^,\s]*").match(s, k)
                assert mv is not None
                value, i = mv.group(0), mv.end()
            current.params[word.lower()] = value
        else:
            # a new challenge: "Scheme" possibly followed by a token68 (ignored)
            current = Challenge(scheme=word.lower(), params={})
            out.append(current)
            i = j2
            m68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=\s*(,|$))").match(s, i)
            if m68 and "=" not in s[i : m68.end()].rstrip("="):
                i = m68.end()
    return out


@dataclass(frozen=True, order=True)
class Scope:
    """A token scope ``type:name:actions`` (``repository:models/a:pull,push``)."""

    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    @classmethod
    def parse(cls, text: str) -> Scope:
        # The name may contain ':' only in registry:catalog:*, so split from both ends.
        typ, _, rest = text.partition(":")
        name, _, actions = rest.rpartition(":")
        if not typ or not name:
            raise ValueError(f"invalid scope {text!r}")
        return cls(typ, name, tuple(a for a in actions.split(",") if a))


def repository_scope(repo: str, *actions: str) -> Scope:
    return Scope("repository", repo, tuple(actions))


_ACTION_ORDER = {"pull": 0, "push": 1, "delete": 2}


def merge_scopes(scopes: tuple[Scope, ...] | list[Scope]) -> tuple[Scope, ...]:
    """One scope per (type, name) with the union of actions, in a stable order."""
    merged: dict[tuple[str, str], set[str]] = {}
    for s in scopes:
        merged.setdefault((s.type, s.name), set()).update(s.actions)
    return tuple(
        Scope(t, n, tuple(sorted(a, key=lambda x: (_ACTION_ORDER.get(x, 9), x))))
        for (t, n), a in sorted(merged.items())
    )


def scopes_key(scopes: tuple[Scope, ...]) -> str:
    return " ".join(sorted(str(s) for s in scopes))


def parse_scopes(text: str | None) -> tuple[Scope, ...]:
    """A challenge's ``scope`` parameter: space-separated scopes."""
    return tuple(Scope.parse(t) for t in (text or "").split() if t)
