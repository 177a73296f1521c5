"""Deployment wiring round-trips, and the warm-up Job carries what the issue requires."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelwarmup import errors, manifests
from modelwarmup.contracts import wiring
from modelwarmup.controller import jobs, naming, rehearsal, serving
from modelwarmup.controller.settings import OperatorSettings
from tests.k8s.semantics import json_merge_patch

ROOT = Path(__file__).resolve().parents[2]


def full() -> Any:
    body = next(
        b for b in manifests.load_documents(ROOT / "examples" / "full.yaml") if manifests.is_modelwarmup(b)
    )
    body["metadata"].update(namespace="ns", uid="uid-1")
    return manifests.validate_body(body)


def template() -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "chat"}},
        "spec": {
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [
                {
                    "name": "server",
                    "image": "srv",
                    "env": [{"name": "PYTHONPATH", "value": "/app"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                },
                {"name": "sidecar", "image": "proxy"},
            ],
        },
    }


def test_wiring_touches_only_the_chosen_containers_and_unwiring_restores_the_template() -> None:
    mw = full()
    original = template()
    wired = serving.wired_template(copy.deepcopy(original), mw, "key-1", "runtime:1")
    server, sidecar = wired["spec"]["containers"]
    assert sidecar == original["spec"]["containers"][1]
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["PYTHONPATH"] == "/opt/modelwarmup/python:/app"
    assert env["HF_HOME"] == "/var/cache/modelwarmup/hf"
    mount = next(m for m in server["volumeMounts"] if m["name"] == serving.CACHE_VOLUME)
    assert mount == {
        "name": serving.CACHE_VOLUME,
        "mountPath": "/var/cache/modelwarmup",
        "readOnly": True,
        "subPath": "gemma",
    }
    rewired = serving.wired_template(wired, mw, "key-2", "runtime:1")
    assert len(rewired["spec"]["initContainers"]) == 1 and len(rewired["spec"]["volumes"]) == 3
    assert serving.unwired_template(rewired) == original


def test_job_has_owner_security_failure_policy_and_token_by_reference_only() -> None:
    mw = full()
    target = mw.spec.targets[0]
    job = jobs.build_job(mw, target, "k123", OperatorSettings())
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert job["metadata"]["labels"][wiring.LABEL_WARMUP_KEY] == "k123"
    spec = job["spec"]
    assert spec["backoffLimit"] == 4 and spec["activeDeadlineSeconds"] == 10800
    fail_fast = spec["podFailurePolicy"]["rules"][0]
    assert fail_fast["action"] == "FailJob" and fail_fast["onExitCodes"]["values"] == list(
        errors.PERMANENT_EXIT_CODES
    )
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    args = container["args"]
    assert args[:3] == ["warm-cache", "--model-path", "google/gemma-3-12b-it"]
    assert args[args.index("--batch-sizes") + 1 : args.index("--batch-sizes") + 4] == ["1", "8", "32"]
    assert "--inductor-option" in args and "coordinate_descent_tuning=true" in args
    assert "--lora-paths" in args and "example-org/gemma-3-12b-it-support-lora@v1" in args


def test_worker_accepts_the_arguments_the_operator_builds() -> None:
    from modelwarmup.cli import build_parser
    from modelwarmup.worker import request

    mw = full()
    args = jobs.worker_args(mw.spec, mw.spec.targets[1])
    parsed = build_parser().parse_args(args)
    built = request.build_request(parsed)
    assert built.model.repo == "google/gemma-3-12b-it" and built.devices == "gpu:0"
    assert built.compile is not None and built.compile.batch_sizes == (1, 8, 32)
    assert built.compile.extra_options == {"coordinate_descent_tuning": True}
    assert built.draft is not None and built.draft.repo == "google/gemma-3-1b-it"


@pytest.mark.parametrize(
    ("change", "shares"),
    [
        ({"model": {"tokenSecretRef": {"name": "other-token"}}}, False),
        ({"targets": [{"tolerations": [{"key": "gpu", "operator": "Exists"}]}]}, False),
        ({"worker": {"serviceAccountName": "warmer"}}, False),
        ({"worker": {"env": [{"name": "TORCHINDUCTOR_MAX_AUTOTUNE", "value": "1"}]}}, False),
        ({"worker": {"backoffLimit": 7, "activeDeadlineSeconds": 600}}, True),
        ({"serving": {"names": ["chat"]}}, True),
    ],
)
def test_resources_share_a_warm_up_only_when_each_could_have_run_its_job(
    change: dict[str, Any], shares: bool
) -> None:
    base = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    base["spec"]["model"]["tokenSecretRef"] = {"name": "hf-token"}
    other = copy.deepcopy(base)
    if "targets" in change:  # a change to the first target, the rest of it as it was
        change = {"targets": [{**base["spec"]["targets"][0], **change["targets"][0]}]}
    other["spec"] = json_merge_patch(other["spec"], change)
    first, second = (manifests.validate_body(b).spec for b in (base, other))
    same = naming.warmup_key(first, first.targets[0], "img") == naming.warmup_key(
        second, second.targets[0], "img"
    )
    assert same is shares


@pytest.mark.parametrize("name", ["a" * 62 + "-b" * 10, "team.a" + "-" * 57 + "x", "x" * 253])
def test_job_names_and_labels_stay_valid_for_the_api_server_whatever_the_resource_name(name: str) -> None:
    job = naming.job_name(name, "cpu", "0123456789")
    labels = naming.job_labels(name, "cpu", "0123456789")
    assert len(job) <= 63 and re.fullmatch(
        r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", job
    )
    for value in labels.values():
        assert len(value) <= 63 and re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value), value


def test_switching_between_builtin_and_rehearsal_wiring_leaves_nothing_of_the_other() -> None:
    """A resource may move from one wiring to the other (or be deleted after either): the template
    a new wiring starts from, the one rehearsed, and the one unwiring leaves have nothing of ours."""
    builtin = full()
    body = builtin.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"]["targets"] = body["spec"]["targets"][:1]
    body["spec"]["serving"] = {"names": ["chat"], "rehearsal": {}}
    rehearsed = manifests.validate_body(body)
    original = template()
    original["spec"]["containers"][0]["command"] = ["vllm", "serve"]

    by_builtin = serving.wired_template(copy.deepcopy(original), builtin, "key-1", "runtime:1")
    by_rehearsal = rehearsal.wired_template(
        rehearsal.fully_unwired(by_builtin), rehearsed, "rehearsed/key-2", "runtime:1"
    )
    names = [c["name"] for c in by_rehearsal["spec"]["initContainers"]]
    assert names == [rehearsal.RESTORE_CONTAINER], names
    env = {e["name"] for e in by_rehearsal["spec"]["containers"][0]["env"]}
    assert wiring.ENV_AUTOLOAD not in env and "VLLM_CACHE_ROOT" in env
    assert rehearsal.fully_unwired(by_rehearsal) == original

    back = serving.wired_template(rehearsal.fully_unwired(by_rehearsal), builtin, "key-3", "runtime:1")
    assert [c["name"] for c in back["spec"]["initContainers"]] == [serving.INIT_CONTAINER]
    assert "VLLM_CACHE_ROOT" not in {e["name"] for e in back["spec"]["containers"][0]["env"]}
    assert rehearsal.ANNOTATION_ADDED_ENV not in back["metadata"]["annotations"]
    assert rehearsal.fully_unwired(back) == original
