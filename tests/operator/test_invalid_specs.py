"""Invalid specs that reach the operator: InvalidSpec naming the field, one Warning Event, no Job,
no retry storm, and the operator keeps serving valid resources.

A real API server rejects these already (the CRD's schema and CEL rules; ``tests/test_crd.py``);
the emulator validates nothing, as an API server without the schema's rules (an older CRD, or a
webhook-less cluster with a hand-edited one) would, so every body reaches the operator.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import ROOT
from tests.k8s.client import KubeClient
from tests.k8s.emulator import ApiServer
from tests.k8s.kopf_runner import OperatorThread
from tests.k8s.kubelet import LocalKubelet
from tests.k8s.semantics import json_merge_patch
from tests.operator import helpers
from tests.operator.helpers import MW, NS, wait_for

TABLE: list[dict[str, Any]] = yaml.safe_load((ROOT / "tests" / "data" / "invalid_specs.yaml").read_text())
# The structural schema prunes unknown fields before the operator sees them: a misspelt field
# is dropped, not reported (a real server with --validate=strict rejects it at apply time).
PRUNED = {"misspelt compile field"}


def _bodies() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    example = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    cases = []
    for index, case in enumerate(c for c in TABLE if c["case"] not in PRUNED):
        body = copy.deepcopy(example)
        body["metadata"] = {"name": f"invalid-{index}", "namespace": NS}
        body["spec"] = json_merge_patch(body["spec"], case["patch"])
        cases.append((body["metadata"]["name"], body, case))
    return cases


def test_every_invalid_spec_is_reported_and_the_operator_keeps_working(
    cluster: ApiServer, kube: KubeClient, kubelet: LocalKubelet, operator: OperatorThread
) -> None:
    cases = _bodies()
    assert len(cases) >= 30
    for _, body, _ in cases:
        kube.create(MW, body, namespace=NS)
    kube.create(MW, helpers.warmup("valid"), namespace=NS)

    for name, _, case in cases:
        obj = helpers.wait_condition(kube, name, status="False", reason="InvalidSpec", timeout=20)
        message = helpers.conditions(obj)["Ready"]["message"]
        assert case["field"] in message and case["message"] in message, (case["case"], message)
        assert {c["reason"] for c in obj["status"]["conditions"]} == {"InvalidSpec"}
        assert obj["status"]["observedGeneration"] == 1
    helpers.wait_condition(kube, "valid", status="True", timeout=60)  # alive and working

    mark = cluster.wait_quiet(0.5)
    time.sleep(1.5)
    assert not cluster.requests(mark, exclude_user_agent="modelwarmup-tests", writes_only=True)  # no retries
    assert len(helpers.jobs(kube)) == 1  # the valid one's
    for name, _, case in cases:
        [event] = helpers.events(kube, name)
        assert (event["type"], event["reason"]) == ("Warning", "InvalidSpec")
        assert case["field"] in event["message"]
    assert operator.alive


@pytest.mark.parametrize("fix", ["spec", "no-change"])
def test_fixing_an_invalid_spec_warms_it(
    kube: KubeClient, kubelet: LocalKubelet, operator: OperatorThread, fix: str
) -> None:
    body = helpers.warmup("typo")
    body["spec"]["compile"] = {"enabled": False, "mode": "turbo"}
    kube.create(MW, body, namespace=NS)
    helpers.wait_condition(kube, "typo", status="False", reason="InvalidSpec")
    if fix == "no-change":  # a metadata-only change is no reason to reconcile or post again
        kube.patch(MW, "typo", {"metadata": {"labels": {"team": "a"}}}, namespace=NS)
        time.sleep(1.0)
        assert len(helpers.events(kube, "typo")) == 1
        return
    kube.patch(MW, "typo", {"spec": {"compile": {"mode": "default"}}}, namespace=NS)
    obj = helpers.wait_condition(kube, "typo", status="True", timeout=60)
    assert obj["status"]["observedGeneration"] == 2
    wait_for(lambda: [e["reason"] for e in helpers.events(kube, "typo")][-1] == "Ready", timeout=5)
