"""The checked-in CRD is what the models generate, and Kubernetes can take it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelwarmup import crdgen, errors
from tests import crd_validation
from tests.k8s import cel_budget

ROOT = Path(__file__).resolve().parents[1]


def test_checked_in_files_equal_what_the_models_generate() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelwarmup.generated", "--check", "--root", str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_generated_check_fails_on_a_drifted_file(tmp_path: Path) -> None:
    for relative in ("crds/modelwarmups.modelwarmup.dev.yaml", "docs/api.md"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text((ROOT / relative).read_text())
    crd = tmp_path / "crds/modelwarmups.modelwarmup.dev.yaml"
    crd.write_text(crd.read_text().replace("maxBatchSize", "maxBatchSise", 1))
    result = subprocess.run(
        [sys.executable, "-m", "modelwarmup.generated", "--check", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "crds/modelwarmups.modelwarmup.dev.yaml is stale" in result.stderr


def _nodes(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += _nodes(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        found += _nodes(node["additionalProperties"], f"{path}{{}}")
    if "items" in node:
        found += _nodes(node["items"], f"{path}[]")
    return found


def test_schema_is_structural() -> None:
    root = crd_validation.root_schema(crd_validation.load_crd())
    for path, node in _nodes(root):
        assert "$ref" not in node and "title" not in node and "uniqueItems" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "anyOf" not in node and "oneOf" not in node, path
        assert "type" in node, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("additionalProperties") not in (True, False), path
    free_form = [p for p, n in _nodes(root) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert free_form == [".properties.spec.compile.extraOptions".replace(".properties", "")]


def test_every_field_is_documented() -> None:
    root = crd_validation.root_schema(crd_validation.load_crd())
    fields = [(p, n) for p, n in _nodes(root) if p.count(".") >= 2 and not p.endswith(("[]", "{}"))]
    undocumented = [p for p, n in fields if not n.get("description")]
    assert undocumented == []


def test_every_cel_rule_compiles() -> None:
    validator = crd_validation.SchemaValidator(crd_validation.load_crd())
    rules = [
        rule["rule"]
        for _, node in _nodes(validator.root)
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 6
    for rule in rules:
        validator.compile_rule(rule)


def test_crd_object_is_valid_for_kubernetes() -> None:
    crd = crd_validation.load_crd()
    kubernetes_validate.validate(crd, "1.31", strict=True)


def test_crd_names_printer_columns_and_status_subresource() -> None:
    crd = crdgen.build_crd()
    version = crd["spec"]["versions"][0]
    assert crd["metadata"]["name"] == "modelwarmups.modelwarmup.dev"
    assert crd["spec"]["names"]["shortNames"] == ["mw"]
    assert crd["spec"]["scope"] == "Namespaced"
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert {"Model", "Revision", "Age"} <= columns.keys()


def test_union_that_cannot_be_structural_is_refused() -> None:
    with pytest.raises(errors.SchemaError, match="several types"):
        crdgen.structural({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}, {}, ".x")


def test_every_node_a_cel_rule_walks_is_bounded_so_a_real_api_server_takes_the_crd() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "modelwarmups.modelwarmup.dev.yaml").read_text())
    assert cel_budget.crd_problems(crd) == []


def test_the_budget_check_finds_the_rule_a_real_api_server_refused() -> None:
    """The GPU rule over an unbounded resources.limits map was refused by kube-apiserver v1.36."""
    crd = yaml.safe_load((ROOT / "crds" / "modelwarmups.modelwarmup.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    del spec["properties"]["targets"]["items"]["properties"]["resources"]["properties"]["limits"][
        "maxProperties"
    ]
    del spec["properties"]["targets"]["maxItems"]
    gpu_rule = "properties[targets].items.x-kubernetes-validations[0].rule: Forbidden"
    problems = [p for p in cel_budget.crd_problems(crd) if gpu_rule in p]
    assert len(problems) == 2
    assert any("properties[limits], which has no maxProperties" in p for p in problems)
    assert any("properties[targets], which has no maxItems" in p for p in problems)
