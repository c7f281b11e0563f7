"""The ``NodeCache`` delivery mode: one CSI inline volume per model, served by the node's cache.

Per model the pod gets the pinned inline volume of the node plugin
(``jobs/node_cache``, driver ``models.ai.deckhouse.io``)::

    csi: {driver: models.ai.deckhouse.io, readOnly: true,
          volumeAttributes: {artifact: "<registry>/<repository>@sha256:<digest>"},
          nodePublishSecretRef: {name: <the workload's pull Secret>}}

mounted read-only at ``/data/modelcache/models/<name>`` in every container and
user init container. No init container, no emptyDir, no Secret volume: the
kubelet hands the pull Secret's keys to the plugin in
``NodePublishVolumeRequest.secrets``, and the plugin authorizes every mount
with them, so the app never sees the credential.

Every volume is named ``ai-models-model-<name>``, which is what ``strip``
removes (with its mounts).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lib.api.naming import dns_label, short_hash
from lib.config import Config
from lib.delivery.interface import PREFIX, Needs, PodSpec, add_volumes, strip_volumes
from lib.delivery.resolution import ResolvedModel

MODE_NODE_CACHE = "NodeCache"

CSI_DRIVER = "models.ai.deckhouse.io"
ARTIFACT_ATTRIBUTE = "artifact"
VOLUME_PREFIX = f"{PREFIX}model"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class NodeCacheMode:
    """``DeliveryMode`` ``NodeCache``."""

    name = MODE_NODE_CACHE
    needs = Needs(pull_secret=True, csi_driver=CSI_DRIVER)

    def strip(self, pod_spec: PodSpec) -> PodSpec:
        return strip_volumes(pod_spec, lambda n: n.startswith(f"{VOLUME_PREFIX}-"))

    def render(
        self, pod_spec: PodSpec, models: Sequence[ResolvedModel], *, secret_name: str, config: Config
    ) -> PodSpec:
        return add_volumes(pod_spec, volumes(models, secret_name), volume_mounts(models))


def volume_name(model: str) -> str:
    """``ai-models-model-<model>`` as a DNS label (model names may hold dots or be long)."""
    name = f"{VOLUME_PREFIX}-{model}"
    if len(name) <= 63 and _DNS_LABEL.match(name):
        return name
    return dns_label(VOLUME_PREFIX, f"{model.replace('.', '-')}-{short_hash(model)}")


def csi_volume(model: ResolvedModel, secret_name: str) -> dict[str, Any]:
    """The pinned inline volume for one model (its digest-pinned URI is the artifact)."""
    return {
        "name": volume_name(model.name),
        "csi": {
            "driver": CSI_DRIVER,
            "readOnly": True,
            "volumeAttributes": {ARTIFACT_ATTRIBUTE: model.uri},
            "nodePublishSecretRef": {"name": secret_name},
        },
    }


def volumes(models: Sequence[ResolvedModel], secret_name: str) -> list[dict[str, Any]]:
    return [csi_volume(m, secret_name) for m in models]


def volume_mounts(models: Sequence[ResolvedModel]) -> list[dict[str, Any]]:
    """One read-only mount per model at its own directory under ``/data/modelcache/models``."""
    return [{"name": volume_name(m.name), "mountPath": m.path, "readOnly": True} for m in models]
