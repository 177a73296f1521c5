"""The reconcile decision: from what was observed to what should be. A pure function.

No API calls and no clock reads here (the time comes in as an argument), so every situation the
operator can meet is a plain unit test: observed state in, a :class:`Plan` out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from modelwarmup.api.common import Condition
from modelwarmup.api.resource import ModelWarmup
from modelwarmup.api.spec import Target
from modelwarmup.api.status import ConditionType, ModelWarmupStatus, Reason, ServingStart, TargetStatus
from modelwarmup.contracts import wiring
from modelwarmup.contracts.summary import WorkerSummary
from modelwarmup.controller import conditions, jobs, naming, rehearsal, resolution, served, serving
from modelwarmup.controller.conditions import State, Wanted
from modelwarmup.controller.kubeapi import KubeObject
from modelwarmup.controller.resolution import Resolution
from modelwarmup.controller.settings import OperatorSettings

JobPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
# Not-ready reasons that are no problem: their Events are Normal, not Warning.
NORMAL_REASONS = frozenset({Reason.JOB_PENDING, Reason.WARMING, Reason.WAITING_FOR_CACHE})


@dataclass(frozen=True)
class JobView:
    """A warm-up Job as observed, with the summary its last pod left in its termination message."""

    name: str
    owner: str | None  # the ModelWarmup that created it
    phase: JobPhase
    attempts: int
    summary: WorkerSummary | None = None
    message: str = ""
    stuck: tuple[str, str] | None = None  # (reason, message): why its pod cannot start
    image_id: str = ""  # the image its last pod ran, by digest (the node's containerStatuses)


@dataclass(frozen=True)
class Observed:
    mw: ModelWarmup
    jobs_by_key: Mapping[str, list[JobView]]
    deployments: Mapping[str, KubeObject]  # the Deployments the resource names (or selects), found
    missing_deployments: tuple[str, ...] = ()
    claim_exists: bool = True
    other_keys: tuple[str, ...] = ()  # cache keys other resources on the same cache serve (retention)
    own_jobs: tuple[tuple[str, str], ...] = ()  # (name, warm-up key) of its unfinished Jobs, any spec
    wanted_elsewhere: frozenset[str] = frozenset()  # warm-up keys other resources wait on
    # None when every revision is a commit; else its key (the resolve Job's in jobs_by_key until
    # it is done) and, once done, the pins every target's Job gets.
    resolution: Resolution | None = None
    # The first lines of a new serving pod's logs, for each wired Deployment not yet judged.
    serving_logs: tuple[served.PodLogs, ...] = ()


@dataclass
class Plan:
    status: ModelWarmupStatus
    create_claim: KubeObject | None = None
    create_jobs: list[KubeObject] = field(default_factory=list)
    prune_job: KubeObject | None = None  # created after the Deployment patches succeeded
    delete_jobs: list[str] = field(default_factory=list)  # superseded: no resource wants their entry
    patches: dict[str, list[KubeObject]] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def pick_job(views: list[JobView], own: str) -> JobView | None:
    """Our own Job for a key first, else another resource's that has not failed (a shared entry)."""
    mine = [v for v in views if v.owner == own]
    if mine:
        return mine[0]
    order = {"Succeeded": 0, "Running": 1, "Pending": 2}
    shared = sorted((v for v in views if v.phase in order), key=lambda v: (order[v.phase], v.name))
    return shared[0] if shared else None


WAITING = "waiting for the warm-up Job to start"


def _target_status(target: Target, view: JobView | None, own: str, *, created: str = "") -> TargetStatus:
    base: dict[str, Any] = {"name": target.name}
    if view is None:
        # The Job this reconcile creates, as the next reconcile will observe it: no second write.
        return TargetStatus(**base, job=created or None, phase="Pending", message=WAITING)
    summary = view.summary
    base.update(
        job=view.name,
        attempts=view.attempts,
        reason=(summary.reason if summary else "") or (Reason.JOB_FAILED if view.phase == "Failed" else ""),
        message=(
            (summary.message if summary else "")
            or view.message
            or (WAITING if view.phase == "Pending" else "")
        )[:1024],
    )
    if summary is not None and summary.ok:
        base.update(
            image_id=view.image_id or None,
            entry_key=summary.entry_key,
            platform=summary.platform,
            bytes=summary.bytes,
            download_seconds=summary.download_seconds,
            compile_seconds=summary.compile_seconds,
        )
    if view.stuck is not None and view.phase in ("Pending", "Running"):
        reason, why = view.stuck
        # The Job controller counts the pod as active; it has not started and will not by itself.
        return TargetStatus(
            **{**base, "reason": reason, "message": f"{reason}: {why}"[:1024]}, phase="Pending"
        )
    shared = view.owner != own
    if shared:
        base["message"] = f"shares the entry of Job {view.name}: {base['message']}"
    if view.phase == "Succeeded":
        phase = "CacheHit" if shared or (summary is not None and summary.cache_hit) else "Succeeded"
        if phase == "CacheHit":
            base["reason"] = Reason.CACHE_HIT
        return TargetStatus(**base, phase=phase)
    return TargetStatus(**base, phase=view.phase)


def _claim(mw: ModelWarmup) -> KubeObject:
    create = mw.spec.cache.create
    assert create is not None
    spec: KubeObject = {
        "accessModes": list(create.access_modes),
        "resources": {"requests": {"storage": str(create.size)}},
    }
    if create.storage_class_name:
        spec["storageClassName"] = create.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        # No owner reference: the cache outlives any one ModelWarmup.
        "metadata": {
            "name": create.name,
            "namespace": mw.metadata.namespace,
            "labels": {wiring.MANAGED_BY: wiring.OPERATOR},
        },
        "spec": spec,
    }


def decide(observed: Observed, settings: OperatorSettings, *, now: str) -> Plan:
    """What should be, given what is."""
    mw = observed.mw
    own = mw.metadata.name
    image = mw.spec.worker.image or settings.worker_image
    plan = Plan(status=ModelWarmupStatus())
    if mw.spec.cache.create is not None and not observed.claim_exists:
        plan.create_claim = _claim(mw)

    resolving = observed.resolution is not None and not observed.resolution.done
    pins = observed.resolution.pins if observed.resolution is not None else ()
    targets: list[TargetStatus] = []
    chosen: list[JobView | None] = [None] * len(mw.spec.targets)
    problem: str | None = None
    if resolving:
        # No target's key is known before its commits are: nothing is cancelled meanwhile either.
        targets = _resolving(observed, settings, plan)
    else:
        template, problem = rehearsed_template(mw, observed.deployments)
        keys = warmup_keys(mw, image, pins, observed.deployments)
        # An unfinished Job of an earlier spec that no resource waits on would run to its end for
        # nothing (on a GPU node, a whole warm-up): cancel it. A shared one stays while another
        # resource waits.
        plan.delete_jobs = sorted(
            name
            for name, key in observed.own_jobs
            if key not in keys and key not in observed.wanted_elsewhere
        )
        chosen = []
        for target, key in zip(mw.spec.targets, keys, strict=True):
            view = pick_job(list(observed.jobs_by_key.get(key, [])), own)
            created = ""
            if view is None and rehearsing(mw) and (template is None or problem):
                # Nothing to rehearse yet: the Deployment is missing, or cannot be run as it is.
                message = problem or "waiting for the Deployment to rehearse"
                targets.append(TargetStatus(name=target.name, phase="Pending", message=message[:1024]))
                chosen.append(None)
                continue
            if view is None:
                job = (
                    jobs.build_rehearsal_job(mw, target, key, settings, template, pins)
                    if template is not None
                    else jobs.build_job(mw, target, key, settings, pins)
                )
                plan.create_jobs.append(job)
                created = job["metadata"]["name"]
            targets.append(_target_status(target, view, own, created=created))
            chosen.append(view)

    phases = {t.phase for t in targets}
    done = phases <= {"Succeeded", "CacheHit"}
    failed = [t for t in targets if t.phase == "Failed"]
    model_keys = {
        v.summary.model_key for v in chosen if v and v.summary and v.summary.ok and v.summary.model_key
    }
    if rehearsing(mw):  # serving restores the rehearsed entry itself: rehearsed/<key>
        model_keys = {
            v.summary.entry_key for v in chosen if v and v.summary and v.summary.ok and v.summary.entry_key
        }
    model_key = sorted(model_keys)[0] if done and model_keys else None
    commits = [c for t in targets if (c := _commit(observed, t))]
    if pins:
        commits = [c for c in [resolution.commit_of(pins, mw.spec.model)] if c] + commits

    if failed:
        why = "; ".join(f"{t.name}: {t.message}" for t in failed)
        weights = compiled = State("False", Reason.JOB_FAILED, why)
    elif done:
        hit = phases == {"CacheHit"}
        weights = State("True", Reason.CACHE_HIT if hit else Reason.DOWNLOADED, "weights are in the cache")
        compiled = (
            State(
                "True",
                Reason.CACHE_HIT if hit else Reason.REHEARSED,
                "the server's own compile caches are captured, verified and in the cache",
            )
            if rehearsing(mw)
            else State(
                "True",
                Reason.CACHE_HIT if hit else Reason.COMPILED,
                "compiled artifacts are in the cache for every target",
            )
            if mw.spec.compile.enabled
            else State("True", Reason.COMPILE_DISABLED, "compilation is disabled; weights only")
        )
    else:
        waiting = Reason.JOB_PENDING if phases <= {"Pending"} else Reason.WARMING
        running = ", ".join(
            f"{t.name}: {t.message if t.phase == 'Pending' and t.reason else t.phase}"
            for t in targets
            if t.phase not in ("Succeeded", "CacheHit")
        )
        weights = compiled = State("False", waiting, f"waiting for warm-up Jobs ({running})")

    patched, serving_state = _serving(observed, mw, model_key, settings, plan)
    superseded = mw.status.model_key
    if (
        mw.spec.cache.retention == "DeleteSuperseded"
        and model_key
        and serving_state.status == "True"  # the Deployments have switched (or there are none)
        and superseded
        and superseded != model_key
    ):
        # A rehearsal's download entry (compiled/<model key>/) is its own and stays with it.
        downloads = {v.summary.model_key for v in chosen if v and v.summary and v.summary.model_key}
        keep = sorted({model_key, *observed.other_keys, *(downloads if rehearsing(mw) else ())})
        plan.prune_job = jobs.build_prune_job(mw, model_key, keep, settings)
    if failed:
        ready = State("False", Reason.JOB_FAILED, compiled.message)
    elif problem:
        ready = State("False", Reason.NOT_REHEARSABLE, problem)
    elif not done and (drift := _drifted(observed, mw)):
        ready = State("False", Reason.DRIFTED, drift)
    elif not done:
        ready = compiled
    elif serving_state.status != "True":
        ready = serving_state
    else:
        ready = State(
            "True",
            Reason.CACHE_HIT if phases == {"CacheHit"} else Reason.READY,
            f"warmed {mw.spec.model.repo} for {len(targets)} target(s)",
        )
    rehearsed_images = {t.image_id for t in targets if t.image_id} if rehearsing(mw) else set()
    warm_state, starts = _serving_warm(
        observed, mw, model_key if serving_state.status == "True" else None, rehearsed_images
    )
    wanted = [
        Wanted(ConditionType.READY, ready),
        Wanted(ConditionType.WEIGHTS_DOWNLOADED, weights),
        Wanted(ConditionType.COMPILED, compiled),
        Wanted(ConditionType.SERVING_PATCHED, serving_state),
        Wanted(ConditionType.SERVING_WARM, warm_state),
    ]

    new_conditions = conditions.merge(mw.status.conditions, wanted, generation=mw.metadata.generation, at=now)
    plan.events = _ready_events(mw.status.conditions, new_conditions)
    plan.status = ModelWarmupStatus(
        observed_generation=mw.metadata.generation,
        conditions=new_conditions,
        resolved_revision=commits[0] if commits else mw.status.resolved_revision,
        **_pinned(observed, mw),
        model_key=model_key or mw.status.model_key,
        targets=targets,
        patched_deployments=patched,
        serving_starts=starts,
    )
    return plan


def _serving_warm(
    observed: Observed, mw: ModelWarmup, model_key: str | None, rehearsed_images: set[str]
) -> tuple[State, list[ServingStart]]:
    """Whether the wired Deployments' new pods started warm (ServingWarm), and each one's record.

    ``model_key`` is the key every Deployment is wired to, None until then. A verdict, once in,
    stays for its key; a log that said nothing yet is read again at the next reconcile. A pod
    whose image is not the one rehearsed (a tag that moved) has that said first: the key holds
    the image's reference, which is all the operator knows before the rehearsal's pod runs."""
    if mw.spec.serving is None or not observed.deployments:
        return State("Unknown", Reason.NO_SERVING, "no Deployments to check"), []
    if model_key is None:
        return State(
            "Unknown", Reason.WAITING_FOR_CACHE, "checked once the Deployments serve the warmed entry"
        ), []
    known = {s.deployment: s for s in mw.status.serving_starts if s.model_key == model_key}
    fresh = {logs.deployment: logs for logs in observed.serving_logs if logs.model_key == model_key}
    starts: list[ServingStart] = []
    for name in sorted(observed.deployments):
        before, logs = known.get(name), fresh.get(name)
        if logs is None or (before is not None and before.warm is not None):
            starts.extend([before] if before is not None else [])
            continue
        verdict = served.judge(logs, rehearsed=rehearsing(mw))
        evidence = verdict.evidence
        if logs.image_id and rehearsed_images and logs.image_id not in rehearsed_images:
            ran = ", ".join(sorted(rehearsed_images))
            evidence = (
                f"runs image {logs.image_id}, the rehearsal ran {ran} (pin the image by digest): {evidence}"
            )
        starts.append(
            ServingStart(
                deployment=name,
                pod=logs.pod,
                model_key=model_key,
                image_id=logs.image_id or None,
                warm=verdict.warm,
                evidence=evidence[:1024],
            )
        )
    said = {s.deployment: f"Deployment {s.deployment}, pod {s.pod}: {s.evidence}" for s in starts}
    if cold := [said[s.deployment] for s in starts if s.warm is False]:
        return State("False", Reason.SERVED_COLD, "; ".join(cold)[:1024]), starts
    warm = {s.deployment for s in starts if s.warm}
    if warm == set(observed.deployments):
        return State("True", Reason.SERVED_WARM, "; ".join(said[d] for d in sorted(warm))[:1024]), starts
    waiting = [
        said.get(name, f"Deployment {name}: no ready pod of {model_key} yet")
        for name in sorted(observed.deployments)
        if name not in warm
    ]
    return State("Unknown", Reason.WAITING_FOR_SERVING_POD, "; ".join(waiting)[:1024]), starts


RESOLVING = "Resolving"


def rehearsing(mw: ModelWarmup) -> bool:
    return mw.spec.serving is not None and mw.spec.serving.rehearsal is not None


def rehearsed_template(
    mw: ModelWarmup, deployments: Mapping[str, KubeObject]
) -> tuple[KubeObject | None, str | None]:
    """(the unwired pod template to rehearse, why it cannot be) in rehearsal mode; else (None, None)."""
    serving = mw.spec.serving
    if serving is None or serving.rehearsal is None:
        return None, None
    deployment = deployments.get(serving.names[0])
    if deployment is None:
        return None, None
    template = rehearsal.fully_unwired(deployment.get("spec", {}).get("template", {}))
    try:
        rehearsal.check(template, serving.rehearsal)
    except rehearsal.TemplateProblem as error:
        return template, f"Deployment {serving.names[0]}: {error}"
    return template, None


def warmup_keys(
    mw: ModelWarmup, image: str, pins: tuple[str, ...], deployments: Mapping[str, KubeObject]
) -> list[str]:
    """Each target's warm-up key; in rehearsal mode, of the Deployment's template as it is now."""
    template, _ = rehearsed_template(mw, deployments)
    rehearsed = None
    if template is not None and mw.spec.serving is not None and mw.spec.serving.rehearsal is not None:
        try:
            rehearsed = rehearsal.template_inputs(template, mw.spec.serving.rehearsal)
        except rehearsal.TemplateProblem:
            rehearsed = None
    return [naming.warmup_key(mw.spec, target, image, pins, rehearsed) for target in mw.spec.targets]


def _drifted(observed: Observed, mw: ModelWarmup) -> str | None:
    """Why the rehearsed Deployment is wired to an entry of an older template, if it is."""
    if not rehearsing(mw) or mw.spec.serving is None:
        return None
    name = mw.spec.serving.names[0]
    deployment = observed.deployments.get(name)
    current = serving.current_key(deployment) if deployment is not None else None
    if current is None:
        return None
    return (
        f"Deployment {name} changed since {current} was rehearsed (image, command, args, env or "
        "resources): rehearsing it again; its pods keep the previous entry meanwhile"
    )


def _resolving(observed: Observed, settings: OperatorSettings, plan: Plan) -> list[TargetStatus]:
    """Every target's status while the resolve Job runs (it is created when there is none)."""
    mw, own = observed.mw, observed.mw.metadata.name
    assert observed.resolution is not None
    asked = ", ".join(f"{r.repo}@{r.revision}" for r in resolution.revisions(mw.spec))
    view = pick_job(list(observed.jobs_by_key.get(observed.resolution.key, [])), own)
    if view is None:
        job = jobs.build_resolve_job(mw, observed.resolution.key, settings)
        plan.create_jobs.append(job)
        name, phase, reason, message = job["metadata"]["name"], "Pending", RESOLVING, f"resolving {asked}"
    else:
        summary = view.summary
        name, phase, reason, message = view.name, "Pending", RESOLVING, f"resolving {asked} (Job {view.name})"
        if view.stuck is not None:
            reason, why = view.stuck
            message = f"{reason}: {why}"
        elif view.phase == "Failed":
            phase = "Failed"
            reason = (summary.reason if summary else "") or Reason.JOB_FAILED
            message = f"resolving {asked} failed: {(summary.message if summary else '') or view.message}"
        elif view.phase == "Succeeded":  # done, yet no pins: a worker image older than the operator
            phase, reason = "Failed", Reason.JOB_FAILED
            message = (
                f"the resolve Job {view.name} reported no pins: is the worker image older than the operator?"
            )
    return [
        TargetStatus(
            name=t.name,
            job=name,
            phase=phase,
            reason=reason,
            message=message[:1024],
            attempts=view.attempts if view else 0,
        )
        for t in mw.spec.targets
    ]


def _pinned(observed: Observed, mw: ModelWarmup) -> dict[str, Any]:
    """The status's pins: the resolution's once done, unchanged while resolving, none if not needed."""
    if observed.resolution is None:
        return {"pinned_revisions": [], "resolution_key": None, "last_handled_refresh": None}
    if not observed.resolution.done:  # the commits served so far stay until the new ones are warm
        return {
            "pinned_revisions": mw.status.pinned_revisions,
            "resolution_key": mw.status.resolution_key,
            "last_handled_refresh": mw.status.last_handled_refresh,
        }
    return {
        "pinned_revisions": list(observed.resolution.pins),
        "resolution_key": observed.resolution.key,
        "last_handled_refresh": mw.metadata.annotations.get(wiring.ANNOTATION_REFRESH),
    }


def _ready_events(previous: list[Condition], current: list[Condition]) -> list[tuple[str, str, str]]:
    """One Event per transition of Ready: its reason already names what the others say, and one
    Event per condition would post three or four near-identical Events at every step. And one
    when ServingWarm comes to a verdict: how serving started is news that Ready does not carry."""
    events = []
    watched = [c for c in current if c.type == ConditionType.READY] + [
        c
        for c in current
        if c.type == ConditionType.SERVING_WARM and c.reason in (Reason.SERVED_WARM, Reason.SERVED_COLD)
    ]
    for changed in conditions.transitions(previous, watched):
        kind = "Normal" if changed.status == "True" or changed.reason in NORMAL_REASONS else "Warning"
        events.append((kind, changed.reason, f"{changed.type}={changed.status}: {changed.message}"[:1024]))
    return events


@dataclass(frozen=True)
class Rejection:
    """An object the API server refused to create or patch (a 400, or a 422 naming fields)."""

    kind: str  # "Job", "PersistentVolumeClaim", "Deployment"
    name: str
    message: str


def with_rejections(
    plan: Plan, previous: ModelWarmupStatus, rejections: list[Rejection], *, now: str
) -> Plan:
    """The plan's status once the API server refused some of it: say so, and claim no Deployment
    as patched that was not. Retrying the same objects cannot help; a spec change can."""
    message = "; ".join(f"{r.kind} {r.name}: {r.message}" for r in rejections)[:1024]
    state = State("False", Reason.REJECTED, message)
    refused_deployments = {r.name for r in rejections if r.kind == "Deployment"}
    refused_warmup = any(r.kind != "Deployment" for r in rejections)
    current = {c.type: State(c.status, c.reason, c.message) for c in plan.status.conditions}
    wanted = [Wanted(ConditionType.READY, state)]
    for type_ in (ConditionType.WEIGHTS_DOWNLOADED, ConditionType.COMPILED):
        wanted.append(Wanted(type_, state if refused_warmup else current[type_]))
    wanted.append(
        Wanted(
            ConditionType.SERVING_PATCHED,
            state if refused_deployments else current[ConditionType.SERVING_PATCHED],
        )
    )
    wanted.append(Wanted(ConditionType.SERVING_WARM, current[ConditionType.SERVING_WARM]))
    new_conditions = conditions.merge(
        previous.conditions, wanted, generation=plan.status.observed_generation, at=now
    )
    status = plan.status.model_copy(
        update={
            "conditions": new_conditions,
            "patched_deployments": [
                d for d in plan.status.patched_deployments if d not in refused_deployments
            ],
        }
    )
    return dataclasses.replace(plan, status=status, events=_ready_events(previous.conditions, new_conditions))


def decide_invalid(
    previous: ModelWarmupStatus, generation: int | None, problems: list[str], *, now: str
) -> Plan:
    """A spec the models reject: every condition False with InvalidSpec, an Event on the transition.

    Nothing is created or patched; what the status said of targets and keys stays as it was.
    """
    message = "; ".join(problems)[:1024]
    state = State("False", Reason.INVALID_SPEC, message)
    wanted = [Wanted(type_, state) for type_ in ConditionType]
    new_conditions = conditions.merge(previous.conditions, wanted, generation=generation, at=now)
    status = previous.model_copy(update={"observed_generation": generation, "conditions": new_conditions})
    return Plan(status=status, events=_ready_events(previous.conditions, new_conditions))


def _commit(observed: Observed, target: TargetStatus) -> str | None:
    for views in observed.jobs_by_key.values():
        for view in views:
            if view.name == target.job and view.summary is not None and view.summary.commit:
                return view.summary.commit
    return None


def _serving(
    observed: Observed, mw: ModelWarmup, model_key: str | None, settings: OperatorSettings, plan: Plan
) -> tuple[list[str], State]:
    """Which Deployments are wired to the current key, patches to get there, and the condition."""
    if mw.spec.serving is None:
        return [], State("True", Reason.NO_SERVING, "no Deployments to wire")
    own = mw.metadata.name
    patched: list[str] = []
    conflicts: list[str] = []
    no_container: list[str] = []
    for name, deployment in sorted(observed.deployments.items()):
        owner = serving.wired_by(deployment)
        if owner not in (None, own):
            conflicts.append(f"{name} (wired by {owner})")
            continue
        present = {
            c.get("name")
            for c in deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
        }
        if absent := [c for c in mw.spec.serving.containers if c not in present]:
            # Wiring the others would roll the pods and still serve cold where the user asked.
            no_container.append(
                f"{name} has no container {', '.join(absent)} (it has {', '.join(sorted(map(str, present)))})"
            )
            continue
        current = serving.current_key(deployment)
        if model_key is None:
            if current is not None:
                patched.append(name)  # still serving the previous key until the new one is warm
            continue
        if current == model_key:
            patched.append(name)
            continue
        template = deployment.get("spec", {}).get("template", {})
        image = settings.runtime_image or mw.spec.worker.image or settings.worker_image
        new_template = (
            rehearsal.wired_template(template, mw, model_key, image)
            if rehearsing(mw)
            else serving.wired_template(rehearsal.fully_unwired(template), mw, model_key, image)
        )
        plan.patches[name] = serving.json_patch(deployment, new_template, owner=own)
        patched.append(name)
    if observed.missing_deployments:
        missing = ", ".join(observed.missing_deployments)
        return patched, State("False", Reason.DEPLOYMENT_NOT_FOUND, f"not found: {missing}")
    if conflicts:
        wired = ", ".join(conflicts)
        return patched, State("False", Reason.DEPLOYMENT_CONFLICT, f"wired by another ModelWarmup: {wired}")
    if no_container:
        return patched, State("False", Reason.CONTAINER_NOT_FOUND, "; ".join(no_container)[:1024])
    if model_key is None:
        return patched, State(
            "False", Reason.WAITING_FOR_CACHE, "Deployments switch once every target is warm"
        )
    return patched, State("True", Reason.PATCHED, f"{len(patched)} Deployment(s) use model key {model_key}")
