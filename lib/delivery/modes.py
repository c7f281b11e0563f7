"""The delivery-mode registry, and which mode a workload gets.

``MODES`` maps a mode's name to its implementation (``lib.delivery.interface.
DeliveryMode``). Adding a mode is one module with a class that has ``name``,
``needs``, ``strip`` and ``render``, plus one entry here; rendering, the
override annotation, the warnings and the mode switch follow from the
registry.

The module setting is ``AI_MODELS_DELIVERY_MODE`` (``Config.delivery_mode``);
a workload may override it with the top-level annotation
``ai.deckhouse.io/delivery-mode``. ``choose_mode`` is a pure function of those
two strings and the registry.

An override that names no registered mode never breaks admission: it is
ignored with a warning (``kubectl`` prints it) and the module's mode applies.
A module setting that names no registered mode leaves the workload
untouched, with a warning: gating would hold its pods forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lib.delivery.init_container import MODE_INIT_CONTAINER, InitContainerMode
from lib.delivery.interface import DeliveryMode
from lib.delivery.node_cache import MODE_NODE_CACHE, NodeCacheMode

# In the order the warnings list them.
MODES: dict[str, DeliveryMode] = {
    MODE_INIT_CONTAINER: InitContainerMode(),
    MODE_NODE_CACHE: NodeCacheMode(),
}
# The modes this module ships (MODES may gain more, e.g. in a test).
DELIVERY_MODES: tuple[str, ...] = (MODE_INIT_CONTAINER, MODE_NODE_CACHE)

# Per-workload override, on the workload's top-level metadata (beside ai.deckhouse.io/model).
ANNOTATION_DELIVERY_MODE = "ai.deckhouse.io/delivery-mode"
SETTING = "AI_MODELS_DELIVERY_MODE"


@dataclass(frozen=True)
class ModeChoice:
    """The mode to render (None: no registered mode applies, leave the object untouched)."""

    mode: str | None
    warnings: tuple[str, ...] = ()


def choose_mode(
    annotations: Mapping[str, str] | None, module_mode: str, modes: Mapping[str, DeliveryMode] | None = None
) -> ModeChoice:
    """The workload's override when it names a registered mode, else the module's setting.

    An absent or empty override means "the module's mode". Values are exact
    (``NodeCache``, not ``nodecache``), like every Kubernetes enum.
    """
    known = tuple(MODES if modes is None else modes)
    warnings: list[str] = []
    raw = (annotations or {}).get(ANNOTATION_DELIVERY_MODE)
    override = raw.strip() if isinstance(raw, str) else ""
    if override in known:
        return ModeChoice(override)
    if override:
        warnings.append(
            f"{ANNOTATION_DELIVERY_MODE}: {override!r} is not a delivery mode "
            f"(one of {', '.join(known)}); using the module's mode {module_mode!r}"
        )
    if module_mode in known:
        return ModeChoice(module_mode, tuple(warnings))
    warnings.append(f"delivery mode {module_mode!r} ({SETTING}) is not implemented; object untouched")
    return ModeChoice(None, tuple(warnings))
