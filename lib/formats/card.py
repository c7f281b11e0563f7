"""Licenses and languages as ModelPack writes them, from model cards and GGUF keys.

A Hugging Face model card (``README.md``) starts with YAML front matter whose
``license`` is one of the Hub's license ids (``apache-2.0``, ``llama3.1``,
``other`` with ``license_name``) and whose ``language`` is one code or a
list. ModelPack (model-spec v0.0.7, docs/config.md) wants
``descriptor.licenses`` as SPDX license expressions and
``capabilities.languages`` as ISO 639 two-letter codes (its schema:
``^[a-z]{2}$``). So Hub ids that are SPDX identifiers get SPDX's spelling,
the others become ``LicenseRef-<id>`` (SPDX's form for licenses outside its
list), and language values that are not two-letter codes are dropped. Pure.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MAX_FRONT_MATTER = 64 << 10
MAX_VALUES = 64

# Hub license ids (lower case) that are SPDX identifiers → SPDX's spelling
# (SPDX License List; identifiers match case-insensitively, we write the listed form).
SPDX_IDS = {
    i.lower(): i
    for i in (
        "AFL-3.0", "AGPL-3.0", "AGPL-3.0-only", "AGPL-3.0-or-later", "Apache-2.0", "Artistic-2.0",
        "BSD-2-Clause", "BSD-3-Clause", "BSD-3-Clause-Clear", "BSL-1.0", "CC-BY-2.0", "CC-BY-2.5",
        "CC-BY-3.0", "CC-BY-4.0", "CC-BY-NC-2.0", "CC-BY-NC-3.0", "CC-BY-NC-4.0", "CC-BY-NC-ND-3.0",
        "CC-BY-NC-ND-4.0", "CC-BY-NC-SA-2.0", "CC-BY-NC-SA-3.0", "CC-BY-NC-SA-4.0", "CC-BY-ND-4.0",
        "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC0-1.0", "CDLA-Permissive-1.0", "CDLA-Permissive-2.0",
        "CDLA-Sharing-1.0", "ECL-2.0", "EPL-1.0", "EPL-2.0", "etalab-2.0", "EUPL-1.1", "EUPL-1.2",
        "GPL-2.0", "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0", "GPL-3.0-only", "GPL-3.0-or-later",
        "ISC", "LGPL-2.1", "LGPL-2.1-only", "LGPL-3.0", "LGPL-3.0-only", "LGPLLR", "LPPL-1.3c", "MIT",
        "MPL-2.0", "MS-PL", "NCSA", "ODbL-1.0", "ODC-By-1.0", "OFL-1.1", "OSL-3.0", "PDDL-1.0",
        "PostgreSQL", "Unlicense", "WTFPL", "Zlib",
    )
}
# Hub ids whose SPDX identifier is spelled differently.
HUB_ALIASES = {"odbl": "ODbL-1.0", "odc-by": "ODC-By-1.0", "pddl": "PDDL-1.0", "lgpl-lr": "LGPLLR"}
UNKNOWN = frozenset({"", "unknown", "none", "noassertion"})
_OPERATORS = {"and": "AND", "or": "OR", "with": "WITH"}
_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_REF_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
_LANG = re.compile(r"[a-z]{2}")


def front_matter(text: bytes | str | None) -> dict[str, Any]:
    """The YAML front matter of a model card (``---`` … ``---`` at the top), or ``{}``."""
    if not text:
        return {}
    if isinstance(text, bytes):
        text = text[:MAX_FRONT_MATTER].decode("utf-8", errors="replace")
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            try:
                doc = yaml.safe_load("\n".join(lines[1:i]))
            except yaml.YAMLError:
                return {}
            return doc if isinstance(doc, dict) else {}
    return {}  # no closing line within the bytes read


def _license_ref(text: str) -> str:
    ref = _REF_UNSAFE.sub("-", text).strip("-")
    return f"LicenseRef-{ref}" if ref else ""


def _spdx_token(token: str) -> str:
    lower = token.lower()
    if lower in _OPERATORS:
        return _OPERATORS[lower]
    if token in ("(", ")") or token.startswith(("LicenseRef-", "DocumentRef-")):
        return token
    plus = token.endswith("+")
    base = lower.rstrip("+")
    spdx = SPDX_IDS.get(base) or HUB_ALIASES.get(base)
    if spdx:
        return spdx + ("+" if plus else "")
    return _license_ref(token)


def spdx_expression(value: str, license_name: str = "") -> str:
    """One license as an SPDX expression: ``apache-2.0`` → ``Apache-2.0``; ``llama3.1`` →
    ``LicenseRef-llama3.1``; ``other`` → ``LicenseRef-<license_name>``; unknown → ``""``."""
    text = value.strip()
    if text.lower() in UNKNOWN:
        return ""
    if text.lower() == "other":
        return _license_ref(license_name) if license_name.strip() else ""
    return " ".join(_spdx_token(t) for t in _TOKEN.findall(text)).replace("( ", "(").replace(" )", ")")


def spdx_licenses(value: Any, license_name: Any = "") -> list[str]:
    """``descriptor.licenses`` from a card's ``license`` (one id or a list) or a GGUF ``general.license``."""
    values = value if isinstance(value, list) else [value]
    name = license_name if isinstance(license_name, str) else ""
    out: list[str] = []
    for v in values[:MAX_VALUES]:
        if isinstance(v, str) and (expr := spdx_expression(v, name)) and expr not in out:
            out.append(expr)
    return out


def iso_languages(value: Any) -> list[str]:
    """``capabilities.languages``: two-letter ISO 639 codes (``en``, ``en-US`` → ``en``); others dropped."""
    values = value if isinstance(value, list) else [value]
    out: list[str] = []
    for v in values[:MAX_VALUES]:
        if not isinstance(v, str):
            continue
        code = re.split(r"[-_]", v.strip().lower(), maxsplit=1)[0]
        if _LANG.fullmatch(code) and code not in out:
            out.append(code)
    return out
