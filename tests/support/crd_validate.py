"""Validate a custom resource against a CRD the way the API server would.

There is no API server on the test machines, yet the CRDs are the contract
between users, hooks and the cluster: a status field the schema does not
declare is silently pruned (and Metacontroller then resyncs forever), a
missing CEL rule lets a bad spec in. So this module reproduces the parts of
``kube-apiserver``'s custom-resource validation that matter to us:

1. **Defaulting and null pruning** (``apply_defaults``): ``null`` for a field
   that is not ``nullable`` is dropped, then ``default`` values are filled in,
   before anything is validated (CEL rules see defaulted objects).
2. **OpenAPI schema** (``to_json_schema``): the CRD's structural
   ``openAPIV3Schema`` is converted to JSON Schema 2020-12 and checked with
   ``jsonschema``. Unknown fields are *errors*, like ``kubectl``'s strict
   field validation (``--validate=strict``), except under
   ``x-kubernetes-preserve-unknown-fields``. ``nullable``,
   ``x-kubernetes-int-or-string``, OpenAPI 3.0's boolean
   ``exclusiveMinimum``/``exclusiveMaximum`` and the formats ``date-time``,
   ``date``, ``byte``, ``int32``, ``int64`` are honoured; ``metadata`` is
   checked against a strict ObjectMeta subset.
3. **List semantics**: ``x-kubernetes-list-type: set`` items must be unique,
   ``map`` items unique by their ``x-kubernetes-list-map-keys``.
4. **CEL** (``x-kubernetes-validations``), evaluated with ``cel-python``:
   each rule runs at the node it is declared on with ``self`` bound to that
   node's value (objects and maps become CEL maps, ``date-time`` strings
   timestamps, ``byte`` strings bytes). On update (``old`` given), transition
   rules (those mentioning ``oldSelf``) run where the old object has a
   correlated value: through object properties, map keys and items of
   ``listType: map`` lists, never through ``set``/``atomic`` list items, as
   in Kubernetes. ``message``, ``messageExpression`` and ``fieldPath`` are
   honoured; a rule that cannot be evaluated is an error (the API server
   refuses the object too).

Not reproduced: CEL cost budgets, Kubernetes' CEL extension libraries
(``url()``, ``quantity()``, ``isSorted()``, the strings/lists extensions: a
rule using them fails loudly here), ``optionalOldSelf``, order-insensitive
equality of set/map lists, property-name escaping, ratcheting.

Entry points: ``validate(crd, obj, old=None) -> list[str]`` (empty means
valid; each message is ``"<field path>: <what is wrong>"``; memoised by
content, see ``tests/support/validation.py``) and
``check_crd(crd) -> list[str]`` (lints the CRD itself: structural types,
descriptions everywhere, list map keys, CEL rules that compile, printer
columns that point at declared fields).
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import celpy
import jsonschema
from celpy import celtypes

from tests.support.validation import content_key, memoised

Schema = dict[str, Any]

_OBJECT_META_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

# The ObjectMeta fields a manifest may carry. Anything else is an unknown
# field, which strict field validation refuses.
OBJECT_META: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _OBJECT_META_NAME},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS_LABEL},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": ["string", "null"]},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "managedFields": {"type": "array"},
        "selfLink": {"type": "string"},
    },
}

# ---------------------------------------------------------------- lookups


def schema_for(crd: dict[str, Any], api_version: str) -> Schema:
    """The ``openAPIV3Schema`` of the CRD version named by ``api_version``."""
    group = crd["spec"]["group"]
    for version in crd["spec"]["versions"]:
        if f"{group}/{version['name']}" == api_version:
            return version["schema"]["openAPIV3Schema"]
    raise KeyError(f"{crd['metadata']['name']} serves no version {api_version!r}")


def _type_matches(schema: Schema, value: Any) -> bool:
    """Whether ``value`` has the JSON type the schema node declares (untyped nodes accept anything)."""
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, int | str) and not isinstance(value, bool)
    kind = schema.get("type")
    if value is None:
        return bool(schema.get("nullable")) or kind is None
    return {
        None: True,
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
    }.get(kind, False)


def _fmt(path: str) -> str:
    return path or "<root>"


# ---------------------------------------------------------------- defaulting


def apply_defaults(crd: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` with non-nullable nulls pruned and ``default`` values applied."""
    schema = schema_for(crd, obj.get("apiVersion", ""))
    out = copy.deepcopy(obj)
    _default_node(schema, out)
    return out


def _default_node(schema: Schema, value: Any) -> None:
    if isinstance(value, dict) and "properties" in schema:
        props: dict[str, Schema] = schema["properties"]
        for key in list(value):
            sub = props.get(key)
            if sub is not None and value[key] is None and not sub.get("nullable"):
                del value[key]  # the API server prunes nulls for non-nullable fields
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _default_node(sub, value[key])
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for item in value.values():
            _default_node(schema["additionalProperties"], item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default_node(schema["items"], item)


# ---------------------------------------------------------------- OpenAPI -> JSON Schema

_PASS_THROUGH = (
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "required",
    "format",
)


def to_json_schema(schema: Schema, *, root: bool = False, _junctor: bool = False) -> Schema:
    """Convert a structural OpenAPI v3 schema node to strict JSON Schema 2020-12."""
    out: Schema = {k: schema[k] for k in _PASS_THROUGH if k in schema}
    if schema.get("exclusiveMinimum") is True and "minimum" in schema:
        out["exclusiveMinimum"] = out.pop("minimum")
    if schema.get("exclusiveMaximum") is True and "maximum" in schema:
        out["exclusiveMaximum"] = out.pop("maximum")
    if schema.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    elif "type" in schema:
        out["type"] = [schema["type"], "null"] if schema.get("nullable") else schema["type"]
        if schema.get("nullable") and "enum" in out:
            out["enum"] = [*out["enum"], None]
    for junctor in ("allOf", "anyOf", "oneOf"):
        if junctor in schema:
            converted = [to_json_schema(s, _junctor=True) for s in schema[junctor]]
            out[junctor] = out.get(junctor, []) + converted if junctor == "anyOf" else converted
    if "not" in schema:
        out["not"] = to_json_schema(schema["not"], _junctor=True)
    if isinstance(schema.get("items"), dict):
        out["items"] = to_json_schema(schema["items"], _junctor=_junctor)

    props = {k: to_json_schema(v, _junctor=_junctor) for k, v in schema.get("properties", {}).items()}
    if schema.get("x-kubernetes-embedded-resource"):
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if root:
        props["apiVersion"] = {"type": "string"}
        props["kind"] = {"type": "string"}
        props["metadata"] = OBJECT_META
    if props:
        out["properties"] = props
    addl = schema.get("additionalProperties")
    if isinstance(addl, dict):
        out["additionalProperties"] = to_json_schema(addl, _junctor=_junctor)
    elif addl is False or (
        # Strict field validation: unknown fields are refused unless the node
        # preserves them. Junctor branches only add constraints, so they stay open.
        not _junctor
        and schema.get("type") == "object"
        and addl is None
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    dt.datetime.fromisoformat(value.upper().replace(" ", "T"))  # range checks: month 13 fails here
    return True


@FORMATS.checks("date", raises=ValueError)
def _date(value: object) -> bool:
    if isinstance(value, str):
        dt.date.fromisoformat(value)
    return True


@FORMATS.checks("byte", raises=(ValueError, binascii.Error))
def _byte(value: object) -> bool:
    if isinstance(value, str):
        base64.b64decode(value, validate=True)
    return True


@FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def _json_path(err: jsonschema.ValidationError) -> str:
    out = ""
    for part in err.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _schema_errors(schema: Schema, obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(to_json_schema(schema, root=True), format_checker=FORMATS)
    errors = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        message = err.message
        if err.validator == "additionalProperties":
            message = f"unknown field(s) (strict field validation): {err.message}"
        errors.append(f"{_fmt(_json_path(err))}: {message}")
    return errors


# ---------------------------------------------------------------- list semantics


def _list_errors(schema: Schema, value: Any, path: str) -> list[str]:
    errors: list[str] = []
    if not _type_matches(schema, value) or value is None:
        return errors
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += _list_errors(sub, value[key], f"{path}.{key}" if path else key)
        if isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                errors += _list_errors(schema["additionalProperties"], item, f"{path}[{key}]")
    elif isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type", "atomic")
        if list_type == "set":
            seen: list[Any] = []
            for i, item in enumerate(value):
                if item in seen:
                    errors.append(f"{path}[{i}]: Duplicate value: {item!r} (x-kubernetes-list-type: set)")
                seen.append(item)
        elif list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            seen_keys: set[tuple[str, ...]] = set()
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                key = tuple(repr(item.get(k)) for k in keys)
                if key in seen_keys:
                    errors.append(
                        f"{path}[{i}]: Duplicate value: {dict(zip(keys, key, strict=True))} (map keys)"
                    )
                seen_keys.add(key)
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                errors += _list_errors(schema["items"], item, f"{path}[{i}]")
    return errors


# ---------------------------------------------------------------- CEL


@lru_cache(maxsize=1)
def _env() -> celpy.Environment:
    return celpy.Environment()


@lru_cache(maxsize=512)
def _program(expr: str) -> celpy.Runner:
    env = _env()
    return env.program(env.compile(expr))


def compile_rule(expr: str) -> str | None:
    """None if the CEL expression compiles, else the parser's complaint."""
    try:
        _program(expr)
    except Exception as e:  # celpy raises its own parse error types
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def is_transition_rule(expr: str) -> bool:
    return re.search(r"\boldSelf\b", expr) is not None


def to_cel(schema: Schema, value: Any) -> Any:
    """The CEL value Kubernetes binds for ``value`` at schema node ``schema``."""
    if value is None:
        return None
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        addl = schema.get("additionalProperties")
        out = {}
        for k, v in value.items():
            sub = props.get(k) or (addl if isinstance(addl, dict) else {})
            out[celtypes.StringType(k)] = to_cel(sub, v)
        return celtypes.MapType(out)
    if kind == "array" and isinstance(value, list):
        return celtypes.ListType([to_cel(schema.get("items", {}), v) for v in value])
    if kind == "string" and isinstance(value, str):
        fmt = schema.get("format")
        if fmt == "date-time":
            return celtypes.TimestampType(value)
        if fmt == "duration":
            return celtypes.DurationType(value)
        if fmt == "byte":
            return celtypes.BytesType(base64.b64decode(value))
        return celtypes.StringType(value)
    if kind == "number" and isinstance(value, int | float):
        return celtypes.DoubleType(value)
    return celpy.json_to_cel(value)


def _eval_rule(expr: str, activation: dict[str, Any]) -> Any:
    return _program(expr).evaluate(activation)


def _cel_errors(schema: Schema, value: Any, old: Any, has_old: bool, path: str) -> list[str]:
    errors: list[str] = []
    if value is None or not _type_matches(schema, value):
        return errors  # the schema check reports it; CEL would only add noise
    for rule in schema.get("x-kubernetes-validations", []):
        expr = rule["rule"]
        transition = is_transition_rule(expr)
        if transition and not has_old:
            continue
        where = _fmt(path + rule.get("fieldPath", ""))
        try:
            activation = {"self": to_cel(schema, value)}
            if transition:
                activation["oldSelf"] = to_cel(schema, old)
            result = _eval_rule(expr, activation)
        except Exception as e:  # evaluation errors are validation failures in Kubernetes too
            errors.append(f"{where}: rule {expr!r} could not be evaluated: {e}")
            continue
        if not isinstance(result, celtypes.BoolType):
            errors.append(f"{where}: rule {expr!r} evaluated to {type(result).__name__}, not bool")
        elif not result:
            errors.append(f"{where}: {_rule_message(rule, activation)}")
    if isinstance(value, dict):
        old_map = old if has_old and isinstance(old, dict) else None
        props: dict[str, Schema] = schema.get("properties", {})
        addl = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key) if key in props else (addl if isinstance(addl, dict) else None)
            if sub is None:
                continue
            child = (f"{path}.{key}" if path else key) if key in props else f"{path}[{key}]"
            in_old = old_map is not None and key in old_map
            errors += _cel_errors(sub, item, old_map[key] if in_old else None, in_old, child)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        olds = _correlate_list(schema, value, old if has_old else None)
        for i, item in enumerate(value):
            errors += _cel_errors(items, item, olds[i][1], olds[i][0], f"{path}[{i}]")
    return errors


def _correlate_list(schema: Schema, value: list[Any], old: Any) -> list[tuple[bool, Any]]:
    """For each new item, (has_old, old_item): only ``listType: map`` items correlate, by their keys."""
    none = [(False, None)] * len(value)
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(old, list):
        return none
    keys = schema.get("x-kubernetes-list-map-keys", [])

    def key(item: Any) -> tuple[str, ...] | None:
        return tuple(repr(item.get(k)) for k in keys) if isinstance(item, dict) else None

    by_key = {key(o): o for o in old if key(o) is not None}
    return [(key(v) in by_key, by_key.get(key(v))) for v in value]


def _rule_message(rule: dict[str, Any], activation: dict[str, Any]) -> str:
    if rule.get("messageExpression"):
        try:
            return str(_eval_rule(rule["messageExpression"], activation))
        except Exception:  # Kubernetes falls back to message / the rule text
            pass
    return rule.get("message") or f"failed rule: {rule['rule']}"


# ---------------------------------------------------------------- entry points


def validate(crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Errors the API server would report creating ``obj`` (or updating ``old`` to ``obj``); [] if valid.

    ``crd`` is the parsed CustomResourceDefinition document. The object's
    ``apiVersion`` and ``kind`` must name that CRD. The object is defaulted
    first, like admission does; ``old`` (if given) is defaulted too and
    enables transition rules.

    Memoised by content (``tests.support.validation``): the same CRD, object
    and old object are checked once per session; any change is checked anew.
    """
    key = content_key(crd, obj, old)
    return memoised("crd", key, lambda: _validate(crd, obj, old), copy=list)


def _validate(crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
    kind = crd["spec"]["names"]["kind"]
    if obj.get("kind") != kind:
        return [f"kind: expected {kind!r}, got {obj.get('kind')!r}"]
    try:
        schema = schema_for(crd, obj.get("apiVersion", ""))
    except KeyError as e:
        return [f"apiVersion: {e.args[0]}"]
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not (meta.get("name") or meta.get("generateName")):
        return ["metadata.name: Required value: name or generateName is required"]
    obj = apply_defaults(crd, obj)
    errors = _schema_errors(schema, obj)
    errors += _list_errors(schema, _without_meta(obj), "")
    old_value = _without_meta(apply_defaults(crd, old)) if old is not None else None
    errors += _cel_errors(schema, _without_meta(obj), old_value, old is not None, "")
    return errors


def _without_meta(obj: dict[str, Any]) -> dict[str, Any]:
    """Root CEL sees only ``metadata.name`` and ``metadata.generateName``, as in Kubernetes."""
    out = dict(obj)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: meta[k] for k in ("name", "generateName") if k in meta}
    return out


def validate_status(crd: dict[str, Any], obj: dict[str, Any], status: dict[str, Any]) -> list[str]:
    """Errors for ``obj`` with its status replaced by ``status`` (what a sync hook returns)."""
    return validate(crd, {**obj, "status": status})


# ---------------------------------------------------------------- linting the CRD


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema, bool]]:
    """Yield (path, node, correlatable) for every schema node, depth first."""
    yield from _walk(schema, path, True)


def _walk(schema: Schema, path: str, correlatable: bool) -> Iterator[tuple[str, Schema, bool]]:
    yield path, schema, correlatable
    for key, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}" if path else key, correlatable)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}[*]", correlatable)
    if isinstance(schema.get("items"), dict):
        map_list = schema.get("x-kubernetes-list-type") == "map"
        yield from _walk(schema["items"], f"{path}[*]", correlatable and map_list)


def resolve_json_path(schema: Schema, json_path: str) -> Schema | None:
    """The schema node a printer-column JSONPath (``.a.b``, ``.a[*].b``) points at, or None."""
    node: Schema | None = schema
    for part in re.findall(r"\.([A-Za-z0-9_-]+)|(\[\*\])", json_path):
        if node is None:
            return None
        name, star = part
        if star:
            node = node.get("items") if node.get("type") == "array" else None
        elif name == "metadata" and node is schema:
            node = {
                "type": "object",
                "properties": {"creationTimestamp": {"type": "string"}, "name": {"type": "string"}},
            }
        else:
            node = node.get("properties", {}).get(name)
    return node


def check_crd(crd: dict[str, Any]) -> list[str]:
    """Lint a CRD: what the API server would refuse, and our own rules (descriptions everywhere)."""
    errors: list[str] = []
    name = crd.get("metadata", {}).get("name", "?")
    spec = crd.get("spec", {})
    if crd.get("apiVersion") != "apiextensions.k8s.io/v1" or crd.get("kind") != "CustomResourceDefinition":
        return [f"{name}: not an apiextensions.k8s.io/v1 CustomResourceDefinition"]
    if name != f"{spec.get('names', {}).get('plural')}.{spec.get('group')}":
        errors.append(f"{name}: metadata.name must be <plural>.<group>")
    for version in spec.get("versions", []):
        schema = version.get("schema", {}).get("openAPIV3Schema")
        if not schema:
            errors.append(f"{name}/{version.get('name')}: no openAPIV3Schema")
            continue
        for path, node, correlatable in walk(schema):
            where = f"{name}/{version['name']}: {_fmt(path)}"
            errors += _lint_node(where, path, node, correlatable)
        for column in version.get("additionalPrinterColumns", []):
            if resolve_json_path(schema, column["jsonPath"]) is None:
                errors.append(
                    f"{name}: printer column {column['name']} points at undeclared {column['jsonPath']}"
                )
    return errors


def _lint_node(where: str, path: str, node: Schema, correlatable: bool) -> list[str]:
    errors = []
    untyped_ok = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if "type" not in node and not untyped_ok:
        errors.append(f"{where}: no type (not structural)")
    if node.get("x-kubernetes-preserve-unknown-fields"):
        errors.append(f"{where}: x-kubernetes-preserve-unknown-fields (fields go unchecked)")
    if path and path not in ("apiVersion", "kind", "metadata") and not node.get("description", "").strip():
        errors.append(f"{where}: no description (kubectl explain would be empty)")
    if path == "metadata" and set(node) - {"type", "description", "properties"}:
        errors.append(f"{where}: metadata may only restrict name and generateName")
    if "default" in node:
        validator = jsonschema.Draft202012Validator(to_json_schema(node), format_checker=FORMATS)
        for err in validator.iter_errors(node["default"]):
            errors.append(f"{where}: default {node['default']!r} is invalid: {err.message}")
    if node.get("x-kubernetes-list-type") == "map":
        keys = node.get("x-kubernetes-list-map-keys") or []
        items = node.get("items", {})
        if not keys:
            errors.append(f"{where}: listType map without x-kubernetes-list-map-keys")
        for key in keys:
            sub = items.get("properties", {}).get(key)
            if sub is None or (key not in items.get("required", []) and "default" not in sub):
                errors.append(f"{where}: list map key {key!r} must be a required (or defaulted) property")
    for rule in node.get("x-kubernetes-validations", []):
        problem = compile_rule(rule.get("rule", ""))
        if problem:
            errors.append(f"{where}: CEL rule {rule.get('rule')!r} does not compile: {problem}")
        if is_transition_rule(rule.get("rule", "")) and not correlatable:
            errors.append(f"{where}: transition rule on a node that cannot be correlated with the old object")
        if not rule.get("message") and not rule.get("messageExpression"):
            errors.append(f"{where}: CEL rule {rule.get('rule')!r} has no message")
    return errors
