"""Model and ClusterModel controllers (filled in by the Model controller issue)."""

from __future__ import annotations

from typing import Any

from lib.config import Config


def _sync(req: dict[str, Any], config: Config, *, cluster: bool) -> dict[str, Any]:
    return {"status": {"phase": "Pending"}, "children": []}


def model_sync(req: dict[str, Any], config: Config) -> dict[str, Any]:
    return _sync(req, config, cluster=False)


def clustermodel_sync(req: dict[str, Any], config: Config) -> dict[str, Any]:
    return _sync(req, config, cluster=True)


def model_finalize(req: dict[str, Any], config: Config) -> dict[str, Any]:
    return {**_sync(req, config, cluster=False), "finalized": True}


def clustermodel_finalize(req: dict[str, Any], config: Config) -> dict[str, Any]:
    return {**_sync(req, config, cluster=True), "finalized": True}


def model_customize(req: dict[str, Any], config: Config) -> dict[str, Any]:
    return {"relatedResources": []}


def clustermodel_customize(req: dict[str, Any], config: Config) -> dict[str, Any]:
    return {"relatedResources": []}
