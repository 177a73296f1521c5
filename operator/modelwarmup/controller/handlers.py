"""kopf handlers: thin triggers for one level-based reconcile.

Every trigger (create, update, resume, an event of a Job we own, a slow timer) runs the same
:func:`reconcile`: validate the body at the edge, observe, decide, apply, write status once.
Handlers are registered on a registry passed in, so tests can run a fresh operator per case;
``kopf run -m modelwarmup.controller.main`` registers them on kopf's default registry.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

import kopf
import pydantic

from modelwarmup import errors
from modelwarmup.api import resource
from modelwarmup.api.resource import ModelWarmup
from modelwarmup.api.status import ModelWarmupStatus
from modelwarmup.controller import apply, conditions, decide, kubeapi, naming, observe, serving
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
        self._locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)

    def lock(self, namespace: str, name: str) -> threading.Lock:
        return self._locks[(namespace, name)]


def _invalid(runtime: Runtime, body: dict[str, Any], problems: list[str], logger: logging.Logger) -> None:
    """Report an invalid spec in status and (on transition) an Event; never retry it."""
    meta = body.get("metadata", {})
    namespace, name = meta.get("namespace") or "default", meta["name"]
    previous = ModelWarmupStatus.model_validate(body.get("status") or {})
    message = "; ".join(problems)[:1024]
    wanted = [(t, "False", "InvalidSpec", message) for t in conditions.ORDER]
    new = conditions.merge(previous.conditions, wanted, generation=meta.get("generation"), at=conditions.now())
    status = ModelWarmupStatus(observed_generation=meta.get("generation"), conditions=new)
    runtime.api.merge_patch(
        kubeapi.MODELWARMUPS, namespace, name, {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}, subresource="status"
    )
    if conditions.transitions(previous.conditions, new[:1]):
        stub = ModelWarmup.model_construct(metadata=resource.ObjectMeta(name=name, namespace=namespace, uid=meta.get("uid")))
        apply.post_event(runtime.api, stub, "Warning", "InvalidSpec", message)
    logger.warning("invalid spec: %s", message)


def reconcile(runtime: Runtime, body: dict[str, Any], logger: logging.Logger) -> None:
    """Observe, decide, apply, for one resource body."""
    meta = body.get("metadata", {})
    namespace = meta.get("namespace") or "default"
    body = {**body, "metadata": {**meta, "namespace": namespace}}
    with runtime.lock(namespace, meta["name"]):
        runtime.metrics.reconciles.inc()
        try:
            mw = ModelWarmup.from_body(body)
        except pydantic.ValidationError as error:
            _invalid(runtime, body, errors.describe_validation_error(error, root=""), logger)
            return
        try:
            observed = observe.observe(runtime.api, mw)
            plan = decide.decide(observed, runtime.settings, now=conditions.now())
            retry = apply.apply(runtime.api, mw, plan, logger)
        except kubeapi.ApiError as error:
            runtime.metrics.reconcile_errors.inc()
            raise kopf.TemporaryError(f"API error, will retry: {error}", delay=15) from None
        runtime.metrics.record(namespace, mw.metadata.name, mw.status, plan.status)
        if retry:
            raise kopf.TemporaryError(f"Deployments changed while patching: {', '.join(retry)}", delay=2)


def _reconcile_by_name(runtime: Runtime, namespace: str, name: str, logger: logging.Logger) -> None:
    try:
        body = runtime.api.get(kubeapi.MODELWARMUPS, namespace, name)
    except kubeapi.ApiError as error:
        if error.not_found:
            return  # deleted meanwhile: its Jobs are garbage-collected
        raise
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    reconcile(runtime, body, logger)


def unwire(runtime: Runtime, body: dict[str, Any], logger: logging.Logger) -> None:
    """Remove what this resource added to Deployments; the cache stays (retention policy)."""
    meta = body["metadata"]
    namespace, name = meta.get("namespace") or "default", meta["name"]
    for deployment in runtime.api.list(kubeapi.DEPLOYMENTS, namespace):
        if serving.wired_by(deployment) != name:
            continue
        template = deployment.get("spec", {}).get("template", {})
        patch = serving.json_patch(deployment, serving.unwired_template(template), owner=None)
        runtime.api.json_patch(kubeapi.DEPLOYMENTS, namespace, deployment["metadata"]["name"], patch)
        logger.info("unwired Deployment %s", deployment["metadata"]["name"])
    runtime.metrics.forget(namespace, name)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings, metrics: Metrics | None = None) -> None:
    """Register every handler on ``registry``."""
    metrics = metrics or Metrics()

    @kopf.on.startup(registry=registry)
    def startup(memo: kopf.Memo, **kwargs: Any) -> None:
        memo.runtime = Runtime(settings, KubeApi(settings.kube_server), metrics)
        metrics.serve(settings.metrics_port)
        kopf_settings: kopf.OperatorSettings = kwargs["settings"]
        kopf_settings.persistence.finalizer = FINALIZER
        # The CRD's status schema prunes unknown fields, so kopf keeps its bookkeeping in annotations.
        kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=resource.GROUP)
        kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=resource.GROUP)
        kopf_settings.posting.enabled = False  # our own Events, on condition transitions only

    if settings.kube_server is not None:

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=settings.kube_server or "", insecure=True, scheme="Bearer")

    @kopf.on.resume(*RESOURCE, registry=registry)
    @kopf.on.create(*RESOURCE, registry=registry)
    @kopf.on.update(*RESOURCE, field="spec", registry=registry)
    def on_spec(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
        reconcile(memo.runtime, dict(body), logger)

    @kopf.on.event("batch", "v1", "jobs", labels={naming.MANAGED_BY: naming.OPERATOR}, registry=registry)
    def on_job(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
        runtime: Runtime = memo.runtime
        meta = body.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        owners = {o["name"] for o in meta.get("ownerReferences") or [] if o.get("kind") == resource.KIND}
        # Resources sharing this Job's cache entry wait on it too.
        for other in runtime.api.list(kubeapi.MODELWARMUPS, namespace):
            targets = (other.get("status") or {}).get("targets") or []
            if any(t.get("job") == meta.get("name") for t in targets):
                owners.add(other["metadata"]["name"])
        for name in sorted(owners):
            _reconcile_by_name(runtime, namespace, name, logger)

    @kopf.timer(*RESOURCE, interval=settings.resync_seconds, initial_delay=settings.resync_seconds, registry=registry)
    def resync(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
        reconcile(memo.runtime, dict(body), logger)

    @kopf.on.delete(*RESOURCE, registry=registry)
    def on_delete(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
        unwire(memo.runtime, dict(body), logger)
