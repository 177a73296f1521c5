"""Two ModelWarmups asking for the same model, settings and target share one cache entry."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from modelwarmup.controller import kubeapi
from tests.k8s.client import KubeClient
from tests.k8s.emulator import ApiServer
from tests.k8s.kopf_runner import OperatorThread
from tests.k8s.kubelet import LocalKubelet
from tests.operator import helpers
from tests.operator.helpers import JOBS, MW, NS, wait_for


def test_the_second_resource_finds_the_entry_ready_and_runs_no_job(
    kube: KubeClient, kubelet: LocalKubelet, operator: OperatorThread
) -> None:
    kube.create(MW, helpers.warmup("first"), namespace=NS)
    helpers.wait_condition(kube, "first", status="True", timeout=60)
    kube.create(MW, helpers.warmup("second"), namespace=NS)
    obj = helpers.wait_condition(kube, "second", status="True", reason="CacheHit")

    [job] = helpers.jobs(kube)
    [target] = obj["status"]["targets"]
    assert (target["phase"], target["reason"], target["job"]) == (
        "CacheHit",
        "CacheHit",
        job["metadata"]["name"],
    )
    assert target["entryKey"] == kube.get(MW, "first", namespace=NS)["status"]["targets"][0]["entryKey"]
    assert obj["status"]["resolvedRevision"]
    assert len(helpers.warm_runs(kubelet)) == 1


def test_resources_applied_together_share_one_job(
    cluster: ApiServer,
    kube: KubeClient,
    kubelet: LocalKubelet,
    start_operator: Callable[[], OperatorThread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A slow API server: the reconciles of the three resources overlap between observing the
    # Jobs and creating one, which is where two resources could both decide to create theirs.
    slow_list = kubeapi.KubeApi.list

    def list_slowly(
        self: kubeapi.KubeApi, kind: kubeapi.Kind, *args: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        found = slow_list(self, kind, *args, **kwargs)
        if kind == kubeapi.JOBS:
            time.sleep(0.3)  # the answer arrives late: the cluster may have changed meanwhile
        return found

    monkeypatch.setattr(kubeapi.KubeApi, "list", list_slowly)
    start_operator()
    kubelet.hold(exempt=helpers.RESOLVING)
    for name in ("a", "b", "c"):  # as `kubectl apply -f dir/` does: back to back
        kube.create(MW, helpers.warmup(name), namespace=NS)
    wait_for(lambda: all(helpers.condition(kube, n).get("reason") == "Warming" for n in "abc"), timeout=15)
    kubelet.release()
    for name in ("a", "b", "c"):
        helpers.wait_condition(kube, name, status="True", timeout=60)

    assert len(helpers.jobs(kube)) == 1 and len(helpers.warm_runs(kubelet)) == 1
    assert len(helpers.resolve_jobs(kube)) == 1  # they resolved main together, too
    assert len(cluster.requests(method="POST", resource=str(JOBS), user_agent="modelwarmup-operator")) == 2
    reasons = sorted(helpers.condition(kube, n)["reason"] for n in "abc")
    assert reasons == ["CacheHit", "CacheHit", "Ready"]
