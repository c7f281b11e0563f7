"""The worker's capacity check: ``--registry-capacity-bytes`` and ``--registry-usage`` → ``Capacity``.

The check itself is ``lib.capacity`` (pure); this module only reads DMCR's
usage record through the API with the pod's projected token
(``jobs.own_job.read_config_map``). Outside a cluster, or when the record is
missing or unreadable, usage counts as 0 and the refusal message says it is
unknown.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

from jobs import own_job
from lib.capacity import Capacity, Usage, read_usage

Getter = Callable[[str, str], Mapping[str, str] | None]  # (namespace, name) -> data | None


def usage_reader(ref: str, get: Getter = own_job.read_config_map) -> Callable[[], Usage]:
    """Reads the ConfigMap ``NAMESPACE/NAME`` each time it is called; never raises."""
    namespace, _, name = ref.partition("/")

    def read() -> Usage:
        if not namespace or not name:
            return Usage(None, problem="no usage record given (--registry-usage)")
        return read_usage(lambda: get(namespace, name))

    return read


def from_args(args: argparse.Namespace, get: Getter = own_job.read_config_map) -> Capacity | None:
    """The check the command line asks for, or None (no capacity configured)."""
    capacity = getattr(args, "registry_capacity_bytes", None) or 0
    if capacity <= 0:
        return None
    return Capacity(capacity, usage_reader(getattr(args, "registry_usage", "") or "", get))
