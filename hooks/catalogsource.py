"""ModelCatalogSource controller (filled in by the catalog issue)."""

from __future__ import annotations

from typing import Any

from lib.config import Config


def sync(req: dict[str, Any], config: Config) -> dict[str, Any]:
    return {"status": {"phase": "Pending"}, "children": []}


def customize(req: dict[str, Any], config: Config) -> dict[str, Any]:
    return {"relatedResources": []}
