"""Registry token service (filled in by the DMCR issue)."""

from __future__ import annotations

from lib.config import Config


def issue(
    *,
    authorization: str | None,
    service: str | None,
    scopes: list[str],
    config: Config,
    now: float,
) -> tuple[int, dict, dict[str, str]]:
    return 401, {"error": "authentication required"}, {"WWW-Authenticate": 'Basic realm="ai-models"'}
