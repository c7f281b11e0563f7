"""The worker's capacity check: ``--registry-capacity-bytes``, ``--namespace-quota-bytes`` with
``--quota-namespace``, and ``--registry-usage`` → ``Capacity``.

The check itself is ``lib.capacity`` (pure); this module only reads DMCR's
usage record through the API with the pod's projected token
(``jobs.own_job.read_config_map``) and, for the namespace quota, lists the
Model's namespace's Models (``jobs.own_job.list_models``; the worker's Role
allows ``list`` there when a quota is configured). Outside a cluster, or when the record is
missing or unreadable, usage counts as 0 and the refusal message says it is
unknown.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jobs import own_job
from lib.capacity import Capacity, Usage, read_namespace_usage, read_usage

Getter = Callable[[str, str], Mapping[str, str] | None]  # (namespace, name) -> data | None
ModelLister = Callable[[str], Iterable[Mapping[str, Any]]]  # namespace -> its Models


def usage_reader(ref: str, get: Getter = own_job.read_config_map) -> Callable[[], Usage]:
    """Reads the ConfigMap ``NAMESPACE/NAME`` each time it is called; never raises."""
    namespace, _, name = ref.partition("/")

    def read() -> Usage:
        if not namespace or not name:
            return Usage(None, problem="no usage record given (--registry-usage)")
        return read_usage(lambda: get(namespace, name))

    return read


def namespace_usage_reader(namespace: str, destination: str,
                           models: ModelLister = own_job.list_models) -> Callable[[], Usage]:
    """Lists ``namespace``'s Models each time it is called (all but the one publishing into
    ``destination``); never raises."""
    return lambda: read_namespace_usage(lambda: models(namespace), destination)


def from_args(args: argparse.Namespace, get: Getter = own_job.read_config_map,
              models: ModelLister = own_job.list_models) -> Capacity | None:
    """The check the command line asks for, or None (no capacity and no namespace quota)."""
    namespace = getattr(args, "quota_namespace", "") or ""
    check = Capacity(
        getattr(args, "registry_capacity_bytes", None) or 0,
        usage_reader(getattr(args, "registry_usage", "") or "", get),
        namespace=namespace,
        namespace_quota=getattr(args, "namespace_quota_bytes", None) or 0,
        read_namespace_usage=namespace_usage_reader(namespace, getattr(args, "destination", ""), models),
    )
    return check if check.active else None
