"""A branch is warmed at one commit for every target, and moves only when asked.

The operator resolves the spec's branches and tags once (a resolve Job), pins every target's
warm-up to the commits it reported, and resolves again when the ``refresh.modelwarmup.dev/requested-at``
annotation gets a new value.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from modelwarmup.contracts import wiring
from tests.devkit.hub import LocalHub
from tests.k8s.client import KubeClient
from tests.k8s.emulator import ApiServer
from tests.k8s.kopf_runner import OperatorThread
from tests.k8s.kubelet import LocalKubelet
from tests.operator import helpers
from tests.operator.helpers import DEPLOYMENTS, MW, NS, wait_for

MOVING_REPO = "devkit/tiny-llama-moving"


def _status(kube: KubeClient) -> dict[str, Any]:
    return (kube.get(MW, "moving", namespace=NS).get("status")) or {}


def _commits_warmed(kubelet: LocalKubelet) -> list[str]:
    return [json.loads(run.message)["commit"] for run in helpers.warm_runs(kubelet) if run.exit_code == 0]


def test_every_target_warms_the_commit_resolved_once_and_a_refresh_moves_them(
    cluster: ApiServer,
    kube: KubeClient,
    kubelet: LocalKubelet,
    operator: OperatorThread,
    hub: LocalHub,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    first = hub.add_repo(MOVING_REPO, tiny_model)
    kube.create(DEPLOYMENTS, helpers.deployment("chat"), namespace=NS)
    body = helpers.warmup("moving", repo=MOVING_REPO, serving=["chat"])
    body["spec"]["targets"] = [
        {"name": "a", "devices": "cpu", "nodeSelector": {"pool": "a"}},
        {"name": "b", "devices": "cpu", "nodeSelector": {"pool": "b"}},
    ]
    kube.create(MW, body, namespace=NS)
    wait_for(lambda: _status(kube).get("pinnedRevisions"), timeout=60, message=lambda: str(_status(kube)))
    assert _status(kube)["pinnedRevisions"] == [f"{MOVING_REPO}@main={first}"]

    # main moves while (or before) the targets warm: they still warm the commit resolved once.
    moved = tmp_path / "moved"
    shutil.copytree(tiny_model, moved)
    (moved / "README.md").write_text("# moved on\n")
    second = hub.add_repo(MOVING_REPO, moved)
    ready = helpers.wait_condition(kube, "moving", status="True", timeout=90)
    assert ready["status"]["resolvedRevision"] == first
    assert _commits_warmed(kubelet) == [first, first]
    # Download-only: one portable entry, which the second target finds complete.
    assert sorted(t["phase"] for t in ready["status"]["targets"]) == ["CacheHit", "Succeeded"]
    old_key = ready["status"]["modelKey"]
    assert helpers.template_annotations(kube, "chat")[wiring.ANNOTATION_MODEL_KEY] == old_key
    [resolve] = helpers.resolve_jobs(kube)
    assert "--resolve-only" in resolve["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "cache" not in {v["name"] for v in resolve["spec"]["template"]["spec"]["volumes"]}

    # Asked to look again: resolved anew, both targets warm the new commit, the Deployment follows.
    kube.patch(
        MW, "moving", {"metadata": {"annotations": {wiring.ANNOTATION_REFRESH: "2026-12-02"}}}, namespace=NS
    )
    wait_for(
        lambda: (
            _status(kube).get("lastHandledRefresh") == "2026-12-02"
            and helpers.conditions(kube.get(MW, "moving", namespace=NS))["Ready"]["status"] == "True"
        ),
        timeout=90,
        message=lambda: str(_status(kube)),
    )
    status = _status(kube)
    assert status["pinnedRevisions"] == [f"{MOVING_REPO}@main={second}"]
    assert status["resolvedRevision"] == second and status["modelKey"] != old_key
    assert _commits_warmed(kubelet) == [first, first, second, second]
    assert helpers.template_annotations(kube, "chat")[wiring.ANNOTATION_MODEL_KEY] == status["modelKey"]
    assert len(helpers.resolve_jobs(kube)) == 2

    # The same refresh value again, or none: nothing is resolved again.
    mark = cluster.wait_quiet(0.5)
    kube.patch(MW, "moving", {"metadata": {"labels": {"team": "a"}}}, namespace=NS)
    cluster.wait_quiet(0.5)
    assert len(helpers.resolve_jobs(kube)) == 2
    assert not cluster.requests(mark, method="POST", user_agent="modelwarmup-operator")


def test_a_revision_that_does_not_exist_fails_at_resolution_with_the_workers_word(
    cluster: ApiServer, kube: KubeClient, kubelet: LocalKubelet, operator: OperatorThread
) -> None:
    kube.create(MW, helpers.warmup("nobranch", revision="no-such-branch"), namespace=NS)
    obj = helpers.wait_condition(kube, "nobranch", status="False", reason="JobFailed", timeout=60)
    [target] = obj["status"]["targets"]
    assert (target["phase"], target["reason"]) == ("Failed", "RevisionNotFound"), target
    assert (
        "no-such-branch" in target["message"]
        and target["message"] in helpers.conditions(obj)["Ready"]["message"]
    )
    assert helpers.jobs(kube) == [] and len(helpers.resolve_jobs(kube)) == 1
