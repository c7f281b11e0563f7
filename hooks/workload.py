"""Workload DecoratorController hooks (filled in by the workload delivery issue)."""

from __future__ import annotations

from typing import Any

from lib.config import Config


def sync(req: dict[str, Any], config: Config) -> dict[str, Any]:
    return {"attachments": []}


def finalize(req: dict[str, Any], config: Config) -> dict[str, Any]:
    return {"attachments": [], "finalized": True}


def customize(req: dict[str, Any], config: Config) -> dict[str, Any]:
    return {"relatedResources": []}
