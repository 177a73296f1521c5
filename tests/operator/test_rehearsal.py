"""The operator's rehearsal mode end to end, with vLLM itself as the Deployment's server.

The real operator (kopf over HTTP) against the emulated API server; the local kubelet runs the
rehearsal Job's pod: our init container (``modelwarmup rehearse --prepare``, downloading from the
local hub), then the Deployment's own container with its command wrapped by the launcher, on
vLLM's venv Python standing for the image's ``python3``. Then a pod from the patched Deployment
runs here (restore init container, then vLLM) and must start warm; a change of the template is
drift, reported while it is rehearsed again. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelwarmup.controller import rehearsal
from modelwarmup.rehearsal import engines
from tests.devkit.hub import LocalHub
from tests.devkit.tiny_model import make_tiny_llama
from tests.k8s import replicas
from tests.k8s.emulator import ApiServer
from tests.k8s.kopf_runner import OperatorThread
from tests.k8s.kubelet import LocalKubelet
from tests.rehearsal import pods
from tests.rehearsal.conftest import TINY
from tests.rehearsal.vllm import VLLM_ENV, free_port, server_command, vllm_python

from . import helpers

pytestmark = pytest.mark.slow
NAME = "vllm"


def _ready_or_failed(kube: Any, kubelet: LocalKubelet) -> dict[str, Any] | None:
    """The resource once Ready; a failed rehearsal fails the test at once, with the pod's log."""
    ready = helpers.condition(kube, "rehearsed")
    assert ready.get("reason") != "JobFailed", (ready, [r.log[-6000:] for r in kubelet.runs])
    return kube.get(helpers.MW, "rehearsed", namespace=helpers.NS) if ready.get("status") == "True" else None


def rehearsals(kubelet: LocalKubelet) -> list[Any]:
    """The finished runs of rehearsal Jobs (not of the Job resolving the branch to a commit)."""
    return [r for r in kubelet.runs if r.exit_code is not None and "-resolve-" not in r.job]


def vllm_deployment(port: int) -> dict[str, Any]:
    command = server_command(vllm_python(), TINY, port)
    body = helpers.deployment(NAME)
    body["spec"]["template"]["spec"]["containers"] = [
        {
            "name": "server",
            "image": "vllm/vllm-openai:v0.32.0-cpu",
            "command": command[:3],
            "args": command[3:],
            # TMPDIR as a real container has it: the local kubelet's per-pod temp folder is too deep
            # for the unix sockets vLLM opens there (108 bytes at most).
            "env": [
                *({"name": k, "value": v} for k, v in VLLM_ENV.items()),
                {"name": "TMPDIR", "value": "/tmp"},
            ],
            "ports": [{"containerPort": port}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": port}},
        }
    ]
    return body


def test_a_vllm_deployment_is_rehearsed_restored_warm_and_rehearsed_again_on_drift(
    cluster: ApiServer,
    hub: LocalHub,
    tmp_path: Path,
    start_operator: Callable[[], OperatorThread],
) -> None:
    kube = cluster.client()
    hub.add_repo(TINY, make_tiny_llama(tmp_path / "model", hidden_size=128, num_heads=2, num_kv_heads=2))
    commands = {"modelwarmup": (sys.executable, "-m", "modelwarmup.cli"), "python3": (str(vllm_python()),)}
    with LocalKubelet(
        cluster.access,
        root=tmp_path,
        default_env={"HF_ENDPOINT": hub.endpoint},
        commands=commands,
        pod_timeout=600,
    ) as kubelet:
        start_operator()
        kube.create(helpers.DEPLOYMENTS, vllm_deployment(free_port()), namespace=helpers.NS)
        mw = helpers.warmup("rehearsed", repo=TINY, serving=[NAME])
        mw["spec"]["serving"] = {"names": [NAME], "rehearsal": {}}
        kube.create(helpers.MW, mw, namespace=helpers.NS)
        ready = helpers.wait_for(
            lambda: _ready_or_failed(kube, kubelet),
            timeout=500,
            interval=1.0,
            message="the rehearsal to finish",
        )

        # The Job ran the Deployment's container through the launcher, after our init container.
        runs = rehearsals(kubelet)
        assert len(runs) == 1 and runs[0].exit_code == 0, [r.log[-3000:] for r in kubelet.runs]
        assert runs[0].argv[:3] == [str(vllm_python()), "-m", "modelwarmup.rehearsal"]
        summary = json.loads(runs[0].message)
        assert summary["reason"] == "Rehearsed", summary
        conditions = helpers.conditions(ready)
        assert conditions["Compiled"]["reason"] == "Rehearsed"
        key = summary["entry_key"]
        assert ready["status"]["modelKey"] == key and key.startswith("rehearsed/")

        deployment = kube.get(helpers.DEPLOYMENTS, NAME, namespace=helpers.NS)
        template = deployment["spec"]["template"]
        assert template["metadata"]["annotations"]["modelwarmup.dev/model-key"] == key
        assert [c["name"] for c in template["spec"]["initContainers"]] == [rehearsal.RESTORE_CONTAINER]
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert (
            env["VLLM_CACHE_ROOT"]
            == f"{engines.redirected_env('/var/cache/modelwarmup-engine')['VLLM_CACHE_ROOT']}"
        )
        assert env["HF_HUB_OFFLINE"] == "1"

        # A pod of the patched Deployment restores the entry and vLLM starts without compiling.
        claims = tmp_path / "claims"
        manifest = json.loads((claims / helpers.NS / "model-cache" / key / "manifest.json").read_text())
        served = pods.serve_once(
            kube,
            deployment,
            claims_root=claims,
            home=tmp_path / "pod",
            engine_volume=rehearsal.ENGINE_VOLUME,
            model=TINY,
        )
        assert served.completion["usage"]["completion_tokens"] == 16
        assert served.files_before and served.files_after == served.files_before, sorted(
            served.files_after - served.files_before
        )
        assert engines.miss_evidence(served.log) == []
        cold = manifest["engine_init_seconds"]
        assert served.engine_init_seconds is not None and served.engine_init_seconds < 0.6 * cold, (
            served.engine_init_seconds,
            cold,
        )

        # Published as its node would report it, the pod's log tells the operator it started warm:
        # Inductor's line that it found the graph in its cache (vLLM's CPU build logs none of its
        # own), as a ServingWarm condition and an Event.
        replicas.publish(
            cluster,
            kube,
            deployment,
            name=f"{NAME}-5c8d-q7w2z",
            logs={rehearsal.RESTORE_CONTAINER: served.init_output, "server": served.log},
            folder=tmp_path / "node-logs",
        )
        warm = helpers.wait_condition(kube, "rehearsed", type_="ServingWarm", status="True", timeout=60)
        said = helpers.conditions(warm)["ServingWarm"]
        assert said["reason"] == "ServedWarm" and "fx graph cache hit for key" in said["message"], said
        [start] = warm["status"]["servingStarts"]
        assert start["modelKey"] == key
        # The image by digest, as the nodes reported it: the rehearsal's pod and the serving pod ran one.
        [target] = warm["status"]["targets"]
        assert (
            target["imageId"].startswith("vllm/vllm-openai@sha256:") and start["imageId"] == target["imageId"]
        )
        assert "runs image" not in said["message"]
        assert "ServedWarm" in [e["reason"] for e in helpers.events(kube, "rehearsed")]

        # Drift: the user edits the template; the operator says so and rehearses the new one.
        # (On a node the engine cache path is the same in every pod, and this change, the log level,
        # does not change what vLLM compiles: the new rehearsal would find the entry and start no
        # server. Here each pod's emptyDir is another host folder, part of the key: it rehearses.)
        kubelet.hold()
        patch = [
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/env/-",
                "value": {"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"},
            }
        ]
        kube.patch(helpers.DEPLOYMENTS, NAME, patch, namespace=helpers.NS, patch_type="json")
        drifted = helpers.wait_condition(kube, "rehearsed", status="False", reason="Drifted", timeout=60)
        assert key in helpers.conditions(drifted)["Ready"]["message"]
        kubelet.release()
        again = helpers.wait_for(
            lambda: _ready_or_failed(kube, kubelet), timeout=500, interval=1.0, message="the second rehearsal"
        )
        second = json.loads(rehearsals(kubelet)[-1].message)
        assert second["ok"] and again["status"]["modelKey"] == second["entry_key"]
        rewired = kube.get(helpers.DEPLOYMENTS, NAME, namespace=helpers.NS)["spec"]["template"]
        assert rewired["metadata"]["annotations"]["modelwarmup.dev/model-key"] == second["entry_key"]
        env = {e["name"]: e.get("value") for e in rewired["spec"]["containers"][0]["env"]}
        assert env["VLLM_LOGGING_LEVEL"] == "DEBUG"  # the user's change, kept under our wiring
