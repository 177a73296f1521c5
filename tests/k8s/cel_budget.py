"""What a real API server checks before it takes a CRD's CEL rules: that their cost is bounded.

kube-apiserver estimates each ``x-kubernetes-validations`` rule's worst-case cost from the schema
and refuses the CRD when it exceeds the budget ("estimated rule cost exceeds budget by factor of
4.3x"). The estimate multiplies by the size of every list, map and string that the rule walks,
and by how often the rule runs (the lists and maps above its node). Without ``maxItems``,
``maxProperties`` or ``maxLength`` that size is derived from the 3 MB request limit, which blows
the budget for any rule that iterates.

We cannot run apiextensions' estimator here, so this module applies its sufficient condition:
every list, map and string a rule reaches, and every list or map above the rule's node, has a
bound. That is stricter than the real estimate (a bounded but huge list can still exceed the
budget) and never looser for the cases that matter to us. Used by the CRD tests and by the
emulator, which refuses such a CRD with a 422 as the real server does.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

Schema = Mapping[str, Any]

# `self.a.b` chains, and `has(self.a.b)`, which only tests presence and walks nothing below `b`.
_SELF_PATH = re.compile(r"(?<![\w.])self((?:\.[A-Za-z_]\w*)*)")
_HAS_CALL = re.compile(r"has\(\s*self((?:\.[A-Za-z_]\w*)+)\s*\)")


@dataclasses.dataclass(frozen=True)
class Unbounded:
    """A rule whose cost the API server would estimate as unbounded, and why."""

    rule_path: str  # where the rule is declared, as the API server names it
    index: int
    node_path: str  # the unbounded node
    missing: str  # "maxItems", "maxProperties" or "maxLength"

    def __str__(self) -> str:
        return (
            f"{self.rule_path}.x-kubernetes-validations[{self.index}].rule: Forbidden: estimated rule cost "
            f"exceeds budget: it walks {self.node_path}, which has no {self.missing}"
        )


def _bound_needed(node: Schema) -> str | None:
    """The bound a node needs for a rule walking it, or None when it has one (or needs none)."""
    kind = node.get("type")
    if kind == "array":
        return None if "maxItems" in node else "maxItems"
    if kind == "object" and isinstance(node.get("additionalProperties"), Mapping):
        return None if "maxProperties" in node else "maxProperties"
    if kind == "string" or node.get("x-kubernetes-int-or-string"):
        return None if "maxLength" in node else "maxLength"
    if kind == "object" and node.get("x-kubernetes-preserve-unknown-fields") and not node.get("properties"):
        return "a schema (free-form objects have no bound)"
    return None


def _children(node: Schema, path: str) -> Iterator[tuple[Schema, str]]:
    for name, child in (node.get("properties") or {}).items():
        yield child, f"{path}.properties[{name}]"
    if isinstance(node.get("items"), Mapping):
        yield node["items"], f"{path}.items"
    if isinstance(node.get("additionalProperties"), Mapping):
        yield node["additionalProperties"], f"{path}.additionalProperties"


def _subtree(node: Schema, path: str) -> Iterator[tuple[Schema, str]]:
    yield node, path
    for child, child_path in _children(node, path):
        yield from _subtree(child, child_path)


def _follow(node: Schema, path: str, fields: list[str]) -> tuple[Schema, str]:
    """The deepest node a ``self.a.b`` chain selects; a name that is no field (a method, a macro) ends it."""
    for field in fields:
        child = (node.get("properties") or {}).get(field)
        if child is None:
            break
        node, path = child, f"{path}.properties[{field}]"
    return node, path


def _reached(rule: str, node: Schema, path: str) -> Iterator[tuple[Schema, str]]:
    """The nodes a rule's evaluation may walk: the subtree of every ``self...`` it uses by value."""
    by_value = _HAS_CALL.sub("true", rule)  # has(self.a.b) tests presence: constant cost
    for match in _SELF_PATH.finditer(by_value):
        yield from _subtree(*_follow(node, path, [f for f in match.group(1).split(".") if f]))


def unbounded_rules(schema: Schema, path: str = "openAPIV3Schema") -> list[Unbounded]:
    """Every rule under ``schema`` whose estimated cost a real API server would find unbounded."""
    found: list[Unbounded] = []

    def visit(node: Schema, node_path: str, above: list[tuple[Schema, str]]) -> None:
        for index, validation in enumerate(node.get("x-kubernetes-validations") or []):
            runs = [(n, p) for n, p in above if n.get("type") == "array" or "additionalProperties" in n]
            seen: set[str] = set()
            for reached, reached_path in [*runs, *_reached(validation.get("rule", ""), node, node_path)]:
                missing = _bound_needed(reached)
                if missing is not None and reached_path not in seen:
                    seen.add(reached_path)
                    found.append(Unbounded(node_path, index, reached_path, missing))
        for child, child_path in _children(node, node_path):
            visit(child, child_path, [*above, (node, node_path)])

    visit(schema, path, [])
    return found


def crd_problems(crd: Mapping[str, Any]) -> list[str]:
    """The API server's refusals for the CEL costs of every version of a CRD."""
    problems: list[str] = []
    for index, version in enumerate((crd.get("spec") or {}).get("versions") or []):
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if isinstance(schema, Mapping):
            path = f"spec.versions[{index}].schema.openAPIV3Schema"
            problems.extend(str(u) for u in unbounded_rules(schema, path))
    return problems
