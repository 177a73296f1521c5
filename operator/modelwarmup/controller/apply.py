"""Carry out a reconcile plan: create what is missing, patch Deployments, write status, post Events.

Creates treat 409 as "already there" (names are content-derived, so the object is the same).
A Deployment patch that fails its resourceVersion test is left to the next reconcile, which
recomputes it from the new state. Status is written once, through the status subresource, and
only when it changed: a reconcile that finds nothing new makes no write at all.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from modelwarmup import errors
from modelwarmup.api import resource
from modelwarmup.api.resource import ObjectMeta
from modelwarmup.api.status import ModelWarmupStatus
from modelwarmup.controller import conditions, decide, kubeapi
from modelwarmup.controller.decide import Plan
from modelwarmup.controller.kubeapi import KubeApi, KubeObject

Logger = logging.Logger | logging.LoggerAdapter[Any]  # what kopf hands to handlers


def _create(
    api: KubeApi,
    kind: kubeapi.Kind,
    namespace: str,
    body: KubeObject,
    log: Logger,
    refused: list[decide.Rejection],
) -> None:
    """Create an object; a 409 means it is there already; a refusal is added to ``refused``, not raised."""
    try:
        api.create(kind, namespace, body)
        log.info("created %s %s", kind.plural, body["metadata"]["name"])
    except errors.KubeApiError as error:
        if error.invalid:
            log.warning(
                "the API server refused %s %s: %s", kind.plural, body["metadata"]["name"], error.message
            )
            refused.append(
                decide.Rejection(body.get("kind", kind.plural), body["metadata"]["name"], error.message)
            )
        elif error.status != 409:
            raise


def status_body(plan: Plan) -> KubeObject:
    return {"status": plan.status.model_dump(mode="json", by_alias=True, exclude_none=True)}


def post_event(api: KubeApi, meta: ObjectMeta, type_: str, reason: str, message: str) -> None:
    """An Event about the ModelWarmup with this metadata."""
    namespace = meta.namespace or "default"
    at = conditions.now()
    api.create(
        kubeapi.EVENTS,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Event",
            # An Event's name is a DNS subdomain of at most 253 characters, like the resource's.
            "metadata": {"name": f"{meta.name[:236]}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": resource.API_VERSION,
                "kind": resource.KIND,
                "name": meta.name,
                "namespace": namespace,
                "uid": meta.uid,
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "source": {"component": "modelwarmup-operator"},
            "reportingComponent": "modelwarmup.dev/operator",
            "firstTimestamp": at,
            "lastTimestamp": at,
            "count": 1,
        },
    )


def apply(
    api: KubeApi, meta: ObjectMeta, current: ModelWarmupStatus, plan: Plan, log: Logger, *, now: str
) -> tuple[Plan, list[str]]:
    """Apply the plan to the resource with this metadata and status; returns the plan as carried
    out (its status telling what the API server refused) and the Deployments to patch again."""
    namespace = meta.namespace or "default"
    rejections: list[decide.Rejection] = []
    if plan.create_claim is not None:
        _create(api, kubeapi.CLAIMS, namespace, plan.create_claim, log, rejections)
    for job in plan.create_jobs:
        _create(api, kubeapi.JOBS, namespace, job, log, rejections)
    retry: list[str] = []
    for name, patch in plan.patches.items():
        try:
            api.json_patch(kubeapi.DEPLOYMENTS, namespace, name, patch)
            log.info("wired Deployment %s to model key %s", name, plan.status.model_key)
        except errors.KubeApiError as error:
            if error.invalid:
                log.warning("the API server refused the wiring of Deployment %s: %s", name, error.message)
                rejections.append(decide.Rejection("Deployment", name, error.message))
            elif error.conflict:
                log.info("Deployment %s changed while we patched it; will retry", name)
                retry.append(name)
            else:
                raise
    if plan.prune_job is not None and not retry and not rejections:
        # Only once every Deployment is on the new key. If a patch must be retried, the superseded
        # entries stay (as with Retain): never a prune under a Deployment still on the old key.
        _create(api, kubeapi.JOBS, namespace, plan.prune_job, log, rejections)
    for name in plan.delete_jobs:
        try:
            api.delete(kubeapi.JOBS, namespace, name)
            log.info("deleted superseded Job %s", name)
        except errors.KubeApiError as error:
            if not error.not_found:
                raise
    if rejections:
        plan = decide.with_rejections(plan, current, rejections, now=now)
    if status_body(plan)["status"] != current.model_dump(mode="json", by_alias=True, exclude_none=True):
        api.merge_patch(kubeapi.MODELWARMUPS, namespace, meta.name, status_body(plan), subresource="status")
    for type_, reason, message in plan.events:
        post_event(api, meta, type_, reason, message)
    return plan, retry
