"""Mount-path conflicts: a mount the user wrote where the delivery mode mounts the models.

The API server refuses a pod template in which one container mounts two
volumes at one path (``volumeMounts[1].mountPath: Invalid value: ...: must be
unique``). Rendered anyway, the workload's own apply, or the decorator's
annotation write behind it, would fail with an error naming a mount the user
never wrote, and Metacontroller would retry it forever. So the decorator and
the webhook both render the template as it would be delivered and, when one
of our mounts lands on a path a user mount holds, delivery is blocked with a
reason naming the container, the user's volume and the path
(``BlockReason.MOUNT_PATH_CONFLICT``). Rendering itself finds the paths, so a
new delivery mode needs nothing here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from lib.api.types import MODELS_DIR
from lib.config import Config
from lib.delivery.interface import containers
from lib.delivery.rendering import Deliver, render, strip
from lib.delivery.resolution import Blocked, BlockReason, ResolvedModel


def _path(mount: Any) -> str | None:
    """A mount's path as the container sees it (``/a/b/`` and ``/a//b`` are ``/a/b``)."""
    path = mount.get("mountPath") if isinstance(mount, dict) else None
    return posixpath.normpath(path) if isinstance(path, str) and path else None


def mount_conflicts(
    template: Mapping[str, Any],
    models: Sequence[ResolvedModel],
    mode: str,
    config: Config,
    secret_name: str,
) -> list[str]:
    """One line per container mount of the user's that one of ours would duplicate."""
    users: dict[str, list[Any]] = {}  # container name -> the mounts the user wrote
    for c in containers(strip(template).get("spec") or {}):
        mounts = c.get("volumeMounts")
        users[str(c.get("name", ""))] = mounts if isinstance(mounts, list) else []
    rendered = render(template, Deliver(tuple(models), secret_name), config, mode)
    problems: list[str] = []
    for c in containers(rendered.get("spec") or {}):
        name = str(c.get("name", ""))
        if name not in users:
            continue  # a container the mode adds (the materialize init container): all ours
        mine = {p: str(m.get("name", "")) for m in users[name] if (p := _path(m))}
        for m in (c.get("volumeMounts") or [])[len(users[name]):]:  # modes append their mounts
            path = _path(m)
            if path is not None and path in mine:
                problems.append(f"container {name!r} mounts its volume {mine[path]!r} at {path}, "
                                f"where {mode} delivery mounts the models")
    return problems


def conflict_block(problems: list[str]) -> Blocked:
    return Blocked(
        BlockReason.MOUNT_PATH_CONFLICT,
        "; ".join(problems) + ": move or remove that mount (the models are mounted under "
        f"{MODELS_DIR}, see AI_MODELS_MODELS_DIR)",
    )
