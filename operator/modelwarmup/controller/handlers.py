"""kopf handlers: thin triggers for one level-based reconcile.

Every trigger (create, update, resume, an event of a Job we own, a slow timer) runs the same
:func:`reconcile`: validate the body at the edge, observe, decide, apply, write status once.
Handlers are registered on a registry passed in, so tests can run a fresh operator per case;
``kopf run -m modelwarmup.controller.kopf_entry`` registers them on kopf's default registry.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import kopf
import pydantic

from modelwarmup import errors
from modelwarmup.api import resource
from modelwarmup.api.resource import ModelWarmup
from modelwarmup.api.status import ModelWarmupStatus
from modelwarmup.contracts import wiring
from modelwarmup.controller import apply, conditions, credentials, decide, kubeapi, naming, observe, serving
from modelwarmup.controller.kubeapi import KubeApi
from modelwarmup.controller.metrics import Metrics
from modelwarmup.controller.settings import OperatorSettings

RESOURCE = (resource.GROUP, resource.VERSION, resource.PLURAL)
FINALIZER = f"{resource.GROUP}/serving-wiring"


class Runtime:
    """What handlers share, kept in kopf's memo: settings, the API client, metrics, locks."""

    def __init__(self, settings: OperatorSettings, api: KubeApi, metrics: Metrics) -> None:
        self.settings = settings
        self.api = api
        self.metrics = metrics
        self._locks: dict[tuple[str, str], threading.RLock] = defaultdict(threading.RLock)
        self._key_locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        # Which resources wait on which warm-up key, so that a Job's event reaches every resource
        # sharing its entry without listing the namespace's ModelWarmups. Every resource is
        # reconciled when the operator starts (resume), which fills it.
        self._waiting: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._keys_of: dict[tuple[str, str], set[str]] = {}
        self._written: dict[tuple[str, str], dict[str, Any]] = {}
        self._guard = threading.Lock()

    def lock(self, namespace: str, name: str) -> threading.RLock:
        """One resource's lock: its reconciles run one at a time (re-entrant for a caller holding it)."""
        with self._guard:
            return self._locks[(namespace, name)]

    @contextlib.contextmanager
    def warming(self, namespace: str, keys: Iterable[str]) -> Iterator[None]:
        """Hold the locks of these warm-up keys (sorted: no deadlock between two resources).

        Two resources asking for the same entry then observe and create one after the other, so
        the second sees the first one's Job and shares it instead of creating its own.
        """
        with self._guard:
            locks = [self._key_locks[(namespace, key)] for key in sorted(set(keys))]
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            yield

    def waits(self, namespace: str, name: str, keys: Iterable[str]) -> None:
        """Record that ``name`` waits on these warm-up keys (its targets' current ones)."""
        with self._guard:
            for key in self._keys_of.pop((namespace, name), set()):
                self._waiting[(namespace, key)].discard(name)
            self._keys_of[(namespace, name)] = set(keys)
            for key in self._keys_of[(namespace, name)]:
                self._waiting[(namespace, key)].add(name)

    def waiting_on(self, namespace: str, key: str) -> set[str]:
        """The resources whose targets want the entry of this warm-up key."""
        with self._guard:
            return set(self._waiting.get((namespace, key), ()))

    def written(
        self, namespace: str, name: str, status: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The status this process last wrote for a resource (and, given one, remember it).

        A body from a watch event or a read can predate our own last status write (two triggers
        for one resource in quick succession); judging transitions against it would post their
        Events twice. Only the operator writes status, so its last write is the latest status.
        """
        with self._guard:
            if status is not None:
                self._written[(namespace, name)] = status
            return self._written.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        self.waits(namespace, name, ())
        with self._guard:
            self._locks.pop((namespace, name), None)
            self._keys_of.pop((namespace, name), None)
            self._written.pop((namespace, name), None)


def _invalid(runtime: Runtime, body: dict[str, Any], problems: list[str], logger: kopf.Logger) -> None:
    """Report an invalid spec in status and (on transition) an Event; never retry it."""
    meta = body.get("metadata", {})
    namespace, name = meta.get("namespace") or "default", meta["name"]
    previous = ModelWarmupStatus.model_validate(body.get("status") or {})
    message = "; ".join(problems)[:1024]
    wanted = [(t, "False", "InvalidSpec", message) for t in conditions.ORDER]
    new = conditions.merge(
        previous.conditions, wanted, generation=meta.get("generation"), at=conditions.now()
    )
    status = ModelWarmupStatus(observed_generation=meta.get("generation"), conditions=new)
    if (status.observed_generation, status.conditions) != (previous.observed_generation, previous.conditions):
        dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        runtime.api.merge_patch(
            kubeapi.MODELWARMUPS, namespace, name, {"status": dumped}, subresource="status"
        )
        runtime.written(namespace, name, {**(body.get("status") or {}), **dumped})  # a merge patch
    if conditions.transitions(previous.conditions, new[:1]):
        apply.post_event(
            runtime.api,
            resource.ObjectMeta(name=name, namespace=namespace, uid=meta.get("uid")),
            "Warning",
            "InvalidSpec",
            message,
        )
    logger.warning("invalid spec: %s", message)


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
            _invalid(runtime, body, errors.describe_validation_error(error, root=""), logger)
            return
        image = mw.spec.worker.image or runtime.settings.worker_image
        keys = [naming.warmup_key(mw.spec, target, image) for target in mw.spec.targets]
        runtime.waits(namespace, mw.metadata.name, keys)
        try:
            with runtime.warming(namespace, keys):
                observed = observe.observe(runtime.api, mw, keys)
                plan = decide.decide(observed, runtime.settings, now=conditions.now())
                retry = apply.apply(runtime.api, mw, plan, logger)
                runtime.written(namespace, mw.metadata.name, apply.status_body(plan)["status"])
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


def _reconcile_for_job(
    runtime: Runtime, namespace: str, name: str, job: dict[str, Any], event: str, logger: kopf.Logger
) -> None:
    """Reconcile a resource waiting on ``job`` if the Job's event may change its status."""
    with runtime.lock(namespace, name):  # after a reconcile in flight: judge news by what it wrote
        if not _news(runtime, namespace, name, job, event):
            return
        try:
            body = runtime.api.get(kubeapi.MODELWARMUPS, namespace, name)
        except errors.KubeApiError as error:
            if error.not_found:
                return  # deleted meanwhile: its Jobs are garbage-collected
            raise
        if body.get("metadata", {}).get("deletionTimestamp"):
            return
        reconcile(runtime, body, logger)


def unwire(runtime: Runtime, body: dict[str, Any], logger: kopf.Logger) -> None:
    """Remove what this resource added to Deployments; the cache stays (retention policy)."""
    meta = body["metadata"]
    namespace, name = meta.get("namespace") or "default", meta["name"]
    with runtime.lock(namespace, name):
        for deployment in runtime.api.list(kubeapi.DEPLOYMENTS, namespace):
            if serving.wired_by(deployment) != name:
                continue
            template = deployment.get("spec", {}).get("template", {})
            patch = serving.json_patch(deployment, serving.unwired_template(template), owner=None)
            runtime.api.json_patch(kubeapi.DEPLOYMENTS, namespace, deployment["metadata"]["name"], patch)
            logger.info("unwired Deployment %s", deployment["metadata"]["name"])
    runtime.metrics.forget(namespace, name)
    runtime.forget(namespace, name)


def register(
    registry: kopf.OperatorRegistry, settings: OperatorSettings, metrics: Metrics | None = None
) -> None:
    """Register every handler on ``registry``."""
    metrics = metrics or Metrics()

    @kopf.on.startup(registry=registry)
    def startup(memo: kopf.Memo, **kwargs: Any) -> None:
        memo.runtime = Runtime(settings, KubeApi(credentials.load(settings.credentials_source())), metrics)
        metrics.serve(settings.metrics_port)
        kopf_settings: kopf.OperatorSettings = kwargs["settings"]
        kopf_settings.persistence.finalizer = FINALIZER
        # The CRD's status schema prunes unknown fields, so kopf keeps its bookkeeping in annotations.
        kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=resource.GROUP)
        kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=resource.GROUP)
        kopf_settings.posting.enabled = False  # our own Events, on condition transitions only

    credentials.register_login(registry, settings.credentials_source())

    @kopf.on.resume(*RESOURCE, registry=registry)
    @kopf.on.create(*RESOURCE, registry=registry)
    @kopf.on.update(*RESOURCE, field="spec", registry=registry)
    def on_spec(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        reconcile(memo.runtime, dict(body), logger)

    @kopf.on.event("batch", "v1", "jobs", labels={wiring.MANAGED_BY: wiring.OPERATOR}, registry=registry)
    def on_job(body: kopf.Body, type: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        runtime: Runtime = memo.runtime
        meta = body.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        owners = {o["name"] for o in meta.get("ownerReferences") or [] if o.get("kind") == resource.KIND}
        # Resources sharing this Job's cache entry wait on it too.
        key = (meta.get("labels") or {}).get(wiring.LABEL_WARMUP_KEY, "")
        owners |= runtime.waiting_on(namespace, key)
        for name in sorted(owners):
            _reconcile_for_job(runtime, namespace, name, dict(body), type, logger)

    @kopf.timer(
        *RESOURCE, interval=settings.resync_seconds, initial_delay=settings.resync_seconds, registry=registry
    )
    def resync(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        reconcile(memo.runtime, dict(body), logger)

    @kopf.on.delete(*RESOURCE, registry=registry)
    def on_delete(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        try:
            unwire(memo.runtime, dict(body), logger)
        except errors.KubeApiError as error:  # e.g. a Deployment changed under our patch: list again
            memo.runtime.metrics.reconcile_errors.inc()
            raise kopf.TemporaryError(f"unwiring failed, will retry: {error}", delay=2) from None
