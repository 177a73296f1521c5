"""Failed warm-ups: a permanent failure fails at once with the worker's word; a transient one is
retried by the Job (podFailurePolicy and backoffLimit) and ends Ready."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

from modelwarmup.controller import handlers
from modelwarmup.controller.settings import OperatorSettings
from tests.devkit.hub import LocalHub
from tests.k8s.client import SECRETS, SERVICE_ACCOUNTS, KubeClient
from tests.k8s.emulator import ApiServer
from tests.k8s.kopf_runner import OperatorThread
from tests.k8s.kubelet import LocalKubelet
from tests.operator import helpers
from tests.operator.helpers import DEPLOYMENTS, JOBS, MW, NS, PODS, wait_for


def test_missing_repository_fails_once_with_the_workers_message(
    cluster: ApiServer, kube: KubeClient, kubelet: LocalKubelet, operator: OperatorThread
) -> None:
    kube.create(MW, helpers.warmup("missing", repo="devkit/no-such-model"), namespace=NS)
    obj = helpers.wait_condition(kube, "missing", status="False", reason="JobFailed", timeout=60)

    ready = helpers.conditions(obj)["Ready"]
    [target] = obj["status"]["targets"]
    assert target["phase"] == "Failed" and target["reason"] == "RepositoryNotFound", target
    assert "devkit/no-such-model" in target["message"] and target["message"] in ready["message"]
    assert helpers.jobs(kube) == []  # found out while resolving main: no warm-up Job at all
    [job] = helpers.resolve_jobs(kube)
    failed = {c["type"]: c for c in job["status"]["conditions"]}["Failed"]
    assert failed["reason"] == "PodFailurePolicy"  # exit 10: FailJob, no retry
    [run] = kubelet.runs
    assert run.exit_code == 10 and json.loads(run.message)["permanent"] is True

    # No retry: neither a second pod nor a second Job, and the operator stays quiet.
    mark = cluster.wait_quiet(0.5)
    time.sleep(1.5)
    assert not cluster.requests(mark, writes_only=True, exclude_user_agent="modelwarmup-tests")
    assert len(kube.list(PODS, namespace=NS)) == 1 and len(helpers.resolve_jobs(kube)) == 1
    assert [(e["type"], e["reason"]) for e in helpers.events(kube, "missing")][-1] == ("Warning", "JobFailed")


def test_hub_errors_are_retried_by_the_job_until_ready(
    cluster: ApiServer, kube: KubeClient, kubelet: LocalKubelet, operator: OperatorThread, hub: LocalHub
) -> None:
    kubelet.hold(exempt=helpers.RESOLVING)  # main is resolved first; the faults are for the warm-up
    kube.create(MW, helpers.warmup("flaky"), namespace=NS)  # backoffLimit 2: three attempts at most
    wait_for(lambda: helpers.jobs(kube), timeout=30)
    # Three 503s per pod: the worker retries twice itself, then exits 11 and the Job retries.
    hub.fail_next(6, status=503, path_contains="/api/models/devkit/tiny-llama")
    kubelet.release()
    obj = helpers.wait_condition(kube, "flaky", status="True", timeout=60)

    assert [run.exit_code for run in helpers.warm_runs(kubelet)] == [11, 11, 0]
    assert "HubUnavailable" in helpers.warm_runs(kubelet)[0].message
    [job] = helpers.jobs(kube)
    assert (job["status"]["failed"], job["status"]["succeeded"]) == (2, 1)
    [target] = obj["status"]["targets"]
    assert (target["phase"], target["attempts"]) == ("Succeeded", 3)
    assert len(kube.list(PODS, namespace=NS)) == 1 + 3  # the resolve Job's, the warm-up's
    # The Job did the retrying; the operator created it (and the resolve Job) once.
    assert len(cluster.requests(method="POST", resource=str(JOBS), user_agent="modelwarmup-operator")) == 2


def test_a_pod_that_cannot_start_is_named_in_status_and_starts_once_fixed(
    cluster: ApiServer, kube: KubeClient, kubelet: LocalKubelet, operator: OperatorThread
) -> None:
    """The Job controller counts a pod stuck in CreateContainerConfigError as active: without a
    look at the pod, the resource would say Warming until the Job's deadline."""
    body = helpers.warmup("no-secret")
    body["spec"]["model"]["tokenSecretRef"] = {"name": "hf-token"}
    kube.create(MW, body, namespace=NS)

    def stuck() -> dict[str, Any] | None:
        obj = kube.get_or_none(MW, "no-secret", namespace=NS)
        targets = ((obj or {}).get("status") or {}).get("targets") or [{}]
        return obj if targets[0].get("reason") == "CreateContainerConfigError" else None

    obj = helpers.wait_for(stuck, timeout=30, message=lambda: str(kube.get(MW, "no-secret", namespace=NS)))
    [target] = obj["status"]["targets"]
    assert target["phase"] == "Pending" and 'secret "hf-token" not found' in target["message"], target
    ready = helpers.conditions(obj)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "JobPending")
    assert 'secret "hf-token" not found' in ready["message"], ready

    token = base64.b64encode(b"hf_anything").decode()  # the local hub serves the tiny model to anyone
    kube.create(SECRETS, {"metadata": {"name": "hf-token"}, "data": {"token": token}}, namespace=NS)
    helpers.wait_condition(kube, "no-secret", status="True", timeout=60)


def test_a_job_whose_pod_cannot_be_created_is_named_in_status_and_runs_once_fixed(
    cluster: ApiServer,
    kube: KubeClient,
    kubelet: LocalKubelet,
    run_operator: Callable[..., OperatorThread],
    settings: OperatorSettings,
) -> None:
    """A ServiceAccount that does not exist: the API server refuses the Job's pod, the Job has no
    pod and an unchanged status, and the only trace is the Job controller's FailedCreate Event."""
    quick = settings.model_copy(update={"pending_recheck_seconds": 0.5})
    run_operator(lambda registry: handlers.register(registry, quick), watching=(MW, JOBS), login=False)
    body = helpers.warmup("no-account")
    body["spec"]["worker"] = {"serviceAccountName": "warmup"}
    kube.create(MW, body, namespace=NS)

    def failed_create() -> dict[str, Any] | None:
        obj = kube.get_or_none(MW, "no-account", namespace=NS)
        targets = ((obj or {}).get("status") or {}).get("targets") or [{}]
        return obj if targets[0].get("reason") == "FailedCreate" else None

    obj = helpers.wait_for(
        failed_create, timeout=30, message=lambda: str(kube.get(MW, "no-account", namespace=NS))
    )
    [target] = obj["status"]["targets"]
    assert target["phase"] == "Pending" and 'serviceaccount "warmup" not found' in target["message"], target
    ready = helpers.conditions(obj)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "JobPending")
    assert 'serviceaccount "warmup" not found' in ready["message"], ready
    assert kube.list(PODS, namespace=NS) == []

    kube.create(SERVICE_ACCOUNTS, {"metadata": {"name": "warmup"}}, namespace=NS)
    helpers.wait_condition(kube, "no-account", status="True", timeout=60)
    # Once no target waits for a pod, the recheck timer stops: the operator goes quiet.
    mark = cluster.wait_quiet(0.5)
    time.sleep(1.5)
    assert not cluster.requests(mark, exclude_user_agent="modelwarmup-tests")


def test_a_deployment_the_api_server_refuses_to_wire_is_reported_once_and_not_counted_as_patched(
    cluster: ApiServer, kube: KubeClient, kubelet: LocalKubelet, operator: OperatorThread
) -> None:
    """Its server container already mounts something at the cache's mount path: the wiring patch
    would give it two mounts there, which a real API server refuses (422, the field named)."""
    deployment = helpers.deployment("chat")
    pod = deployment["spec"]["template"]["spec"]
    pod["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    pod["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/var/cache/modelwarmup"}]
    kube.create(DEPLOYMENTS, deployment, namespace=NS)
    kube.create(MW, helpers.warmup("refused", serving=["chat"]), namespace=NS)

    obj = helpers.wait_condition(kube, "refused", status="False", reason="RejectedByApiServer", timeout=60)
    ready, serving = (helpers.conditions(obj)[t] for t in ("Ready", "ServingPatched"))
    assert "Deployment chat" in ready["message"] and "must be unique" in ready["message"], ready
    assert (serving["status"], serving["reason"]) == ("False", "RejectedByApiServer")
    assert obj["status"]["patchedDeployments"] == []
    assert "annotations" not in (kube.get(DEPLOYMENTS, "chat", namespace=NS)["spec"]["template"]["metadata"])

    mark = cluster.wait_quiet(0.5)
    time.sleep(2.5)  # no retry loop: the same patch would be refused again
    assert not cluster.requests(mark, writes_only=True, exclude_user_agent="modelwarmup-tests")
    assert [e["reason"] for e in helpers.events(kube, "refused")].count("RejectedByApiServer") == 1
