"""The examples validate, and every validation rule rejects a bad example naming the field.

Each bad case is checked twice: by the pydantic models (what the operator and CLI say) and by
the generated CRD's schema as an API server applies it (what `kubectl apply` says).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelwarmup import errors, manifests
from tests import crd_validation
from tests.k8s.semantics import json_merge_patch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = yaml.safe_load((ROOT / "tests" / "data" / "invalid_specs.yaml").read_text())


def modelwarmups(path: Path) -> list[dict[str, Any]]:
    return [body for body in manifests.load_documents(path) if manifests.is_modelwarmup(body)]


@pytest.fixture(scope="module")
def validator() -> crd_validation.SchemaValidator:
    return crd_validation.SchemaValidator(crd_validation.load_crd())


@pytest.fixture(scope="module")
def minimal() -> dict[str, Any]:
    return modelwarmups(ROOT / "examples" / "minimal.yaml")[0]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid_for_models_and_crd(path: Path, validator: crd_validation.SchemaValidator) -> None:
    bodies = modelwarmups(path)
    assert bodies, f"{path.name} holds no ModelWarmup"
    for body in bodies:
        manifests.validate_body(body)
        assert validator.validate(body) == []


def test_full_example_round_trips_through_the_models() -> None:
    body = modelwarmups(ROOT / "examples" / "full.yaml")[0]
    resource = manifests.validate_body(body)
    assert [t.name for t in resource.spec.targets] == ["h100", "l4"]
    assert resource.spec.cache.claim_name == "model-cache-rwx"
    assert resource.spec.compile.extra_options == {"coordinate_descent_tuning": True}
    dumped = resource.spec.model_dump(by_alias=True, exclude_defaults=True)
    assert dumped["model"]["tokenSecretRef"] == {"name": "hf-token"}


def test_defaults_are_the_same_in_models_and_crd(
    minimal: dict[str, Any], validator: crd_validation.SchemaValidator
) -> None:
    resource = manifests.validate_body(minimal)
    assert resource.spec.compile.dtype == "auto"
    assert resource.spec.cache.claim_name == "modelwarmup-cache"
    defaulted = copy.deepcopy(minimal)
    validator._walk(validator.root["properties"]["spec"], defaulted["spec"], "spec", [])
    assert defaulted["spec"]["model"]["revision"] == resource.spec.model.revision
    assert defaulted["spec"]["cache"]["create"]["name"] == resource.spec.cache.claim_name


@pytest.mark.parametrize("case", INVALID, ids=[c["case"] for c in INVALID])
def test_invalid_spec_is_rejected_naming_the_field(
    case: dict[str, Any], minimal: dict[str, Any], validator: crd_validation.SchemaValidator
) -> None:
    body = copy.deepcopy(minimal)
    body["spec"] = json_merge_patch(body["spec"], case["patch"])
    field, fragment = case["field"], case["message"].lower()

    with pytest.raises(errors.InvalidSpecError) as raised:
        manifests.validate_body(body)
    model_lines = [p for p in raised.value.problems if p.startswith(f"{field}:")]
    assert any(fragment in line.lower() for line in model_lines), raised.value.problems

    crd_lines = [p for p in validator.validate(body) if p.startswith(f"{field}")]
    if case.get("crd") == "admits":
        assert validator.validate(body) == []
        return
    assert any(fragment in line.lower() for line in crd_lines), validator.validate(body)


def test_each_cel_rule_is_exercised_by_a_bad_example(validator: crd_validation.SchemaValidator) -> None:
    """No CEL rule may exist without a bad example that trips it."""
    messages: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            messages.update(rule["message"] for rule in node.get("x-kubernetes-validations", []))
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(validator.root)
    minimal_body = modelwarmups(ROOT / "examples" / "minimal.yaml")[0]
    tripped: set[str] = set()
    for case in INVALID:
        body = copy.deepcopy(minimal_body)
        body["spec"] = json_merge_patch(body["spec"], case["patch"])
        for problem in validator.validate(body):
            tripped.update(m for m in messages if m in problem)
    assert messages - tripped == set()
