"""The Helm chart, offline: lint, render with default and other values, validate the rendered
manifests against Kubernetes' schemas, reject misspelt values, and keep RBAC to docs/rbac.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests import crd_validation
from tests.chart import tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelwarmup"
K8S_VERSION = "1.31"
VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}", "--set", "peering.enabled=true"],
    "monitored": [
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "crds.keep=false",
        "--set",
        "logging.format=json",
    ],
    "no-crds-no-metrics": ["--set", "crds.enabled=false", "--set", "metrics.port=0"],
    "peered": ["--set", "peering.enabled=true", "--set", "replicaCount=2"],
}


@pytest.fixture(scope="session")
def helm() -> Path:
    tools.fetch()
    return tools.helm()


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(helm), "template", "mw", str(CHART), "--namespace", "modelwarmup-system", *args],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint(helm: Path, name: str) -> None:
    result = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), *VALUE_SETS[name]], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_manifests_are_valid_kubernetes(helm: Path, name: str) -> None:
    documents = render(helm, *VALUE_SETS[name])
    for document in documents:
        if document["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's CRD is not in Kubernetes' schemas
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_misspelt_value_fails_the_install(helm: Path) -> None:
    result = subprocess.run(
        [str(helm), "template", "mw", str(CHART), "--set", "metrics.prot=9090"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "additional property prot is not allowed" in result.stderr.lower()


def test_chart_crd_equals_the_generated_one(helm: Path) -> None:
    rendered = next(d for d in render(helm) if d["kind"] == "CustomResourceDefinition")
    generated = crd_validation.load_crd()
    assert rendered["spec"] == generated["spec"]
    assert rendered["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    kinds = {d["kind"] for d in render(helm, "--set", "crds.enabled=false")}
    assert "CustomResourceDefinition" not in kinds


def _documented_grants() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples of docs/rbac.md's machine-readable block."""
    text = (ROOT / "docs" / "rbac.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block, "docs/rbac.md has no yaml block"
    rules = yaml.safe_load(block.group(1))
    grants: set[tuple[str, str, str]] = set()
    for rule in [*rules["rules"], *rules.get("clusterRules", [])]:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                grants.update((group, res, verb) for verb in rule["verbs"])
    return grants


@pytest.mark.parametrize("name", ["default", "namespaced", "peered"])
def test_rbac_grants_nothing_beyond_the_documented_needs(helm: Path, name: str) -> None:
    documented = _documented_grants()
    assert documented, "docs/rbac.md has no grant table"
    roles = [d for d in render(helm, *VALUE_SETS[name]) if d["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert (group, res, verb) in documented, (
                            f"{role['kind']} grants {verb} {group}/{res}, not in docs/rbac.md"
                        )


def test_namespaced_install_uses_a_role_per_namespace(helm: Path) -> None:
    documents = render(helm, *VALUE_SETS["namespaced"])
    roles = sorted(d["metadata"]["namespace"] for d in documents if d["kind"] == "Role")
    assert roles == ["team-a", "team-b"]
    cluster_roles = [d for d in documents if d["kind"] == "ClusterRole"]
    assert [[rule["resources"][0] for rule in r["rules"]] for r in cluster_roles] == [
        ["customresourcedefinitions", "namespaces"]
    ]
    args = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert args == ["operator", "--namespace=team-a", "--namespace=team-b"]


def test_operator_pod_meets_the_restricted_profile(helm: Path) -> None:
    deployment = next(d for d in render(helm) if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELWARMUP_WORKER_IMAGE"] == "ghcr.io/modelwarmup/worker:0.1.0"


def test_every_value_is_documented() -> None:
    """Every key of values.yaml has a comment right above it, except inside Kubernetes objects."""
    passthrough = ("resources", "podSecurityContext", "securityContext")
    lines = (CHART / "values.yaml").read_text().splitlines()
    inside: str | None = None
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        if indent == 0:
            inside = key if key in passthrough else None
        if inside is not None and indent > 0:
            continue
        assert lines[index - 1].strip().startswith("#"), (
            f"values.yaml line {index + 1} ({key}) has no comment above it"
        )


def test_peering_installs_kopfs_crds_and_names_the_peering_the_replicas_share(helm: Path) -> None:
    documents = render(helm, *VALUE_SETS["peered"])
    crds = {d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELWARMUP_PEERING"] == "1" and env["MODELWARMUP_PEERING_NAME"] == "mw-modelwarmup"
    assert (deployment["spec"]["replicas"], deployment["spec"]["strategy"]["type"]) == (2, "RollingUpdate")
    [role] = [d for d in documents if d["kind"] == "ClusterRole"]
    peering = next(r for r in role["rules"] if r["apiGroups"] == ["kopf.dev"])
    assert peering["resources"] == ["clusterkopfpeerings"] and "create" in peering["verbs"]
    unpeered = render(helm, "--set", "peering.enabled=true", "--set", "peering.installCrds=false")
    assert not [d for d in unpeered if d["metadata"]["name"].endswith(".kopf.dev")]
