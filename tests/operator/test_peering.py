"""Several operator replicas with kopf peering (the chart's peering.enabled) act as one.

The product's handlers create the peering object at startup; kopf's own peering then lets only
the highest-priority replica act, and a replica that stops hands over at once.
"""

from __future__ import annotations

from collections.abc import Callable

import kopf
import pytest
import yaml

from modelwarmup.controller import handlers
from tests.k8s.client import KubeClient, Res
from tests.k8s.emulator import ApiServer
from tests.k8s.kopf_runner import OperatorThread
from tests.k8s.kubelet import LocalKubelet

from . import helpers
from .helpers import JOBS, MW, NS

PEERING_CRDS = helpers.ROOT / "charts" / "modelwarmup" / "files" / "kopf-peering-crds.yaml"
CLUSTER_PEERINGS = Res("kopf.dev/v1", "clusterkopfpeerings", namespaced=False)


def peered(priority: int) -> Callable[[kopf.OperatorSettings], None]:
    def configure(settings: kopf.OperatorSettings) -> None:
        settings.peering.standalone = False
        settings.peering.mandatory = True
        settings.peering.clusterwide = True
        settings.peering.name = "mw-test"
        settings.peering.priority = priority

    return configure


@pytest.mark.peering
def test_peered_replicas_act_as_one_and_hand_over_when_one_stops(
    cluster: ApiServer, kube: KubeClient, kubelet: LocalKubelet, run_operator: Callable[..., OperatorThread]
) -> None:
    for crd in yaml.safe_load_all(PEERING_CRDS.read_text()):
        cluster.install_crd(crd)
    settings = helpers.operator_settings(cluster.kubeconfig(), peering=True, peering_name="mw-test")
    register = lambda registry: handlers.register(registry, settings)  # noqa: E731
    high = run_operator(register, configure=peered(20), watching=(MW, JOBS), login=False)
    run_operator(register, configure=peered(10), login=False)

    kube.create(MW, helpers.warmup("first"), namespace=NS)
    helpers.wait_condition(kube, "first", status="True", timeout=60)
    peers = kube.get(CLUSTER_PEERINGS, "mw-test")["status"]
    assert sorted(p["priority"] for p in peers.values()) == [10, 20]  # created by the operator, used by kopf
    creates = cluster.requests(method="POST", resource=str(JOBS), user_agent="modelwarmup-operator")
    # One actor, no second try: the resolve Job and the warm-up Job, once each.
    assert len(creates) == 2 and {r.status for r in creates} == {201}

    high.stop()
    kube.create(MW, helpers.warmup("second", claim="other-cache"), namespace=NS)
    helpers.wait_condition(kube, "second", status="True", timeout=60)
    assert len(helpers.jobs(kube)) == 2
