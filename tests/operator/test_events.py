"""Events are posted on transitions of Ready only: reconciles that change nothing post nothing."""

from __future__ import annotations

from tests.k8s.client import EVENTS, KubeClient
from tests.k8s.emulator import ApiServer
from tests.k8s.kopf_runner import OperatorThread
from tests.k8s.kubelet import LocalKubelet
from tests.operator import helpers
from tests.operator.helpers import JOBS, MW, NS, wait_for


def test_one_event_per_ready_transition_and_none_on_idle_reconciles(
    cluster: ApiServer, kube: KubeClient, kubelet: LocalKubelet, operator: OperatorThread
) -> None:
    kubelet.hold(exempt=helpers.RESOLVING)
    kube.create(MW, helpers.warmup("tiny"), namespace=NS)
    helpers.wait_condition(kube, "tiny", status="False", reason="Warming")
    kubelet.release()
    helpers.wait_condition(kube, "tiny", status="True", timeout=60)

    events = helpers.events(kube, "tiny")
    assert [(e["type"], e["reason"]) for e in events] == [
        ("Normal", "JobPending"),
        ("Normal", "Warming"),
        ("Normal", "Ready"),
    ]
    assert events[-1]["message"] == "Ready=True: warmed devkit/tiny-llama for 1 target(s)"
    involved = events[-1]["involvedObject"]
    resource = kube.get(MW, "tiny", namespace=NS)
    assert (involved["kind"], involved["name"], involved["uid"]) == (
        "ModelWarmup",
        "tiny",
        resource["metadata"]["uid"],
    )

    # No news: an event of the owned Job that changes nothing the status shows (not even a read),
    # then a restart of the operator (a full reconcile that finds everything as it was).
    mark = cluster.wait_quiet(0.5)
    [job] = helpers.jobs(kube)
    kube.patch(JOBS, job["metadata"]["name"], {"metadata": {"annotations": {"poke": "1"}}}, namespace=NS)
    restart = cluster.wait_quiet(0.5)
    assert not cluster.requests(mark, user_agent="modelwarmup-operator")
    operator.restart()
    wait_for(
        lambda: cluster.requests(
            restart, user_agent="modelwarmup-operator", method="GET", resource=str(JOBS)
        ),
        timeout=10,
    )
    cluster.wait_quiet(0.5)
    assert not cluster.requests(mark, method="POST", resource=str(EVENTS))
    assert not cluster.requests(mark, method="PATCH", resource=str(MW), user_agent="modelwarmup-operator")
    assert len(helpers.events(kube, "tiny")) == 3
    assert (
        kube.get(MW, "tiny", namespace=NS)["metadata"]["resourceVersion"]
        == resource["metadata"]["resourceVersion"]
    )
