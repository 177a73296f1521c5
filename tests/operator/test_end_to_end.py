"""The whole loop on the real parts: a tiny model on a local hub, the real operator over HTTP, the
warm-up Job run as a real process (download and CPU compile), the Deployment patched, and a serving
process started from the patched pod template that starts warm.

The warm-up (about 15 s of compilation) runs once for the module; the tests read its results.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelwarmup.contracts import wiring
from modelwarmup.controller import jobs, serving
from tests.devkit.hub import LocalHub
from tests.e2e import serving as serving_pod
from tests.e2e.cluster import LocalCluster
from tests.k8s import replicas
from tests.k8s.kubelet import LocalKubelet
from tests.operator import helpers, rbac
from tests.operator.helpers import DEPLOYMENTS, MW, NS


@dataclasses.dataclass
class Warmed:
    cluster: LocalCluster
    kubelet: LocalKubelet
    original: dict[str, Any]  # the Deployment as applied
    resource: dict[str, Any]  # the ModelWarmup once Ready
    commit: str


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def warmed(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warmed]:
    root = tmp_path_factory.mktemp("e2e")
    with LocalCluster(root, kubelet_env={"HF_ENDPOINT": hub.endpoint}) as cluster:
        assert cluster.kubelet is not None
        kube = cluster.kube
        original = kube.create(DEPLOYMENTS, helpers.deployment("chat"), namespace=NS)
        kube.create(MW, helpers.warmup("tiny", compile=helpers.TINY_COMPILE, serving=["chat"]), namespace=NS)
        obj = helpers.wait_condition(kube, "tiny", status="True", timeout=240)
        commit = hub.repo(helpers.TINY_REPO).resolve("main")
        assert commit is not None
        yield Warmed(cluster, cluster.kubelet, original, obj, commit.sha)
        assert not cluster.kubelet.errors, cluster.kubelet.errors
        assert not rbac.denied(cluster.server.requests()), rbac.denied(cluster.server.requests())


@pytest.mark.slow
def test_warm_up_reaches_ready_with_details_and_wires_the_deployment(warmed: Warmed) -> None:
    kube, obj, original = warmed.cluster.kube, warmed.resource, warmed.original
    status = obj["status"]
    assert status["resolvedRevision"] == warmed.commit
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert {t: (c["status"], c["reason"]) for t, c in helpers.conditions(obj).items()} == {
        "Ready": ("True", "Ready"),
        "WeightsDownloaded": ("True", "Downloaded"),
        "Compiled": ("True", "Compiled"),
        "ServingPatched": ("True", "Patched"),
        "ServingWarm": ("Unknown", "WaitingForServingPod"),  # no serving pod has started yet
    }
    [job] = helpers.jobs(kube)
    [target] = status["targets"]
    assert target["job"] == job["metadata"]["name"]
    assert (target["phase"], target["reason"], target["attempts"]) == ("Succeeded", "Warmed", 1)
    model_key = target["entryKey"].split("/")[0]
    assert status["modelKey"] == model_key and model_key.startswith("devkit--tiny-llama-")
    assert target["bytes"] > 300_000  # the weights and the compiled artifacts
    assert target["platform"]["device_type"] == "cpu" and target["platform"]["torch"]
    assert target["compileSeconds"] > 0 and target["downloadSeconds"] >= 0
    assert status["patchedDeployments"] == ["chat"]

    # The Job was the real one: worker image, restricted, token-free, the cache at /cache.
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["modelwarmup"] and container["args"][0] == "warm-cache"
    assert container["image"] == helpers.WORKER_IMAGE and container["name"] == jobs.CONTAINER
    [run] = helpers.warm_runs(warmed.kubelet)
    assert run.exit_code == 0 and json.loads(run.message)["entry_key"] == target["entryKey"]

    # The Deployment: wired once, to the key, in the chosen container only.
    deployment = kube.get(DEPLOYMENTS, "chat", namespace=NS)
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"][wiring.ANNOTATION_MODEL_KEY] == model_key
    assert deployment["metadata"]["generation"] == original["metadata"]["generation"] + 1  # one rollout
    server, sidecar = template["spec"]["containers"]
    assert sidecar == original["spec"]["template"]["spec"]["containers"][1]
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["MODELWARMUP_MODEL_KEY"] == model_key
    assert env["PYTHONPATH"] == "/opt/modelwarmup/python:/app" and env["PORT"] == "8000"
    assert [c["name"] for c in template["spec"]["initContainers"]] == [serving.INIT_CONTAINER]

    # Events: one per Ready transition, nothing else.
    reasons = [e["reason"] for e in helpers.events(kube, "tiny")]
    assert reasons[-1] == "Ready" and set(reasons) <= {"JobPending", "Warming", "Ready"}, reasons
    assert len(reasons) == len(set(reasons)), reasons


@pytest.mark.slow
def test_a_serving_pod_from_the_patched_template_starts_warm(warmed: Warmed, tmp_path: Path) -> None:
    kubelet = warmed.kubelet
    deployment = warmed.cluster.kube.get(DEPLOYMENTS, "chat", namespace=NS)
    model_key, platform_key = warmed.resource["status"]["targets"][0]["entryKey"].split("/")
    # A serving pod from that template starts warm: Inductor finds every graph in the cache.
    cache = kubelet.claim_dir(NS, "model-cache")
    entry = cache / "compiled" / model_key / platform_key
    before = _files(entry)
    run_warm = serving_pod.run_serving_pod(
        kubelet.client,
        deployment,
        claims_root=kubelet.root / "claims",
        home=tmp_path / "serving-pod",
        repo=helpers.TINY_REPO,
        revision=warmed.commit,
        manifest=entry / "manifest.json",
        timeout=150,
    )
    assert '"verify": "Match"' in run_warm.init_output
    assert run_warm.compile_cache_lines, run_warm.stderr[-3000:]
    stats = run_warm.compile_cache_lines[-1]
    assert stats["fxgraph_cache_hit"] > 0 and stats["fxgraph_cache_miss"] == 0, stats
    assert run_warm.result["activated"], run_warm.stderr[-3000:]
    assert _files(entry) == before  # serving never writes into the shared entry

    # Published as its node would report it, the pod's log tells the operator it started warm.
    kube = warmed.cluster.kube
    replicas.publish(
        warmed.cluster.server,
        kube,
        deployment,
        name="chat-7d9f-x2x4q",
        logs={serving.INIT_CONTAINER: run_warm.init_output, "server": run_warm.stderr, "sidecar": ""},
        folder=tmp_path / "node-logs",
    )
    obj = helpers.wait_condition(kube, "tiny", type_="ServingWarm", status="True", timeout=60)
    warm = helpers.conditions(obj)["ServingWarm"]
    assert warm["reason"] == "ServedWarm"
    assert f"{stats['fxgraph_cache_hit']} hits, 0 misses" in warm["message"], warm
    [start] = obj["status"]["servingStarts"]
    assert (start["deployment"], start["pod"], start["modelKey"], start["warm"]) == (
        "chat",
        "chat-7d9f-x2x4q",
        model_key,
        True,
    )
    assert [e["reason"] for e in helpers.events(kube, "tiny")][-1] == "ServedWarm"
