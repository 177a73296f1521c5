"""What the operator integration tests share: resource builders, waits, condition lookups."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tests.e2e.cluster import CRD_PATH, MW, ROOT, WORKER_IMAGE, operator_settings
from tests.k8s.client import DEPLOYMENTS, EVENTS, JOBS, PODS, KubeClient, wait_for
from tests.k8s.kubelet import LocalKubelet, PodRun

NS = "team-a"
TINY_REPO = "devkit/tiny-llama"
# The labels of the pods resolving a branch to a commit: ``kubelet.hold(exempt=RESOLVING)``
# holds the warm-ups only.
RESOLVING = {"modelwarmup.dev/role": "resolve"}
# Small and fast on a CPU: float32 (the tiny model's dtype, no cast), one dynamic-length graph.
TINY_COMPILE: dict[str, Any] = {"dtype": "float32", "maxLength": 64, "sequenceLengths": [8]}

__all__ = [
    "CRD_PATH",
    "DEPLOYMENTS",
    "EVENTS",
    "JOBS",
    "MW",
    "NS",
    "PODS",
    "WORKER_IMAGE",
    "operator_settings",
    "wait_for",
]


def warmup(
    name: str,
    *,
    repo: str = TINY_REPO,
    revision: str = "main",
    compile: dict[str, Any] | None = None,
    serving: list[str] | None = None,
    claim: str = "model-cache",
    **spec: Any,
) -> dict[str, Any]:
    """A ModelWarmup like examples/minimal.yaml for the tiny model; download-only unless ``compile``."""
    example = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    body: dict[str, Any] = copy.deepcopy(example)
    body["metadata"] = {"name": name, "namespace": NS}
    body["spec"]["model"] = {"repo": repo, "revision": revision}
    body["spec"]["compile"] = compile if compile is not None else {"enabled": False}
    body["spec"]["cache"] = {"persistentVolumeClaim": {"claimName": claim}}
    body["spec"]["worker"] = {"backoffLimit": 2}
    if serving is not None:
        body["spec"]["serving"] = {"names": serving, "containers": ["server"]}
    body["spec"].update(spec)
    return body


def deployment(name: str) -> dict[str, Any]:
    """A serving Deployment as a user would apply it."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "example/server:1",
                            "env": [
                                {"name": "PORT", "value": "8000"},
                                {"name": "PYTHONPATH", "value": "/app"},
                            ],
                        },
                        {"name": "sidecar", "image": "example/sidecar:1"},
                    ]
                },
            },
        },
    }


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The status conditions by type."""
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def condition(kube: KubeClient, name: str, type_: str = "Ready") -> dict[str, Any]:
    return conditions(kube.get_or_none(MW, name, namespace=NS)).get(type_, {})


def wait_condition(
    kube: KubeClient,
    name: str,
    *,
    status: str,
    reason: str | None = None,
    type_: str = "Ready",
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Wait until the condition has ``status`` (and ``reason``); return the resource."""

    def check() -> dict[str, Any] | None:
        obj = kube.get_or_none(MW, name, namespace=NS)
        found = conditions(obj).get(type_, {})
        if found.get("status") == status and (reason is None or found.get("reason") == reason):
            return obj
        return None

    return wait_for(
        check,
        timeout=timeout,
        interval=0.1,
        message=lambda: f"{name} {type_}={status}/{reason}: {condition(kube, name, type_)}",
    )


def jobs(kube: KubeClient) -> list[dict[str, Any]]:
    """The warm-up Jobs (targets' and prune Jobs), not the Jobs resolving a branch to a commit."""
    return kube.list(
        JOBS,
        namespace=NS,
        label_selector="app.kubernetes.io/managed-by=modelwarmup,modelwarmup.dev/role!=resolve",
    )


def resolve_jobs(kube: KubeClient) -> list[dict[str, Any]]:
    return kube.list(JOBS, namespace=NS, label_selector="modelwarmup.dev/role=resolve")


def warm_runs(kubelet: LocalKubelet) -> list[PodRun]:
    """The kubelet's pod runs of warm-up Jobs (not of resolve Jobs)."""
    resolving = {job["metadata"]["name"] for job in resolve_jobs(kubelet.client)}
    return [run for run in kubelet.runs if run.job not in resolving]


def events(kube: KubeClient, name: str) -> list[dict[str, Any]]:
    """The Events about one ModelWarmup, oldest first."""
    found = [
        e for e in kube.list(EVENTS, namespace=NS) if (e.get("involvedObject") or {}).get("name") == name
    ]
    return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))


def template_annotations(kube: KubeClient, name: str) -> dict[str, str]:
    deployment = kube.get(DEPLOYMENTS, name, namespace=NS)
    annotations: dict[str, str] = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    return annotations
