"""The local Job runner against the emulated API server, with tiny Python containers."""

from __future__ import annotations

import base64
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .client import JOBS, PODS, SECRETS, KubeClient, wait_for
from .emulator import ApiServer
from .kubelet import LocalKubelet

NS = "team-a"


@pytest.fixture
def kubelet(api_server: ApiServer, tmp_path: Path) -> Iterator[LocalKubelet]:
    with LocalKubelet(
        api_server.access,
        root=tmp_path,
        default_env={"FROM_TEST": "t"},
        commands={"python": (sys.executable,)},
        backoff_seconds=0.05,
    ) as kubelet:
        yield kubelet
    assert not kubelet.errors


def job(name: str, script: str, **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": "python:3",
        "command": ["python", "-c", textwrap.dedent(script)],
        "args": ["/data/out", "/dev/termination-log"],
        "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {"name": "WHERE", "value": "/data/x"},
        ],
        "volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "sub"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "metadata": {"name": name, "labels": {"app": "t"}},
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": {"labels": {"app": "t"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}],
                },
            },
            **spec,
        },
    }


def finished(kube: KubeClient, name: str) -> dict[str, Any] | None:
    found = kube.get(JOBS, name, namespace=NS)
    types = {c["type"] for c in (found.get("status") or {}).get("conditions") or []}
    return found if types & {"Complete", "Failed"} else None


def conditions(job: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["reason"] for c in job["status"]["conditions"]}


def test_a_job_runs_with_volumes_env_and_secrets_mapped(kube: KubeClient, kubelet: LocalKubelet) -> None:
    kube.create(
        SECRETS,
        {"metadata": {"name": "s"}, "data": {"token": base64.b64encode(b"hf_x").decode()}},
        namespace=NS,
    )
    script = """
        import os, sys
        open(sys.argv[1], "w").write(os.environ["TOKEN"] + " " + os.environ["WHERE"] + " " + os.environ["FROM_TEST"])
        open(sys.argv[2], "w").write('{"ok": true}')
    """
    kube.create(JOBS, job("ok", script), namespace=NS)
    done = wait_for(lambda: finished(kube, "ok"), timeout=20)

    assert conditions(done) == {"SuccessCriteriaMet": "CompletionsReached", "Complete": "CompletionsReached"}
    assert (done["status"]["succeeded"], done["status"]["failed"], done["status"]["active"]) == (1, 0, 0)
    host = kubelet.claim_dir(NS, "c") / "sub"
    assert (host / "out").read_text() == f"hf_x {host}/x t"  # mount paths rewritten, subPath kept
    [pod] = kube.list(PODS, namespace=NS)
    assert pod["metadata"]["labels"] == {
        "app": "t",
        "job-name": "ok",
        "batch.kubernetes.io/job-name": "ok",
        "controller-uid": done["metadata"]["uid"],
        "batch.kubernetes.io/controller-uid": done["metadata"]["uid"],
    }
    assert pod["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["message"], pod["status"]["phase"]) == (
        0,
        '{"ok": true}',
        "Succeeded",
    )
    assert "TOKEN" in kubelet.runs[0].env_names and "hf_x" not in str(kubelet.runs[0].env_names)


def test_fail_job_rule_fails_at_once_and_other_codes_retry_to_the_limit(
    kube: KubeClient, kubelet: LocalKubelet
) -> None:
    kube.create(SECRETS, {"metadata": {"name": "s"}, "stringData": {"token": "x"}}, namespace=NS)
    policy = {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [10]}}
        ]
    }
    kube.create(
        JOBS,
        job("permanent", "import sys; print('boom'); sys.exit(10)", podFailurePolicy=policy),
        namespace=NS,
    )
    kube.create(
        JOBS,
        job("transient", "import sys; print('later'); sys.exit(11)", podFailurePolicy=policy),
        namespace=NS,
    )

    permanent = wait_for(lambda: finished(kube, "permanent"), timeout=20)
    assert conditions(permanent) == {"FailureTarget": "PodFailurePolicy", "Failed": "PodFailurePolicy"}
    assert "exit code 10 matching FailJob rule at index 0" in permanent["status"]["conditions"][1]["message"]
    assert permanent["status"]["failed"] == 1 and len(kubelet.runs_of("permanent")) == 1
    # FallbackToLogsOnError: no termination message, so the log tail is the message.
    assert kubelet.runs_of("permanent")[0].message == "boom"

    transient = wait_for(lambda: finished(kube, "transient"), timeout=20)
    assert conditions(transient)["Failed"] == "BackoffLimitExceeded"
    assert transient["status"]["failed"] == 3 and [r.exit_code for r in kubelet.runs_of("transient")] == [
        11,
        11,
        11,
    ]


def test_a_missing_secret_keeps_the_pod_pending_and_the_deadline_fails_it(
    kube: KubeClient, kubelet: LocalKubelet
) -> None:
    kube.create(JOBS, job("waiting", "pass", activeDeadlineSeconds=2), namespace=NS)
    pod = wait_for(lambda: kube.list(PODS, namespace=NS), timeout=10)[0]
    waiting = wait_for(
        lambda: kube.get(PODS, pod["metadata"]["name"], namespace=NS)["status"].get("containerStatuses"),
        timeout=5,
    )
    assert waiting[0]["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    done = wait_for(lambda: finished(kube, "waiting"), timeout=10)
    assert conditions(done)["Failed"] == "DeadlineExceeded" and not kubelet.runs


def test_hold_keeps_pods_pending_and_deleting_the_job_kills_its_container(
    kube: KubeClient, kubelet: LocalKubelet
) -> None:
    kube.create(SECRETS, {"metadata": {"name": "s"}, "stringData": {"token": "x"}}, namespace=NS)
    kubelet.hold()
    kube.create(JOBS, job("sleepy", "import time; time.sleep(60)"), namespace=NS)
    wait_for(lambda: kube.get(JOBS, "sleepy", namespace=NS).get("status", {}).get("active") == 1, timeout=10)
    assert not kubelet.runs and kube.list(PODS, namespace=NS)[0]["status"]["phase"] == "Pending"
    kubelet.release()
    wait_for(lambda: kubelet.runs, timeout=10)
    kube.delete(JOBS, "sleepy", namespace=NS, propagation_policy="Background")
    wait_for(kubelet.idle, timeout=10)
    assert kubelet.runs[0].exit_code is None  # killed, never reported
