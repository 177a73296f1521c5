"""The service layer under the kopf handlers: one level-based reconcile, and unwiring on delete.

:func:`reconcile` validates the body at the edge, then observes, decides (a pure function) and
applies; an invalid spec goes through the same decide/apply path with its own decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
import pydantic

from modelwarmup import errors
from modelwarmup.api import resource
from modelwarmup.api.resource import ModelWarmup
from modelwarmup.api.status import ModelWarmupStatus
from modelwarmup.controller import (
    apply,
    conditions,
    decide,
    kubeapi,
    observe,
    rehearsal,
    resolution,
    serving,
)
from modelwarmup.controller.memo import Runtime
from modelwarmup.controller.settings import OperatorSettings

# Target reasons of a Pending target that no pod state explains: the pending-recheck timer looks
# again while one holds (no Job or pod event would tell of a FailedCreate Event).
UNEXPLAINED_WAITS = frozenset({"", decide.RESOLVING, "FailedCreate"})


def waits_unexplained(status: Mapping[str, Any]) -> bool:
    """A status (as written) has a target whose Job has no pod whose state explains the wait."""
    return any(
        target.get("phase") == "Pending" and target.get("reason", "") in UNEXPLAINED_WAITS
        for target in status.get("targets") or []
    )


def reconcile(runtime: Runtime, body: dict[str, Any], logger: kopf.Logger) -> None:
    """Observe, decide, apply, for one resource body."""
    meta = body.get("metadata", {})
    namespace = meta.get("namespace") or "default"
    body = {**body, "metadata": {**meta, "namespace": namespace}}
    with runtime.lock(namespace, meta["name"]):
        runtime.metrics.reconciles.inc()
        if (written := runtime.written(namespace, meta["name"])) is not None:
            body["status"] = written
        try:
            mw = ModelWarmup.from_body(body)
        except pydantic.ValidationError as error:
            runtime.waits(namespace, meta["name"], ())
            problems = errors.describe_validation_error(error, root="")
            previous = ModelWarmupStatus.model_validate(body.get("status") or {})
            invalid = decide.decide_invalid(previous, meta.get("generation"), problems, now=conditions.now())
            identity = resource.ObjectMeta(name=meta["name"], namespace=namespace, uid=meta.get("uid"))
            apply.apply(runtime.api, identity, previous, invalid, logger, now=conditions.now())
            runtime.written(namespace, meta["name"], apply.status_body(invalid)["status"])
            logger.warning("invalid spec: %s", "; ".join(problems))
            return
        image = mw.spec.worker.image or runtime.settings.worker_image
        try:
            pending = resolution.known(mw, image)
            if pending is not None and not pending.done:
                # Read outside the key locks, to know which keys to lock; while unresolved, the
                # resolve Job is read again under its key's lock, where it may be created.
                pending = observe.resolved(runtime.api, mw, pending)
            pins = pending.pins if pending is not None else ()
            keys = (
                [pending.key]  # until the commits are known, the resource waits on its resolve Job
                if pending is not None and not pending.done
                else decide.warmup_keys(
                    mw, image, pins, observe.deployments(runtime.api, mw)[0] if decide.rehearsing(mw) else {}
                )
            )
            runtime.waits(namespace, mw.metadata.name, keys)
            with runtime.warming(namespace, keys):
                elsewhere = runtime.wanted_by_others(namespace, mw.metadata.name)
                observed = observe.observe(
                    runtime.api, mw, keys, wanted_elsewhere=elsewhere, resolution=pending
                )
                plan = decide.decide(observed, runtime.settings, now=conditions.now())
                plan, retry = apply.apply(
                    runtime.api, mw.metadata, mw.status, plan, logger, now=conditions.now()
                )
                written = apply.status_body(plan)["status"]
                runtime.written(namespace, mw.metadata.name, written)
            if not waits_unexplained(written):
                runtime.recheck_done(namespace, mw.metadata.name)
        except errors.KubeApiError as error:
            runtime.metrics.reconcile_errors.inc()
            raise kopf.TemporaryError(f"API error, will retry: {error}", delay=15) from None
        runtime.metrics.record(namespace, mw.metadata.name, mw.status, plan.status)
        if retry:
            raise kopf.TemporaryError(f"Deployments changed while patching: {', '.join(retry)}", delay=2)


def _news(runtime: Runtime, namespace: str, name: str, job: dict[str, Any], event: str) -> bool:
    """Whether a Job's event can change what this resource's status says about it.

    A Job's phase and attempt count move whenever a pod of it finishes (and with them the result
    the operator reads); an event that moves neither (the Job's creation, a label, a pod start
    the status already shows) needs no reconcile. A deleted Job always does. Unknown until this
    process wrote a status.
    """
    written = runtime.written(namespace, name)
    if written is None or event == "DELETED":
        return True
    phase, attempts = observe.job_phase(job), observe.job_attempts(job)
    for target in written.get("targets") or []:
        if target.get("job") == job.get("metadata", {}).get("name"):
            recorded = target.get("phase")
            same = recorded == phase or (recorded == "CacheHit" and phase == "Succeeded")
            return not (same and int(target.get("attempts") or 0) == attempts)
    return True


def _pod_news(runtime: Runtime, namespace: str, name: str, pod: dict[str, Any]) -> bool:
    """Whether a warm-up pod's event changes what the status says about it: it got stuck (a missing
    Secret, an image that cannot be pulled, no node for it), or the status says stuck and it is
    not any more. The Job does not change in either case: it counts the pod as active throughout."""
    written = runtime.written(namespace, name)
    if written is None:
        return False  # nothing to correct yet; the reconcile that writes it reads the pods
    labels = (pod.get("metadata") or {}).get("labels") or {}
    job = labels.get("job-name") or labels.get("batch.kubernetes.io/job-name")
    now_stuck = observe.stuck(pod)
    for target in written.get("targets") or []:
        if target.get("job") == job:
            recorded = target.get("reason") if target.get("phase") == "Pending" else None
            return recorded != (now_stuck[0] if now_stuck else None) and (
                now_stuck is not None or recorded in observe.STUCK_REASONS
            )
    return False


def reconcile_for_job(
    runtime: Runtime, namespace: str, name: str, job: dict[str, Any], event: str, logger: kopf.Logger
) -> None:
    """Reconcile a resource waiting on ``job`` if the Job's event may change its status."""
    with runtime.lock(namespace, name):  # after a reconcile in flight: judge news by what it wrote
        if _news(runtime, namespace, name, job, event):
            _reconcile_named(runtime, namespace, name, logger)


def reconcile_for_pod(
    runtime: Runtime, namespace: str, name: str, pod: dict[str, Any], logger: kopf.Logger
) -> None:
    """Reconcile a resource waiting on a warm-up pod if the pod got stuck or unstuck."""
    with runtime.lock(namespace, name):
        if _pod_news(runtime, namespace, name, pod):
            _reconcile_named(runtime, namespace, name, logger)


def reconcile_by_name(runtime: Runtime, namespace: str, name: str, logger: kopf.Logger) -> None:
    """Reconcile a resource for an event of something it serves: a Deployment it wired changed
    (in rehearsal mode its template is the rehearsal's input, and a change is drift), or a
    serving pod became ready (its log says whether it started warm)."""
    with runtime.lock(namespace, name):
        _reconcile_named(runtime, namespace, name, logger)


def _reconcile_named(runtime: Runtime, namespace: str, name: str, logger: kopf.Logger) -> None:
    """Reconcile the resource as it is now (an event of its Job or pod carries that, not the resource)."""
    try:
        body = runtime.api.get(kubeapi.MODELWARMUPS, namespace, name)
    except errors.KubeApiError as error:
        if error.not_found:
            return  # deleted meanwhile: its Jobs are garbage-collected
        raise
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    reconcile(runtime, body, logger)


def ensure_peering(runtime: Runtime, settings: OperatorSettings) -> None:
    """Create the kopf peering object(s) the replicas share, if missing: kopf only updates one.

    One ClusterKopfPeering when watching every namespace, else a KopfPeering in each watched one.
    """
    body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": settings.peering_name}}
    targets = (
        [(kubeapi.CLUSTER_PEERINGS, None)]
        if not settings.namespaces
        else [(kubeapi.PEERINGS, namespace) for namespace in settings.namespaces]
    )
    for kind, namespace in targets:
        kind_name = "ClusterKopfPeering" if namespace is None else "KopfPeering"
        try:
            runtime.api.create(kind, namespace, {**body, "kind": kind_name})
        except errors.KubeApiError as error:
            if not error.conflict:
                raise


def unwire(runtime: Runtime, body: dict[str, Any], logger: kopf.Logger) -> None:
    """Remove what this resource added to Deployments; the cache stays (retention policy)."""
    meta = body["metadata"]
    namespace, name = meta.get("namespace") or "default", meta["name"]
    with runtime.lock(namespace, name):
        for deployment in runtime.api.list(kubeapi.DEPLOYMENTS, namespace):
            if serving.wired_by(deployment) != name:
                continue
            template = deployment.get("spec", {}).get("template", {})
            patch = serving.json_patch(deployment, rehearsal.fully_unwired(template), owner=None)
            runtime.api.json_patch(kubeapi.DEPLOYMENTS, namespace, deployment["metadata"]["name"], patch)
            logger.info("unwired Deployment %s", deployment["metadata"]["name"])
    runtime.metrics.forget(namespace, name)
    runtime.forget(namespace, name)
