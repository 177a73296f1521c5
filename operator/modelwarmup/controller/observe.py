"""Read what the cluster holds for one ModelWarmup: its Jobs, their Pods' results, Deployments.

A handful of requests per reconcile: one list of the namespace's warm-up Jobs, one list of their
Pods (and of the Jobs' FailedCreate Events when a Job has no pod yet), one read per named
Deployment (or one list by selector), one read of a claim to create.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from typing import Any

from modelwarmup import errors
from modelwarmup.api.resource import ModelWarmup
from modelwarmup.contracts import wiring
from modelwarmup.contracts.summary import WorkerSummary
from modelwarmup.controller import kubeapi, naming, served, serving
from modelwarmup.controller.decide import JobPhase, JobView, Observed, pick_job
from modelwarmup.controller.kubeapi import KubeApi, KubeObject
from modelwarmup.controller.resolution import Resolution


def job_phase(job: KubeObject) -> JobPhase:
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded"
        if condition.get("type") in ("Failed", "FailureTarget"):
            return "Failed"
    if status.get("active") or status.get("ready"):
        return "Running"
    return "Pending"


def job_attempts(job: KubeObject) -> int:
    """Pods the Job has run or runs: finished ones and active ones."""
    status = job.get("status") or {}
    return int(status.get("failed") or 0) + int(status.get("succeeded") or 0) + int(status.get("active") or 0)


def _termination(pod: KubeObject) -> tuple[str, float]:
    """The worker's termination message and when its container finished."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated:
            return str(terminated.get("message") or ""), _sortable(terminated.get("finishedAt"))
    return "", 0.0


# Reasons a pod's container waits that will not pass by themselves: each needs a person (a
# Secret to create, an image name to fix, a node to add). The Job controller counts such pods as
# active, so without these the warm-up would look like it is running until its deadline.
STUCK_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
    }
)


def stuck(pod: KubeObject) -> tuple[str, str] | None:
    """Why a pod cannot start, as (reason, message), or None while it may still start."""
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return str(waiting["reason"]), str(waiting.get("message") or "")[:500]
    for condition in status.get("conditions") or []:
        scheduled = (condition.get("type"), condition.get("status"), condition.get("reason"))
        if scheduled == ("PodScheduled", "False", "Unschedulable"):
            return "Unschedulable", str(condition.get("message") or "")[:500]
    return None


def failed_creates(api: KubeApi, namespace: str, jobs: list[KubeObject]) -> dict[str, tuple[str, str]]:
    """Why the Job controller could not create these Jobs' pods, by Job name: the message of its
    latest ``FailedCreate`` Event (a ServiceAccount that does not exist, a quota, an admission
    webhook). Such a Job has no pod and says nothing in its status; one list for all of them."""
    uids = {job["metadata"].get("uid"): job["metadata"]["name"] for job in jobs}
    found = api.list(
        kubeapi.EVENTS, namespace, fields={"involvedObject.kind": "Job", "reason": "FailedCreate"}
    )
    latest: dict[str, tuple[float, str]] = {}
    for event in found:
        involved = event.get("involvedObject") or {}
        name = uids.get(involved.get("uid"))
        if name is None or event.get("reason") != "FailedCreate":
            continue  # another Job's, or an earlier Job's of the same name
        at = _sortable(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp"))
        if at >= latest.get(name, (-1.0, ""))[0]:
            latest[name] = (at, str(event.get("message") or "")[:500])
    return {name: ("FailedCreate", message) for name, (_, message) in latest.items()}


def _sortable(timestamp: Any) -> float:
    if not timestamp:
        return 0.0
    try:
        return datetime.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def job_views(api: KubeApi, namespace: str, keys: list[str]) -> dict[str, list[JobView]]:
    """The warm-up Jobs of these warm-up keys (any resource's), by key, with their last pod's result.

    Selected by the warm-up key label on the server, so a reconcile reads its own few Jobs and
    Pods however many other warm-ups the namespace holds (the Pods carry the template's labels).
    """
    labels, label_in = {wiring.MANAGED_BY: wiring.OPERATOR}, (wiring.LABEL_WARMUP_KEY, keys)
    found = api.list(kubeapi.JOBS, namespace, labels=labels, label_in=label_in)
    if not found:
        return {}
    pods = api.list(kubeapi.PODS, namespace, labels=labels, label_in=label_in)
    results: dict[str, list[tuple[float, str]]] = defaultdict(list)
    images: dict[str, tuple[float, str]] = {}  # the latest pod's image, by digest, per Job
    waiting: dict[str, tuple[str, str]] = {}
    with_pods: set[str] = set()
    for pod in pods:
        labels = pod.get("metadata", {}).get("labels") or {}
        job = labels.get("job-name") or labels.get("batch.kubernetes.io/job-name")
        if not job:
            job = next(
                (o["name"] for o in pod["metadata"].get("ownerReferences") or [] if o.get("kind") == "Job"),
                None,
            )
        if job:
            with_pods.add(job)
        message, finished = _termination(pod)
        if job and message:
            results[job].append((finished, message))
        if job and (image := str(_container_status(pod).get("imageID") or "")):
            images[job] = max(images.get(job, (-1.0, "")), (finished, image))
        if job and (why := stuck(pod)) is not None:
            waiting[job] = why
    podless = [j for j in found if j["metadata"]["name"] not in with_pods and job_phase(j) == "Pending"]
    if podless:
        waiting.update(failed_creates(api, namespace, podless))
    views: dict[str, list[JobView]] = defaultdict(list)
    for job in found:
        meta = job.get("metadata", {})
        labels = meta.get("labels") or {}
        owner = next(
            (o["name"] for o in meta.get("ownerReferences") or [] if o.get("kind") == "ModelWarmup"), None
        )
        message = max(results.get(meta["name"], [(0.0, "")]))[1]
        summary = WorkerSummary.parse(message)
        views[labels.get(wiring.LABEL_WARMUP_KEY, "")].append(
            JobView(
                name=meta["name"],
                owner=owner,
                phase=job_phase(job),
                attempts=job_attempts(job),
                summary=summary,
                message=(summary.message if summary is not None else "") or message[-500:],
                stuck=waiting.get(meta["name"]),
                image_id=images.get(meta["name"], (0.0, ""))[1],
            )
        )
    return dict(views)


def _selected(deployment: KubeObject, match_labels: dict[str, str], expressions: list[Any]) -> bool:
    labels = deployment.get("metadata", {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expression in expressions:
        present, value = expression.key in labels, labels.get(expression.key)
        ok = {
            "In": present and value in expression.values,
            "NotIn": not present or value not in expression.values,
            "Exists": present,
            "DoesNotExist": not present,
        }[expression.operator]
        if not ok:
            return False
    return True


def deployments(api: KubeApi, mw: ModelWarmup) -> tuple[dict[str, KubeObject], tuple[str, ...]]:
    """The Deployments the resource names or selects, and the named ones that do not exist."""
    serving = mw.spec.serving
    namespace = mw.metadata.namespace or "default"
    if serving is None:
        return {}, ()
    if serving.selector is not None:
        selector = serving.selector
        listed = api.list(kubeapi.DEPLOYMENTS, namespace, labels=dict(selector.match_labels) or None)
        chosen = [
            d for d in listed if _selected(d, dict(selector.match_labels), list(selector.match_expressions))
        ]
        return {d["metadata"]["name"]: d for d in chosen}, ()
    found: dict[str, KubeObject] = {}
    missing: list[str] = []
    for name in serving.names:
        try:
            found[name] = api.get(kubeapi.DEPLOYMENTS, namespace, name)
        except errors.KubeApiError as error:
            if not error.not_found:
                raise
            missing.append(name)
    return found, tuple(missing)


def _container_status(pod: KubeObject, container: str | None = None) -> KubeObject:
    """A container's status (the first one's when ``container`` is None), or {}."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if container is None or status.get("name") == container:
            return dict(status)
    return {}


def _container_ready(pod: KubeObject, container: str) -> bool:
    status = _container_status(pod, container)
    return bool(status.get("ready")) and "running" in (status.get("state") or {})


def serving_logs(api: KubeApi, mw: ModelWarmup, found: dict[str, KubeObject]) -> tuple[served.PodLogs, ...]:
    """The first lines of the logs of one new ready pod per wired Deployment whose start has no
    verdict yet (one pod list and two log reads each; none once every verdict is in)."""
    key = mw.status.model_key
    if mw.spec.serving is None or key is None:
        return ()
    namespace = mw.metadata.namespace or "default"
    wired = [name for name, d in sorted(found.items()) if serving.current_key(d) == key]
    logs = []
    for name in served.unjudged(mw.status, wired):
        deployment = found[name]
        init, server = served.containers(mw, deployment.get("spec", {}).get("template", {}))
        selector = (deployment.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        pods = [
            pod
            for pod in api.list(kubeapi.PODS, namespace, labels=dict(selector) or None)
            if (pod["metadata"].get("annotations") or {}).get(wiring.ANNOTATION_MODEL_KEY) == key
            and not pod["metadata"].get("deletionTimestamp")
            and server
            and _container_ready(pod, server)
        ]
        if not pods:
            continue
        pod = max(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
        pod_name = pod["metadata"]["name"]
        texts = {"init": "", "server": ""}
        try:
            texts["server"] = api.log(namespace, pod_name, server, limit_bytes=served.LOG_BYTES)
            names = {c.get("name") for c in pod.get("spec", {}).get("initContainers") or []}
            if init in names:
                texts["init"] = api.log(namespace, pod_name, init, limit_bytes=served.LOG_BYTES)
        except errors.KubeApiError as error:
            logs.append(served.PodLogs(name, pod_name, key, unreadable=str(error)[:300]))
            continue
        image_id = str(_container_status(pod, server).get("imageID") or "")
        logs.append(served.PodLogs(name, pod_name, key, image_id=image_id, **texts))
    return tuple(logs)


def claim_exists(api: KubeApi, mw: ModelWarmup) -> bool:
    if mw.spec.cache.create is None:
        return True
    try:
        api.get(kubeapi.CLAIMS, mw.metadata.namespace or "default", mw.spec.cache.create.name)
    except errors.KubeApiError as error:
        if error.not_found:
            return False
        raise
    return True


def other_keys(api: KubeApi, mw: ModelWarmup) -> tuple[str, ...]:
    """Cache keys other resources on the same claim and subPath use: a prune must keep them.

    Read only for resources whose retention deletes superseded entries (one list per reconcile).
    """
    if mw.spec.cache.retention != "DeleteSuperseded":
        return ()
    used: set[str] = set()
    for other in api.list(kubeapi.MODELWARMUPS, mw.metadata.namespace or "default"):
        if other.get("metadata", {}).get("name") == mw.metadata.name:
            continue
        cache = (other.get("spec") or {}).get("cache") or {}
        claim = (cache.get("persistentVolumeClaim") or {}).get("claimName") or (
            cache.get("create") or {}
        ).get("name", "modelwarmup-cache")
        key = (other.get("status") or {}).get("modelKey")
        if key and claim == mw.spec.cache.claim_name and cache.get("subPath", "") == mw.spec.cache.sub_path:
            used.add(str(key))
    return tuple(sorted(used))


def own_jobs(api: KubeApi, mw: ModelWarmup) -> tuple[tuple[str, str], ...]:
    """(name, warm-up key) of the unfinished warm-up Jobs this resource created, for any spec it had.

    Finished ones cost nothing any more and keep the record of what they did (the worker's summary).
    """
    labels = {wiring.MANAGED_BY: wiring.OPERATOR, wiring.LABEL_RESOURCE: naming.label_value(mw.metadata.name)}
    found = api.list(kubeapi.JOBS, mw.metadata.namespace or "default", labels=labels)
    return tuple(
        (job["metadata"]["name"], (job["metadata"].get("labels") or {}).get(wiring.LABEL_WARMUP_KEY, ""))
        for job in found
        if wiring.LABEL_WARMUP_KEY in (job["metadata"].get("labels") or {})
        and job_phase(job) in ("Pending", "Running")
    )


def resolved(api: KubeApi, mw: ModelWarmup, pending: Resolution) -> Resolution:
    """The resolution with the pins its Job reported, once that Job (this resource's or a shared
    one) succeeded; as it was otherwise."""
    namespace = mw.metadata.namespace or "default"
    views = job_views(api, namespace, [pending.key]).get(pending.key, [])
    view = pick_job(views, mw.metadata.name)
    if view is not None and view.phase == "Succeeded" and view.summary is not None and view.summary.pins:
        return Resolution(pending.key, view.summary.pins)
    return pending


def observe(
    api: KubeApi,
    mw: ModelWarmup,
    keys: list[str],
    *,
    wanted_elsewhere: frozenset[str],
    resolution: Resolution | None = None,
) -> Observed:
    """What the cluster holds for ``mw``, whose targets' warm-up keys are ``keys``.

    Its Jobs of earlier specs are listed only when the spec or its pinned commits changed since
    the last status (only then can a key have been superseded); ``wanted_elsewhere`` are keys
    other resources wait on.
    """
    namespace = mw.metadata.namespace or "default"
    found, missing = deployments(api, mw)
    # A new resource (no status yet) has no Jobs of an earlier spec.
    seen = mw.status.observed_generation
    changed = seen is not None and seen != mw.metadata.generation
    if resolution is not None and resolution.done:  # e.g. a refresh moved the branch's commit
        changed = changed or mw.status.resolution_key not in (None, resolution.key)
    return Observed(
        resolution=resolution,
        own_jobs=own_jobs(api, mw) if changed else (),
        wanted_elsewhere=wanted_elsewhere,
        other_keys=other_keys(api, mw),
        mw=mw,
        jobs_by_key=job_views(api, namespace, keys),
        deployments=found,
        missing_deployments=missing,
        serving_logs=serving_logs(api, mw, found),
        claim_exists=claim_exists(api, mw),
    )
