"""Validate an object against the generated CRD's schema the way a Kubernetes API server does.

No API server binary can be installed here, so this is a small, documented stand-in for the
part of kube-apiserver that matters to our CRD: defaulting, structural type checks, formats
(pattern, enum, bounds), strict unknown-field detection (as `kubectl apply --validate=strict`),
``x-kubernetes-list-type: map`` key uniqueness and CEL ``x-kubernetes-validations``, evaluated with
cel-python. Messages follow the API server's wording so tests can share expectations.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import celpy
import yaml

Schema = dict[str, Any]
CRD_PATH = Path(__file__).resolve().parents[1] / "crds" / "modelwarmups.modelwarmup.dev.yaml"

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def load_crd(path: Path = CRD_PATH) -> Schema:
    crd: Schema = yaml.safe_load(path.read_text(encoding="utf-8"))
    return crd


def root_schema(crd: Schema) -> Schema:
    schema: Schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


class SchemaValidator:
    """One CRD version's schema, ready to validate bodies."""

    def __init__(self, crd: Schema) -> None:
        self.root = root_schema(crd)
        self.cel = celpy.Environment()
        self._programs: dict[str, Any] = {}

    def validate(self, body: Schema) -> list[str]:
        """Problems as "path: message"; empty when the API server would accept the body."""
        body = copy.deepcopy(body)
        problems: list[str] = []
        # metadata, apiVersion and kind are the API server's own business.
        for name in ("spec", "status"):
            if name in body:
                self._walk(self.root["properties"][name], body[name], name, problems)
            elif name in self.root.get("required", []):
                problems.append(f"{name}: Required value")
        return problems

    def _walk(self, schema: Schema, value: Any, path: str, problems: list[str]) -> None:
        if not self._check_type(schema, value, path, problems):
            return
        if isinstance(value, dict):
            self._walk_object(schema, value, path, problems)
        elif isinstance(value, list):
            self._walk_array(schema, value, path, problems)
        else:
            self._check_scalar(schema, value, path, problems)
        for rule in schema.get("x-kubernetes-validations", []):
            if not self._holds(rule["rule"], value):
                # fieldPath (a JSON path relative to the rule's node) says where the API server reports it.
                problems.append(f"{path}{rule.get('fieldPath', '')}: Invalid value: {rule['message']}")

    def _check_type(self, schema: Schema, value: Any, path: str, problems: list[str]) -> bool:
        if schema.get("x-kubernetes-int-or-string"):
            ok = isinstance(value, int | str) and not isinstance(value, bool)
        elif "type" in schema:
            expected = _TYPES[schema["type"]]
            ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
        else:
            ok = True
        if not ok:
            problems.append(
                f"{path}: Invalid value: {json.dumps(value)}: must be of type {schema.get('type')}"
            )
        return ok

    def _walk_object(self, schema: Schema, value: dict[str, Any], path: str, problems: list[str]) -> None:
        properties: Schema = schema.get("properties", {})
        for name, sub in properties.items():  # defaulting happens before validation
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{path}.{name}: Required value")
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                self._walk(properties[name], item, f"{path}.{name}", problems)
            elif isinstance(extra, dict):
                self._walk(extra, item, f"{path}.{name}", problems)
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f'{path}.{name}: unknown field "{path}.{name}"')

    def _walk_array(self, schema: Schema, value: list[Any], path: str, problems: list[str]) -> None:
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(
                f"{path}: Invalid value: {len(value)}: should have at least {schema['minItems']} items"
            )
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
        for index, item in enumerate(value):
            self._walk(schema["items"], item, f"{path}[{index}]", problems)
        if schema.get("x-kubernetes-list-type") == "map":
            keys = schema["x-kubernetes-list-map-keys"]
            seen: set[str] = set()
            for index, item in enumerate(value):
                key = json.dumps({k: item.get(k) for k in keys}, sort_keys=True)
                if key in seen:
                    problems.append(f"{path}[{index}]: Duplicate value: {key}")
                seen.add(key)

    def _check_scalar(self, schema: Schema, value: Any, path: str, problems: list[str]) -> None:
        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(json.dumps(v) for v in schema["enum"])
            problems.append(f"{path}: Unsupported value: {json.dumps(value)}: supported values: {supported}")
        if isinstance(value, str):
            if "pattern" in schema and not re.search(schema["pattern"], value):
                problems.append(
                    f"{path}: Invalid value: {json.dumps(value)}: {path} in body should match '{schema['pattern']}'"
                )
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                problems.append(f"{path}: Too long: may not be longer than {schema['maxLength']}")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                problems.append(
                    f"{path}: Invalid value: {value}: {path} in body should be greater than or equal to {schema['minimum']}"
                )
            if "maximum" in schema and value > schema["maximum"]:
                problems.append(
                    f"{path}: Invalid value: {value}: {path} in body should be less than or equal to {schema['maximum']}"
                )

    def compile_rule(self, rule: str) -> Any:
        if rule not in self._programs:
            self._programs[rule] = self.cel.program(self.cel.compile(rule))
        return self._programs[rule]

    def _holds(self, rule: str, value: Any) -> bool:
        result = self.compile_rule(rule).evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception):
            raise AssertionError(f"CEL rule {rule!r} failed to evaluate: {result}")
        return bool(result)
