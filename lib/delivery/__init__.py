"""Workload delivery, as pure functions shared by the decorator hook, the webhook and the local stack.

- ``resolution``: the model annotations, resolving names to digest-pinned
  artifacts, the resolution and blocked annotations (the decorator's half);
- ``interface``: what a delivery mode is (``DeliveryMode``: ``name``,
  ``needs``, ``strip``, ``render``) and the pod-spec edits modes share;
- ``init_container``, ``node_cache``: the two modes; ``modes``: the registry
  keyed by mode name and ``choose_mode`` (setting and per-workload override);
- ``rendering``: Gate / Deliver / nothing, and the pod template for it;
- ``conflicts``: a user's mount where the mode mounts the models (blocks);
- ``patch``: the webhook's JSONPatch for a whole workload object.

Everything injected into a pod template is named ``ai-models-*`` (or is one
of the fixed env names), so a new mutation first strips what an earlier one
added and then adds the current set: applying the mutation to its own output
changes nothing, and a new resolution (or mode) replaces the old injection
wholesale. This package re-exports what the hooks and the tests use.
"""

from lib.delivery.conflicts import conflict_block, mount_conflicts
from lib.delivery.init_container import (
    CACHE_VOLUME,
    MODE_INIT_CONTAINER,
    PULL_VOLUME,
    init_container_name,
    materialize_args,
    materialize_command,
    quantity,
)
from lib.delivery.interface import PREFIX, DeliveryMode, Needs
from lib.delivery.modes import ANNOTATION_DELIVERY_MODE, DELIVERY_MODES, MODES, ModeChoice, choose_mode
from lib.delivery.node_cache import CSI_DRIVER, MODE_NODE_CACHE
from lib.delivery.patch import LABEL_CONSUMER, Mutation, json_patch, mutate_object
from lib.delivery.rendering import (
    ANNOTATION_TEMPLATE,
    ENV_MODELS,
    ENV_MODELS_DIR,
    WORKLOAD_KINDS,
    Deliver,
    Gate,
    State,
    desired_state,
    pod_template,
    render,
    strip,
    template_path,
)
from lib.delivery.resolution import (
    ANNOTATION_BLOCKED,
    ANNOTATION_RESOLUTION,
    Blocked,
    BlockReason,
    ModelKind,
    ModelRef,
    ResolvedModel,
    bounded,
    decode_resolution,
    encode_resolution,
    has_model_annotations,
    pull_secret_name,
    requested,
    resolve,
    split_names,
    valid_name,
)

__all__ = [
    "ANNOTATION_BLOCKED",
    "ANNOTATION_DELIVERY_MODE",
    "ANNOTATION_RESOLUTION",
    "ANNOTATION_TEMPLATE",
    "CACHE_VOLUME",
    "CSI_DRIVER",
    "DELIVERY_MODES",
    "ENV_MODELS",
    "ENV_MODELS_DIR",
    "LABEL_CONSUMER",
    "MODES",
    "MODE_INIT_CONTAINER",
    "MODE_NODE_CACHE",
    "PREFIX",
    "PULL_VOLUME",
    "WORKLOAD_KINDS",
    "BlockReason",
    "Blocked",
    "Deliver",
    "DeliveryMode",
    "Gate",
    "ModeChoice",
    "ModelKind",
    "ModelRef",
    "Mutation",
    "Needs",
    "ResolvedModel",
    "State",
    "bounded",
    "choose_mode",
    "conflict_block",
    "decode_resolution",
    "desired_state",
    "encode_resolution",
    "has_model_annotations",
    "init_container_name",
    "json_patch",
    "materialize_args",
    "materialize_command",
    "mount_conflicts",
    "mutate_object",
    "pod_template",
    "pull_secret_name",
    "quantity",
    "render",
    "requested",
    "resolve",
    "split_names",
    "strip",
    "template_path",
    "valid_name",
]
