"""
Pure functions for the Kubernetes API semantics that kmock's emulator lacks.

Everything here is synchronous and stateless: patch formats, label/field
selectors, structural-schema pruning & defaulting of custom resources.
The stateful server that uses them lives in :mod:`.emulator`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

import jsonpatch
import jsonpointer

# ------------------------------------------------------------------------------------------------
# Patch formats.
# A real API server picks the algorithm by the request's Content-Type; kmock merges every dict
# (and JSON-patches every list) regardless of it.
# ------------------------------------------------------------------------------------------------

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH_YAML = "application/apply-patch+yaml"
APPLY_PATCH_JSON = "application/apply-patch+json"  # not official, but harmless to accept


class PatchError(Exception):
    """A patch could not be applied (HTTP 422 on a real server)."""


def json_merge_patch(target: Any, patch: Any) -> Any:
    """
    RFC 7386 JSON merge patch: dicts merge recursively, ``null`` deletes, anything else replaces.

    Unlike kmock's ``merge_patch_dict``, a dict may replace a scalar and vice versa (RFC 7386).
    Lists are always replaced as a whole.
    """
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def json_patch(target: Mapping[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902 JSON patch; any failed op (incl. ``test``) is a 422 like on a real server."""
    if not isinstance(ops, list):
        raise PatchError(f"a JSON patch must be a list of operations, got {type(ops).__name__}")
    try:
        result = jsonpatch.apply_patch(copy.deepcopy(dict(target)), ops, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
        raise PatchError(str(e)) from e
    if not isinstance(result, dict):
        raise PatchError("a JSON patch must produce an object")
    return result


# Strategic merge patch: lists of these fields merge by a key instead of being replaced.
# A real server takes the merge keys from the Go types' `patchMergeKey` tags; this is the subset
# used by the workload types (pods, jobs, deployments) and by object metadata.
SMP_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
    "readinessGates": "conditionType",
    "conditions": "type",
    "ownerReferences": "uid",
}
# Lists of scalars with `patchStrategy:"merge"` (union instead of replacement).
SMP_MERGED_SCALAR_LISTS = frozenset({"finalizers"})


def _smp_merge_key(field: str, old: list[Any], new: list[Any]) -> str | None:
    if field == "ports":  # containers[].ports merge by containerPort, services' ports by port
        items = [item for item in old + new if isinstance(item, Mapping)]
        return "containerPort" if any("containerPort" in item for item in items) else "port"
    return SMP_MERGE_KEYS.get(field)


def _strip_directives(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _strip_directives(val) for key, val in value.items() if not key.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(item) for item in value]
    return value


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """
    A strategic merge patch for the built-in resources (an approximation of the real one).

    Like a JSON merge patch, plus: lists of fields in ``SMP_MERGE_KEYS`` are merged item-by-item
    by their merge key; ``finalizers`` are merged as a set; and the directives ``$patch``
    (``replace``/``delete``), ``$deleteFromPrimitiveList/…``, ``$setElementOrder/…``,
    ``$retainKeys`` are honoured or ignored. Other lists are replaced as a whole (as they are
    on a real server for fields without a ``patchStrategy``).
    """
    if not isinstance(patch, Mapping):
        return _strip_directives(copy.deepcopy(patch))
    if patch.get("$patch") == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    result = dict(target) if isinstance(target, Mapping) else {}
    deletions: list[tuple[str, list[Any]]] = []
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            deletions.append((key.split("/", 1)[1], list(value or [])))
            continue
        if key.startswith("$"):  # $patch, $retainKeys, $setElementOrder/…: nothing to merge
            continue
        old = result.get(key)
        if value is None or (isinstance(value, Mapping) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, Mapping):
            result[key] = strategic_merge_patch(old if isinstance(old, Mapping) else {}, value)
        elif isinstance(value, list) and key in SMP_MERGED_SCALAR_LISTS:
            base = list(old) if isinstance(old, list) else []
            result[key] = base + [item for item in value if item not in base]
        elif (
            isinstance(value, list)
            and isinstance(old, list)
            and (merge_key := _smp_merge_key(key, old, value)) is not None
        ):
            result[key] = _smp_merge_list(old, value, merge_key)
        else:
            result[key] = _strip_directives(copy.deepcopy(value))
    for field, removed in deletions:
        if isinstance(result.get(field), list):
            result[field] = [item for item in result[field] if item not in removed]
    return result


def _smp_merge_list(old: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    if any(isinstance(item, Mapping) and item.get("$patch") == "replace" for item in patch):
        return [
            _strip_directives(item)
            for item in patch
            if not (isinstance(item, Mapping) and item.get("$patch") == "replace")
        ]
    result = [copy.deepcopy(item) for item in old]
    for item in patch:
        if not isinstance(item, Mapping) or merge_key not in item:
            result.append(_strip_directives(copy.deepcopy(item)))
            continue
        index = next(
            (
                i
                for i, existing in enumerate(result)
                if isinstance(existing, Mapping) and existing.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip_directives(copy.deepcopy(item)))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


# ------------------------------------------------------------------------------------------------
# Selectors. kmock ignores ?labelSelector= and ?fieldSelector= (lists & watches return everything).
# ------------------------------------------------------------------------------------------------


class SelectorError(ValueError):
    """An unparseable selector (HTTP 400 on a real server)."""


_LABEL_REQ = re.compile(
    r"^\s*(?:(?P<neg>!)\s*(?P<nkey>[^\s!=,()]+)"
    r"|(?P<key>[^\s!=,()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\)"
    r"|(?P<gt>[<>])\s*(?P<num>-?\d+))?)\s*$"
)

Predicate = Callable[[Mapping[str, Any]], bool]


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part.strip()]


def _label_check(key: str, op: str, values: frozenset[str] = frozenset()) -> Predicate:
    def check(labels: Mapping[str, Any]) -> bool:
        if op == "exists":
            return key in labels
        if op == "!exists":
            return key not in labels
        if op == "in":
            return labels.get(key) in values
        if op == "notin":
            return labels.get(key) not in values
        if op in (">", "<"):
            try:
                number = int(labels[key])
            except (KeyError, ValueError):
                return False
            limit = int(next(iter(values)))
            return number > limit if op == ">" else number < limit
        raise AssertionError(op)  # pragma: no cover

    return check


def parse_label_selector(text: str | None) -> Predicate:
    """Equality-, set-based, existence and numeric (``<``/``>``) requirements, comma = AND."""
    if not text:
        return lambda labels: True
    checks: list[Predicate] = []
    for part in _split_top_level(text):
        match = _LABEL_REQ.match(part)
        if match is None:
            raise SelectorError(f"unable to parse requirement: {part!r}")
        groups = match.groupdict()
        if groups["neg"]:
            checks.append(_label_check(groups["nkey"], "!exists"))
        elif groups["op"] in ("=", "=="):
            checks.append(_label_check(groups["key"], "in", frozenset({groups["value"]})))
        elif groups["op"] == "!=":
            checks.append(_label_check(groups["key"], "notin", frozenset({groups["value"]})))
        elif groups["setop"]:
            values = frozenset(v.strip() for v in groups["values"].split(",") if v.strip())
            checks.append(_label_check(groups["key"], groups["setop"], values))
        elif groups["gt"]:
            checks.append(_label_check(groups["key"], groups["gt"], frozenset({groups["num"]})))
        else:
            checks.append(_label_check(groups["key"], "exists"))
    return lambda labels: all(check(labels) for check in checks)


# The fields a real server can select on, beyond metadata.name and metadata.namespace (by plural;
# from each kind's field label conversion funcs in kubernetes/pkg/apis/*/v1/conversion.go).
FIELD_SELECTABLE: Mapping[str, frozenset[str]] = {
    "events": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    "pods": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    "jobs": frozenset({"status.successful"}),
    "secrets": frozenset({"type"}),
    "namespaces": frozenset({"status.phase"}),
}


def parse_field_selector(text: str | None, plural: str | None = None) -> Predicate:
    """
    ``path=value``, ``path==value``, ``path!=value``, comma = AND, over the whole object.

    A real server supports only a few fields per resource type (``metadata.name``,
    ``metadata.namespace``, plus the kind's own in :data:`FIELD_SELECTABLE`) and refuses others
    with a 400 ("field label not supported"); given ``plural``, so does this. Absent fields
    compare as ``""``.
    """
    if not text:
        return lambda obj: True
    supported = {"metadata.name", "metadata.namespace", *FIELD_SELECTABLE.get(plural or "", ())}
    checks: list[Predicate] = []
    for part in _split_top_level(text):
        match = re.match(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*(\S*)\s*$", part)
        if match is None:
            raise SelectorError(f"invalid field selector: {part!r}")
        path, op, value = match.groups()
        if plural is not None and path not in supported:
            raise SelectorError(f"field label not supported: {path}")

        def check(obj: Mapping[str, Any], path: str = path, op: str = op, value: str = value) -> bool:
            current: Any = obj
            for step in path.split("."):
                current = current.get(step) if isinstance(current, Mapping) else None
            actual = (
                "" if current is None else str(current).lower() if isinstance(current, bool) else str(current)
            )
            return (actual == value) if op != "!=" else (actual != value)

        checks.append(check)
    return lambda obj: all(check(obj) for check in checks)


# ------------------------------------------------------------------------------------------------
# Structural schemas of CRDs. A real server prunes unknown fields and fills in defaults
# on every write of a custom resource; kmock stores whatever it receives.
# ------------------------------------------------------------------------------------------------


def prune_and_default(value: Any, schema: Mapping[str, Any] | None) -> Any:
    """
    Drop fields unknown to the schema and add ``default`` values, as apiextensions/v1 does.

    ``x-kubernetes-preserve-unknown-fields: true`` keeps unknown fields; ``additionalProperties``
    applies its schema to every key. OpenAPI *validation* (types, required, enums, CEL rules)
    is NOT performed: a real server would reject some objects that are stored here.
    """
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, Mapping):
        props: Mapping[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        result: dict[str, Any] = {}
        for key, val in value.items():
            if key in props:
                result[key] = prune_and_default(val, props[key])
            elif isinstance(additional, Mapping):
                result[key] = prune_and_default(val, additional)
            elif additional is True or preserve:
                result[key] = val
        for key, subschema in props.items():
            if key not in result and isinstance(subschema, Mapping) and "default" in subschema:
                result[key] = prune_and_default(copy.deepcopy(subschema["default"]), subschema)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [prune_and_default(item, schema["items"]) for item in value]
    return value


def prune_custom_object(body: Mapping[str, Any], schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Prune a whole custom object; ``apiVersion``, ``kind``, ``metadata`` are never pruned."""
    if not schema:
        return dict(body)
    system = {key: body[key] for key in ("apiVersion", "kind", "metadata") if key in body}
    rest = {key: val for key, val in body.items() if key not in system}
    pruned = prune_and_default(rest, schema)
    for key in system:  # the schema's own entries for these are irrelevant: keep them as sent
        pruned.pop(key, None)
    return {**system, **pruned}
