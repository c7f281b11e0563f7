"""JSON Schemas of Metacontroller's v2 hook requests and of AdmissionReview.

They check the envelope a hook relies on (required keys and their types), not
every field of the embedded Kubernetes objects: Metacontroller sends the
objects as the API server returns them.
"""

from __future__ import annotations

from typing import Any

_OBJECTS = {"type": ["array", "null"], "items": {"type": "object"}}
_CONTAINER_STATUS = {
    "type": "object",
    "properties": {
        "state": {
            "type": ["object", "null"],
            "additionalProperties": {"type": ["object", "null"]},
        },
    },
}
# The status fields hooks read, typed so a wrong type is a 400, not a crash.
_STATUS = {
    "type": ["object", "null"],
    "properties": {
        "conditions": _OBJECTS,
        "containerStatuses": {"type": ["array", "null"], "items": _CONTAINER_STATUS},
        "initContainerStatuses": {"type": ["array", "null"], "items": _CONTAINER_STATUS},
        "source": {"type": ["object", "null"]},
        "artifact": {"type": ["object", "null"], "properties": {"uri": {"type": "string"}}},
        "resolved": {"type": ["object", "null"]},
        "upload": {"type": ["object", "null"]},
        "cleanup": {"type": ["object", "null"]},
    },
}

_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata"],
    "properties": {
        "apiVersion": {"type": "string", "minLength": 1},
        "kind": {"type": "string", "minLength": 1},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "namespace": {"type": "string"},
                "uid": {"type": "string"},
                "generation": {"type": "integer"},
                "labels": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
                "annotations": {
                    "type": ["object", "null"],
                    "additionalProperties": {"type": "string"},
                },
            },
        },
        "spec": {"type": ["object", "null"]},
        "status": _STATUS,
    },
}

# {"Kind.apiVersion": {"namespace/name": object}}
_OBJECT_MAP = {
    "type": ["object", "null"],
    "additionalProperties": {"type": ["object", "null"], "additionalProperties": _OBJECT},
}

_CONTROLLER = {"type": "object"}

COMPOSITE_SYNC: dict[str, Any] = {
    "type": "object",
    "required": ["controller", "parent"],
    "properties": {
        "controller": _CONTROLLER,
        "parent": _OBJECT,
        "children": _OBJECT_MAP,
        "related": _OBJECT_MAP,
        "finalizing": {"type": "boolean"},
    },
}

COMPOSITE_CUSTOMIZE: dict[str, Any] = {
    "type": "object",
    "required": ["controller", "parent"],
    "properties": {"controller": _CONTROLLER, "parent": _OBJECT},
}

# Metacontroller's v2 decorator hooks send the target as ``parent`` and its
# attachments as ``children`` (pkg/controller/decorator/api/v2/hooks.go); the
# v1 names ``object``/``attachments`` are accepted too.
DECORATOR_SYNC: dict[str, Any] = {
    "type": "object",
    "required": ["controller"],
    "properties": {
        "controller": _CONTROLLER,
        "parent": _OBJECT,
        "object": _OBJECT,
        "children": _OBJECT_MAP,
        "attachments": _OBJECT_MAP,
        "related": _OBJECT_MAP,
        "finalizing": {"type": "boolean"},
    },
    "anyOf": [{"required": ["parent"]}, {"required": ["object"]}],
}

DECORATOR_CUSTOMIZE: dict[str, Any] = {
    "type": "object",
    "required": ["controller"],
    "properties": {
        "controller": _CONTROLLER,
        "parent": _OBJECT,
        "object": _OBJECT,
    },
    "anyOf": [{"required": ["parent"]}, {"required": ["object"]}],
}

ADMISSION_REVIEW: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "request"],
    "properties": {
        "apiVersion": {"const": "admission.k8s.io/v1"},
        "kind": {"const": "AdmissionReview"},
        "request": {
            "type": "object",
            "required": ["uid", "operation"],
            "properties": {
                "uid": {"type": "string", "minLength": 1},
                "operation": {"type": "string"},
                "object": {"type": ["object", "null"]},
                "oldObject": {"type": ["object", "null"]},
            },
        },
    },
}
