"""kopf handlers: thin triggers for one level-based reconcile.

Every trigger (create, update, resume, an event of a Job we own, a slow timer) runs the same
:func:`modelwarmup.controller.reconcile.reconcile`: validate the body at the edge, observe,
decide, apply, write status once. What the handlers share lives in :mod:`.memo`.
Handlers are registered on a registry passed in, so tests can run a fresh operator per case;
``kopf run -m modelwarmup.controller.kopf_entry`` registers them on kopf's default registry.
"""

from __future__ import annotations

from typing import Any

import kopf

from modelwarmup import errors
from modelwarmup.api import resource
from modelwarmup.contracts import wiring
from modelwarmup.controller import credentials
from modelwarmup.controller import reconcile as service
from modelwarmup.controller.kubeapi import KubeApi
from modelwarmup.controller.memo import Runtime
from modelwarmup.controller.metrics import Metrics
from modelwarmup.controller.settings import OperatorSettings

RESOURCE = (resource.GROUP, resource.VERSION, resource.PLURAL)
FINALIZER = f"{resource.GROUP}/serving-wiring"


def _concerned(runtime: Runtime, meta: Any, owners: set[str]) -> tuple[str, list[str]]:
    """The namespace and the resources an event of a warm-up Job or pod concerns: its owners and
    every resource waiting on its warm-up key (resources sharing one entry wait on one Job)."""
    namespace = meta.get("namespace") or "default"
    key = (meta.get("labels") or {}).get(wiring.LABEL_WARMUP_KEY, "")
    return namespace, sorted(owners | runtime.waiting_on(namespace, key))


def _waits_for_a_pod(status: kopf.Status, **_: Any) -> bool:
    """A target's Job has no pod whose state explains the wait (a pod that cannot start is
    watched). Why there is none may show only as an Event on the Job (``FailedCreate``: a
    ServiceAccount that does not exist, a quota), which changes neither the Job nor a pod: nothing
    would trigger a reconcile, so a timer looks while this holds (kopf stops it once the status
    says otherwise), less and less often (:meth:`Runtime.recheck_due`)."""
    return service.waits_unexplained(status)


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
        if settings.peering:
            service.ensure_peering(memo.runtime, settings)

    credentials.register_login(registry, settings.credentials_source())

    @kopf.on.resume(*RESOURCE, registry=registry)
    @kopf.on.create(*RESOURCE, registry=registry)
    @kopf.on.update(*RESOURCE, field="spec", registry=registry)
    def on_spec(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        service.reconcile(memo.runtime, dict(body), logger)

    @kopf.on.update(
        *RESOURCE, field=("metadata", "annotations", wiring.ANNOTATION_REFRESH), registry=registry
    )
    def on_refresh(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        """A new refresh annotation: resolve the spec's branches and tags again (see resolution)."""
        service.reconcile(memo.runtime, dict(body), logger)

    @kopf.on.event("batch", "v1", "jobs", labels={wiring.MANAGED_BY: wiring.OPERATOR}, registry=registry)
    def on_job(body: kopf.Body, type: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        meta = body.get("metadata", {})
        owners = {o["name"] for o in meta.get("ownerReferences") or [] if o.get("kind") == resource.KIND}
        namespace, names = _concerned(memo.runtime, meta, owners)
        for name in names:
            service.reconcile_for_job(memo.runtime, namespace, name, dict(body), type, logger)

    @kopf.on.event(
        "apps", "v1", "deployments", annotations={wiring.ANNOTATION_WIRED_BY: kopf.PRESENT}, registry=registry
    )
    def on_deployment(body: kopf.Body, type: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        meta = body.get("metadata", {})
        owner = (meta.get("annotations") or {}).get(wiring.ANNOTATION_WIRED_BY)
        if type in ("MODIFIED", None) and owner:  # None: the watch's initial listing
            service.reconcile_by_name(memo.runtime, meta.get("namespace") or "default", owner, logger)

    @kopf.on.event("", "v1", "pods", labels={wiring.MANAGED_BY: wiring.OPERATOR}, registry=registry)
    def on_pod(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        namespace, names = _concerned(memo.runtime, body.get("metadata", {}), set())
        for name in names:
            service.reconcile_for_pod(memo.runtime, namespace, name, dict(body), logger)

    @kopf.on.event(
        "", "v1", "pods", annotations={wiring.ANNOTATION_MODEL_KEY: kopf.PRESENT}, registry=registry
    )
    def on_serving_pod(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        """A serving pod of a wired Deployment: once ready, its log says whether it started warm."""
        meta = body.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        key = (meta.get("annotations") or {}).get(wiring.ANNOTATION_MODEL_KEY, "")
        statuses = (body.get("status") or {}).get("containerStatuses") or []
        if key and any(s.get("ready") for s in statuses):
            for name in memo.runtime.serving_unjudged(namespace, key):
                service.reconcile_by_name(memo.runtime, namespace, name, logger)

    @kopf.timer(
        *RESOURCE, interval=settings.resync_seconds, initial_delay=settings.resync_seconds, registry=registry
    )
    def resync(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        service.reconcile(memo.runtime, dict(body), logger)

    @kopf.timer(
        *RESOURCE,
        interval=settings.pending_recheck_seconds,
        initial_delay=settings.pending_recheck_seconds,
        when=_waits_for_a_pod,
        registry=registry,
    )
    def recheck_pending(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        meta = body.get("metadata", {})
        if memo.runtime.recheck_due(meta.get("namespace") or "default", meta["name"]):
            service.reconcile(memo.runtime, dict(body), logger)

    @kopf.on.delete(*RESOURCE, registry=registry)
    def on_delete(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        try:
            service.unwire(memo.runtime, dict(body), logger)
        except errors.KubeApiError as error:  # e.g. a Deployment changed under our patch: list again
            memo.runtime.metrics.reconcile_errors.inc()
            raise kopf.TemporaryError(f"unwiring failed, will retry: {error}", delay=2) from None
