"""The operator restarted while a warm-up runs: no duplicate Job, the status picks up where it was."""

from __future__ import annotations

from tests.k8s.client import KubeClient
from tests.k8s.emulator import ApiServer
from tests.k8s.kopf_runner import OperatorThread
from tests.k8s.kubelet import LocalKubelet
from tests.operator import helpers
from tests.operator.helpers import JOBS, MW, NS, wait_for


def test_restart_mid_warm_up_creates_no_second_job_and_resumes(
    cluster: ApiServer, kube: KubeClient, kubelet: LocalKubelet, operator: OperatorThread
) -> None:
    kubelet.hold(
        exempt=helpers.RESOLVING
    )  # the pod stays Pending: the warm-up is in flight for as long as we need
    kube.create(MW, helpers.warmup("tiny"), namespace=NS)
    [job] = wait_for(lambda: helpers.jobs(kube), timeout=10)
    helpers.wait_condition(kube, "tiny", status="False", reason="Warming")  # the Job is active
    before = kube.get(MW, "tiny", namespace=NS)["status"]

    mark = cluster.mark()
    operator.restart()
    cluster.wait_watching(MW, JOBS, since=mark)
    # The restarted operator resumes the resource (one reconcile) and leaves things as they are.
    wait_for(
        lambda: cluster.requests(mark, user_agent="modelwarmup-operator", method="GET", resource=str(JOBS)),
        timeout=10,
    )
    cluster.wait_quiet(0.5)
    assert [j["metadata"]["uid"] for j in helpers.jobs(kube)] == [job["metadata"]["uid"]]
    assert not cluster.requests(mark, method="POST", resource=str(JOBS))
    after = kube.get(MW, "tiny", namespace=NS)["status"]
    assert after == before  # nothing changed, so nothing was written

    kubelet.release()
    obj = helpers.wait_condition(kube, "tiny", status="True", timeout=60)
    assert [j["metadata"]["uid"] for j in helpers.jobs(kube)] == [job["metadata"]["uid"]]
    [target] = obj["status"]["targets"]
    assert (target["job"], target["phase"], target["attempts"]) == (job["metadata"]["name"], "Succeeded", 1)
    assert len(helpers.warm_runs(kubelet)) == 1
