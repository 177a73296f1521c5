"""Serving Deployments follow the warmed key: switched only once a new key is warm, unwired when
the ModelWarmup goes, and the cache stays on the volume."""

from __future__ import annotations

import shutil
from pathlib import Path

from modelwarmup.contracts import wiring
from tests.devkit.hub import LocalHub
from tests.k8s.client import PVCS, KubeClient
from tests.k8s.emulator import ApiServer
from tests.k8s.kopf_runner import OperatorThread
from tests.k8s.kubelet import LocalKubelet
from tests.operator import helpers
from tests.operator.helpers import DEPLOYMENTS, JOBS, MW, NS, wait_for

REVS_REPO = "devkit/tiny-llama-revs"


def _two_revisions(hub: LocalHub, tiny_model: Path, tmp_path: Path) -> None:
    """v1 and v2 of a repo: the same weights, a different README, so different commits."""
    second = tmp_path / "v2"
    shutil.copytree(tiny_model, second)
    (second / "README.md").write_text("# tiny-llama, v2\n")
    hub.add_repo(REVS_REPO, tiny_model, tags=["v1"])
    hub.add_repo(REVS_REPO, second, tags=["v2"])


def test_spec_change_warms_the_new_key_then_switches_the_deployment(
    cluster: ApiServer,
    kube: KubeClient,
    kubelet: LocalKubelet,
    operator: OperatorThread,
    hub: LocalHub,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    _two_revisions(hub, tiny_model, tmp_path)
    kube.create(DEPLOYMENTS, helpers.deployment("chat"), namespace=NS)
    kube.create(MW, helpers.warmup("tiny", repo=REVS_REPO, revision="v1", serving=["chat"]), namespace=NS)
    first = helpers.wait_condition(kube, "tiny", status="True", timeout=60)
    old_key = first["status"]["modelKey"]
    assert helpers.template_annotations(kube, "chat")[wiring.ANNOTATION_MODEL_KEY] == old_key

    kubelet.hold(exempt=helpers.RESOLVING)
    mark = cluster.mark()
    kube.patch(MW, "tiny", {"spec": {"model": {"revision": "v2"}}}, namespace=NS)
    wait_for(lambda: len(helpers.jobs(kube)) == 2, timeout=10)
    helpers.wait_condition(kube, "tiny", status="False", reason="Warming")
    cluster.wait_quiet(0.5)
    # While the new key warms, the pods keep serving the old one: no patch, no rollout.
    assert helpers.template_annotations(kube, "chat")[wiring.ANNOTATION_MODEL_KEY] == old_key
    assert not cluster.requests(mark, method="PATCH", resource=str(DEPLOYMENTS))
    warming = kube.get(MW, "tiny", namespace=NS)
    assert warming["status"]["patchedDeployments"] == ["chat"] and warming["status"]["modelKey"] == old_key
    assert helpers.conditions(warming)["Ready"]["observedGeneration"] == 2

    kubelet.release()
    second = helpers.wait_condition(kube, "tiny", status="True", timeout=60)
    new_key = second["status"]["modelKey"]
    assert new_key != old_key
    assert helpers.template_annotations(kube, "chat")[wiring.ANNOTATION_MODEL_KEY] == new_key
    assert len(cluster.requests(mark, method="PATCH", resource=str(DEPLOYMENTS))) == 1  # one switch
    env = {
        e["name"]: e["value"]
        for e in kube.get(DEPLOYMENTS, "chat", namespace=NS)["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert env["MODELWARMUP_MODEL_KEY"] == new_key


def test_deletion_unwires_the_deployment_and_keeps_the_cache(
    cluster: ApiServer, kube: KubeClient, kubelet: LocalKubelet, operator: OperatorThread
) -> None:
    original = kube.create(DEPLOYMENTS, helpers.deployment("chat"), namespace=NS)
    body = helpers.warmup("tiny", serving=["chat"], cache={"create": {"name": "model-cache", "size": "1Gi"}})
    kube.create(MW, body, namespace=NS)
    helpers.wait_condition(kube, "tiny", status="True", timeout=60)
    claim = kube.get(PVCS, "model-cache", namespace=NS)
    assert "ownerReferences" not in claim["metadata"]  # a shared cache is never garbage
    cache = kubelet.claim_dir(NS, "model-cache")
    files = sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file())
    assert any(p.name == "manifest.json" for p in files)

    kube.delete(MW, "tiny", namespace=NS)
    wait_for(lambda: kube.get_or_none(MW, "tiny", namespace=NS) is None, timeout=15)

    deployment = kube.get(DEPLOYMENTS, "chat", namespace=NS)
    assert deployment["spec"]["template"] == original["spec"]["template"]  # exactly as applied
    assert wiring.ANNOTATION_WIRED_BY not in (deployment["metadata"].get("annotations") or {})
    wait_for(lambda: not kube.list(JOBS, namespace=NS), timeout=10)  # owned: garbage-collected
    assert kube.get(PVCS, "model-cache", namespace=NS)["metadata"]["uid"] == claim["metadata"]["uid"]
    assert sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file()) == files


def test_delete_superseded_prunes_the_old_entry_after_the_switch(
    cluster: ApiServer,
    kube: KubeClient,
    kubelet: LocalKubelet,
    operator: OperatorThread,
    hub: LocalHub,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    _two_revisions(hub, tiny_model, tmp_path)
    kube.create(DEPLOYMENTS, helpers.deployment("chat"), namespace=NS)
    retention = {"persistentVolumeClaim": {"claimName": "model-cache"}, "retention": "DeleteSuperseded"}
    body = helpers.warmup("tiny", repo=REVS_REPO, revision="v1", serving=["chat"], cache=retention)
    kube.create(MW, body, namespace=NS)
    old_key = helpers.wait_condition(kube, "tiny", status="True", timeout=60)["status"]["modelKey"]
    compiled = kubelet.claim_dir(NS, "model-cache") / "compiled"
    assert (compiled / old_key).is_dir()
    assert not [j for j in helpers.jobs(kube) if "-prune-" in j["metadata"]["name"]]  # nothing superseded yet

    kube.patch(MW, "tiny", {"spec": {"model": {"revision": "v2"}}}, namespace=NS)
    wait_for(
        lambda: kube.get(MW, "tiny", namespace=NS)["status"].get("modelKey") not in (None, old_key),
        timeout=60,
    )
    new_key = kube.get(MW, "tiny", namespace=NS)["status"]["modelKey"]
    assert helpers.template_annotations(kube, "chat")[wiring.ANNOTATION_MODEL_KEY] == new_key
    prune = wait_for(
        lambda: [j for j in helpers.jobs(kube) if "-prune-" in j["metadata"]["name"]], timeout=20
    )
    assert len(prune) == 1
    wait_for(lambda: not (compiled / old_key).exists(), timeout=30)
    assert (compiled / new_key).is_dir()  # the entry serving now stays


def test_a_job_whose_spec_was_superseded_is_cancelled_unless_another_resource_waits_on_it(
    cluster: ApiServer, kube: KubeClient, kubelet: LocalKubelet, operator: OperatorThread
) -> None:
    """Quick spec updates: each earlier spec's Job would run a whole warm-up for nothing."""
    kubelet.hold(
        exempt=helpers.RESOLVING
    )  # the pods stay Pending: every Job is still running when the spec moves on
    kube.create(MW, helpers.warmup("moving", revision="main"), namespace=NS)
    kube.create(MW, helpers.warmup("sharer", revision="main"), namespace=NS)  # the same warm-up key
    wait_for(lambda: len(helpers.jobs(kube)) == 1, timeout=20)
    [shared] = [j["metadata"]["name"] for j in helpers.jobs(kube)]

    kube.patch(MW, "moving", {"spec": {"model": {"revision": "v1"}}}, namespace=NS)
    wait_for(lambda: len(helpers.jobs(kube)) == 2, timeout=20)  # main's Job stays: "sharer" waits on it
    [v1_job] = [j["metadata"]["name"] for j in helpers.jobs(kube) if j["metadata"]["name"] != shared]

    kube.patch(MW, "moving", {"spec": {"model": {"revision": "main"}}}, namespace=NS)
    wait_for(lambda: [j["metadata"]["name"] for j in helpers.jobs(kube)] == [shared], timeout=20)
    deletes = cluster.requests(method="DELETE", resource=str(JOBS), user_agent="modelwarmup-operator")
    assert [r.name for r in deletes] == [v1_job]  # superseded, and wanted by nobody

    kubelet.release()
    helpers.wait_condition(kube, "moving", status="True", timeout=60)
    helpers.wait_condition(kube, "sharer", status="True", timeout=60)
