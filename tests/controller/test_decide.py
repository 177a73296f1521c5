"""The reconcile decision, situation by situation: observed state in, plan out (no cluster)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from modelwarmup import manifests
from modelwarmup.api.resource import ModelWarmup
from modelwarmup.contracts import wiring
from modelwarmup.contracts.summary import WorkerSummary
from modelwarmup.controller import decide, naming, observe, resolution, serving
from modelwarmup.controller.decide import JobView, Observed
from modelwarmup.controller.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = OperatorSettings(worker_image="worker:test")
NOW = "2026-11-25T10:00:00Z"


def resource(**spec_changes: Any) -> ModelWarmup:
    body = next(b for b in manifests.load_documents(ROOT / "examples" / "minimal.yaml"))
    body = copy.deepcopy(body)
    body["metadata"].update(namespace="ns", uid="uid-1", generation=3)
    body["spec"].update(spec_changes)
    body["spec"]["serving"] = {"names": ["chat"]}
    return manifests.validate_body(body)


def key_of(mw: ModelWarmup) -> str:
    return naming.warmup_key(mw.spec, mw.spec.targets[0], SETTINGS.worker_image)


def deployment(key: str | None = None, owner: str | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": "chat"}},
        "spec": {"containers": [{"name": "server", "image": "srv"}]},
    }
    if key:
        template["metadata"]["annotations"] = {wiring.ANNOTATION_MODEL_KEY: key}
    meta: dict[str, Any] = {"name": "chat", "namespace": "ns", "resourceVersion": "7"}
    if owner:
        meta["annotations"] = {wiring.ANNOTATION_WIRED_BY: owner}
    return {"metadata": meta, "spec": {"template": template}}


def succeeded(name: str, owner: str, model_key: str = "tiny-abc", cache_hit: bool = False) -> JobView:
    summary = WorkerSummary(
        ok=True,
        cache_hit=cache_hit,
        reason="CacheHit" if cache_hit else "Warmed",
        message="warmed",
        entry_key=f"{model_key}/plat1",
        model_key=model_key,
        commit="c" * 40,
        bytes=1234,
        platform={"device_type": "cpu"},
        download_seconds=1.5,
        compile_seconds=20.0,
    )
    return JobView(name=name, owner=owner, phase="Succeeded", attempts=1, summary=summary)


def conditions(plan: decide.Plan) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in plan.status.conditions}


def test_new_resource_creates_one_job_per_target_and_the_claim() -> None:
    mw = resource()
    plan = decide.decide(
        Observed(mw=mw, jobs_by_key={}, deployments={"chat": deployment()}, claim_exists=False),
        SETTINGS,
        now=NOW,
    )
    assert [j["metadata"]["name"] for j in plan.create_jobs] == [
        naming.job_name("qwen-small", "cpu", key_of(mw))
    ]
    assert plan.create_claim is not None and "ownerReferences" not in plan.create_claim["metadata"]
    assert conditions(plan)["Ready"] == ("False", "JobPending")
    assert plan.status.observed_generation == 3
    assert plan.patches == {}


def test_running_job_is_not_created_again() -> None:
    mw = resource()
    view = JobView(name="j", owner="qwen-small", phase="Running", attempts=1)
    plan = decide.decide(
        Observed(mw=mw, jobs_by_key={key_of(mw): [view]}, deployments={"chat": deployment()}),
        SETTINGS,
        now=NOW,
    )
    assert plan.create_jobs == []
    assert conditions(plan)["Ready"] == ("False", "Warming")
    assert conditions(plan)["ServingPatched"] == ("False", "WaitingForCache")


def test_success_wires_the_deployment_and_reports_the_target() -> None:
    mw = resource()
    observed = Observed(
        mw=mw, jobs_by_key={key_of(mw): [succeeded("j", "qwen-small")]}, deployments={"chat": deployment()}
    )
    plan = decide.decide(observed, SETTINGS, now=NOW)
    assert conditions(plan) == {
        "Ready": ("True", "Ready"),
        "WeightsDownloaded": ("True", "Downloaded"),
        "Compiled": ("True", "Compiled"),
        "ServingPatched": ("True", "Patched"),
        "ServingWarm": ("Unknown", "WaitingForServingPod"),
    }
    target = plan.status.targets[0]
    assert (target.phase, target.entry_key, target.bytes, target.compile_seconds) == (
        "Succeeded",
        "tiny-abc/plat1",
        1234,
        20.0,
    )
    assert plan.status.model_key == "tiny-abc" and plan.status.resolved_revision == "c" * 40
    patch = plan.patches["chat"]
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    template = patch[1]["value"]
    assert template["metadata"]["annotations"][wiring.ANNOTATION_MODEL_KEY] == "tiny-abc"
    assert [c["name"] for c in template["spec"]["initContainers"]] == [serving.INIT_CONTAINER]
    env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["MODELWARMUP_MODEL_KEY"] == "tiny-abc"
    assert plan.events == [
        ("Normal", "Ready", "Ready=True: warmed Qwen/Qwen2.5-0.5B-Instruct for 1 target(s)")
    ]


def test_deployment_already_on_the_key_is_not_patched_again() -> None:
    mw = resource()
    observed = Observed(
        mw=mw,
        jobs_by_key={key_of(mw): [succeeded("j", "qwen-small")]},
        deployments={"chat": deployment("tiny-abc", "qwen-small")},
    )
    plan = decide.decide(observed, SETTINGS, now=NOW)
    assert plan.patches == {}
    assert plan.status.patched_deployments == ["chat"]


def test_spec_change_keeps_serving_the_old_key_until_the_new_one_is_warm() -> None:
    mw = resource(compile={"dtype": "float32"})
    observed = Observed(mw=mw, jobs_by_key={}, deployments={"chat": deployment("old-key", "qwen-small")})
    plan = decide.decide(observed, SETTINGS, now=NOW)
    assert len(plan.create_jobs) == 1 and plan.patches == {}
    assert plan.status.patched_deployments == ["chat"]  # still on old-key


def test_permanent_failure_is_reported_with_the_workers_message_and_not_retried() -> None:
    mw = resource()
    view = JobView(
        name="j",
        owner="qwen-small",
        phase="Failed",
        attempts=1,
        summary=WorkerSummary(ok=False, reason="RepositoryNotFound", message="repository x/y not found"),
    )
    plan = decide.decide(
        Observed(mw=mw, jobs_by_key={key_of(mw): [view]}, deployments={"chat": deployment()}),
        SETTINGS,
        now=NOW,
    )
    assert plan.create_jobs == []
    assert conditions(plan)["Ready"] == ("False", "JobFailed")
    assert "repository x/y not found" in plan.status.conditions[0].message
    assert plan.status.targets[0].reason == "RepositoryNotFound"
    assert ("Warning", "JobFailed") in [(e[0], e[1]) for e in plan.events]


def test_another_resources_job_for_the_same_entry_is_a_cache_hit() -> None:
    mw = resource()
    observed = Observed(
        mw=mw, jobs_by_key={key_of(mw): [succeeded("other-job", "other")]}, deployments={"chat": deployment()}
    )
    plan = decide.decide(observed, SETTINGS, now=NOW)
    assert plan.create_jobs == []
    assert plan.status.targets[0].phase == "CacheHit"
    assert conditions(plan)["Ready"] == ("True", "CacheHit")


def test_missing_and_foreign_deployments_block_ready() -> None:
    mw = resource()
    jobs = {key_of(mw): [succeeded("j", "qwen-small")]}
    missing = decide.decide(
        Observed(mw=mw, jobs_by_key=jobs, deployments={}, missing_deployments=("chat",)), SETTINGS, now=NOW
    )
    assert conditions(missing)["Ready"] == ("False", "DeploymentNotFound")
    foreign = decide.decide(
        Observed(mw=mw, jobs_by_key=jobs, deployments={"chat": deployment(None, "someone-else")}),
        SETTINGS,
        now=NOW,
    )
    assert foreign.patches == {}
    assert conditions(foreign)["ServingPatched"] == ("False", "DeploymentConflict")


def test_transition_time_moves_only_when_the_status_flips() -> None:
    mw = resource()
    first = decide.decide(
        Observed(mw=mw, jobs_by_key={}, deployments={"chat": deployment()}), SETTINGS, now=NOW
    )
    body = mw.model_dump(mode="json", by_alias=True)
    body["status"] = first.status.model_dump(mode="json", by_alias=True)
    again = ModelWarmup.from_body(body)
    view = JobView(name="j", owner="qwen-small", phase="Running", attempts=1)
    later = decide.decide(
        Observed(mw=again, jobs_by_key={key_of(mw): [view]}, deployments={"chat": deployment()}),
        SETTINGS,
        now="2026-11-25T11:00:00Z",
    )
    ready = {c.type: c for c in later.status.conditions}["Ready"]
    assert (ready.status, ready.reason, ready.last_transition_time) == ("False", "Warming", NOW)
    assert [e[1] for e in later.events] == ["Warming"]  # Ready's reason changed, its status did not


@pytest.mark.parametrize("name", ["a" * 63, "short"])
def test_job_names_fit_in_a_label(name: str) -> None:
    assert len(naming.job_name(name, "target-name", "0123456789")) <= 63


def test_delete_superseded_prunes_once_serving_switched_and_keeps_keys_in_use() -> None:
    mw = resource(cache={"create": {"size": "1Gi"}, "retention": "DeleteSuperseded"})
    body = mw.model_dump(mode="json", by_alias=True)
    body["status"] = {"modelKey": "tiny-old"}
    switched_from_old = ModelWarmup.from_body(body)
    jobs_by_key = {key_of(mw): [succeeded("j", "qwen-small", model_key="tiny-new")]}
    observed = Observed(
        mw=switched_from_old,
        jobs_by_key=jobs_by_key,
        deployments={"chat": deployment("tiny-old", "qwen-small")},
        other_keys=("someone-elses",),
    )
    plan = decide.decide(observed, SETTINGS, now=NOW)
    assert "chat" in plan.patches and plan.prune_job is not None
    args = plan.prune_job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:5] == ["prune", "--cache-dir", "/cache", "--model-path", "Qwen/Qwen2.5-0.5B-Instruct"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--keep"] == ["someone-elses", "tiny-new"]
    assert wiring.LABEL_WARMUP_KEY not in plan.prune_job["metadata"]["labels"]  # not mistaken for a warm-up
    assert plan.status.model_key == "tiny-new"

    retained = resource()
    body = retained.model_dump(mode="json", by_alias=True)
    body["status"] = {"modelKey": "tiny-old"}
    kept = Observed(
        mw=ModelWarmup.from_body(body),
        jobs_by_key=jobs_by_key,
        deployments={"chat": deployment("tiny-old", "qwen-small")},
    )
    assert decide.decide(kept, SETTINGS, now=NOW).prune_job is None
    first_warm = Observed(mw=mw, jobs_by_key=jobs_by_key, deployments={"chat": deployment()})
    assert decide.decide(first_warm, SETTINGS, now=NOW).prune_job is None


@pytest.mark.parametrize(
    ("pod_status", "reason"),
    [
        (
            {
                "containerStatuses": [
                    {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}
                ]
            },
            "ImagePullBackOff",
        ),
        (
            {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes have nvidia.com/gpu",
                    }
                ]
            },
            "Unschedulable",
        ),
    ],
)
def test_a_job_whose_pod_cannot_start_is_pending_with_the_pods_reason(
    pod_status: dict[str, Any], reason: str
) -> None:
    why = observe.stuck({"status": pod_status})
    assert why is not None and why[0] == reason
    mw = resource()
    view = JobView(name="j", owner=mw.metadata.name, phase="Running", attempts=1, stuck=why)
    plan = decide.decide(
        Observed(mw=mw, jobs_by_key={key_of(mw): [view]}, deployments={"chat": deployment()}),
        SETTINGS,
        now=NOW,
    )
    [target] = plan.status.targets
    assert (target.phase, target.reason) == ("Pending", reason) and why[1] in target.message
    assert conditions(plan)["Ready"] == ("False", "JobPending")
    assert why[1] in plan.status.conditions[0].message
    assert (
        observe.stuck(
            {"status": {"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}}
        )
        is None
    )


def test_a_branch_is_resolved_by_one_job_before_any_target_job_and_pinned_after() -> None:
    mw = resource()  # revision main: a branch
    pending = resolution.known(mw, SETTINGS.worker_image)
    assert pending is not None and not pending.done
    observed = Observed(mw=mw, jobs_by_key={}, deployments={"chat": deployment()}, resolution=pending)
    plan = decide.decide(observed, SETTINGS, now=NOW)
    [job] = plan.create_jobs
    assert job["metadata"]["labels"][wiring.LABEL_ROLE] == wiring.ROLE_RESOLVE
    assert job["metadata"]["labels"][wiring.LABEL_WARMUP_KEY] == pending.key
    [target] = plan.status.targets
    assert (target.phase, target.reason, target.job) == ("Pending", "Resolving", job["metadata"]["name"])
    assert conditions(plan)["Ready"] == ("False", "JobPending") and not plan.patches

    # Resolved: the target's Job carries the pin, and its key holds the commit.
    commit = "a" * 40
    pins = (f"{mw.spec.model.repo}@main={commit}",)
    done = resolution.Resolution(pending.key, pins)
    plan = decide.decide(
        Observed(mw=mw, jobs_by_key={}, deployments={"chat": deployment()}, resolution=done),
        SETTINGS,
        now=NOW,
    )
    [job] = plan.create_jobs
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--pin") + 1] == pins[0]
    assert (
        job["metadata"]["labels"][wiring.LABEL_WARMUP_KEY]
        == naming.warmup_key(mw.spec, mw.spec.targets[0], SETTINGS.worker_image, pins)
        != key_of(mw)
    )
    assert plan.status.pinned_revisions == list(pins) and plan.status.resolution_key == pending.key
    assert plan.status.resolved_revision == commit

    # A refresh annotation is a new resolution; a commit revision needs none.
    refreshed = mw.model_copy(
        update={
            "metadata": mw.metadata.model_copy(update={"annotations": {wiring.ANNOTATION_REFRESH: "now"}})
        }
    )
    assert resolution.key(refreshed, SETTINGS.worker_image) != pending.key
    assert (
        resolution.known(resource(model={"repo": "Qwen/Qwen2.5-0.5B-Instruct", "revision": commit}), "w")
        is None
    )


def test_a_failed_resolution_fails_every_target_with_the_workers_reason() -> None:
    mw = resource()
    pending = resolution.known(mw, SETTINGS.worker_image)
    assert pending is not None
    summary = WorkerSummary(ok=False, reason="RevisionNotFound", message="no revision main", permanent=True)
    view = JobView(name="r", owner=mw.metadata.name, phase="Failed", attempts=1, summary=summary)
    plan = decide.decide(
        Observed(mw=mw, jobs_by_key={pending.key: [view]}, deployments={}, resolution=pending),
        SETTINGS,
        now=NOW,
    )
    assert not plan.create_jobs
    [target] = plan.status.targets
    assert (target.phase, target.reason) == (
        "Failed",
        "RevisionNotFound",
    ) and "no revision main" in target.message
    assert conditions(plan)["Ready"] == ("False", "JobFailed")


def test_a_deployment_without_a_named_container_is_not_patched_and_says_so() -> None:
    """Wiring the other containers would roll the pods and still serve cold where it was asked."""
    mw = resource()
    serving_spec = mw.spec.serving.model_copy(update={"containers": ["nosuch"]})  # type: ignore[union-attr]
    mw = mw.model_copy(update={"spec": mw.spec.model_copy(update={"serving": serving_spec})})
    key = key_of(mw)
    plan = decide.decide(
        Observed(
            mw=mw, jobs_by_key={key: [succeeded("j", mw.metadata.name)]}, deployments={"chat": deployment()}
        ),
        SETTINGS,
        now=NOW,
    )
    assert plan.patches == {} and plan.status.patched_deployments == []
    assert conditions(plan)["ServingPatched"] == ("False", "ContainerNotFound")
    assert conditions(plan)["Ready"] == ("False", "ContainerNotFound")
    serving_condition = next(c for c in plan.status.conditions if c.type == "ServingPatched")
    assert "chat has no container nosuch (it has server)" in serving_condition.message
