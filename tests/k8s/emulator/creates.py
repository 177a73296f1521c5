"""POST: system metadata, generateName, namespaces, CRDs.

A part of :class:`~.core.ApiServerEmulator` (a mixin: the state lives there)."""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Mapping
from typing import Any

import kmock
from kmock import Response  # type: ignore[attr-defined]  # not in kmock.__all__

from .. import semantics
from . import admission
from .common import (
    _NAME_CHARS,
    CRDS,
    NAMESPACES,
    PODS,
    SERVICE_ACCOUNTS,
    api_version_of,
    k8s_error,
    now_rfc3339,
)


class Creates:
    """POST: system metadata, generateName, namespaces, CRDs."""

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        res, info = self._info(request)
        body = request.data
        if not isinstance(body, Mapping):
            raise k8s_error(400, "BadRequest", "the request body must be a JSON object")
        created = self._create(res, info, request.namespace, body, dry_run=bool(request.params.get("dryRun")))
        return Response(status=201, payload=created)

    def _create(
        self,
        res: kmock.resource,
        info: kmock.ResourceInfo,
        url_namespace: str | None,
        request_body: Mapping[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = copy.deepcopy(dict(request_body))
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise k8s_error(400, "BadRequest", "metadata must be an object")

        # GAP-META: the kind & apiVersion default to the URL's; a mismatch is a 400.
        api_version = api_version_of(res)
        if (
            body.setdefault("apiVersion", api_version) != api_version
            or body.setdefault("kind", info.kind) != info.kind
        ):
            raise k8s_error(
                400,
                "BadRequest",
                f"the API version/kind in the data ({body['apiVersion']}/"
                f"{body['kind']}) does not match the expected ({api_version}/{info.kind})",
            )

        # GAP-META: the namespace comes from the URL and must match the body's if given.
        if info.namespaced:
            if url_namespace is None:
                raise k8s_error(405, "MethodNotAllowed", f"{res.plural} must be created in a namespace URL")
            if meta.get("namespace", url_namespace) != url_namespace:
                raise k8s_error(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = url_namespace
            self._ensure_namespace(url_namespace, dry_run=dry_run)
        else:
            meta.pop("namespace", None)

        # GAP-NAME: generateName.
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise k8s_error(
                    422, "Invalid", "metadata.name: Required value: name or generateName is required"
                )
            meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))
        if meta.get("resourceVersion"):
            raise k8s_error(
                500, "InternalError", "resourceVersion should not be set on objects to be created"
            )
        key = self._key(res, info, meta.get("namespace"), meta["name"])
        if self._live(key) is not None:
            raise k8s_error(
                409,
                "AlreadyExists",
                f'{res.plural} "{meta["name"]}" already exists',
                name=meta["name"],
                kind=res.plural,
            )

        # GAP-META: the system fields are always set by the server.
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if self._tracks_generation(res):
            meta["generation"] = 1
        else:
            meta.pop("generation", None)

        # GAP-STATUS: with a status subresource, the status of a new object is not taken
        # from the request (real: reset on create for CRs and built-ins alike).
        if self._has_status(res):
            body.pop("status", None)
        if res == NAMESPACES:
            body["status"] = {"phase": "Active"}
        if res == CRDS:
            self._validate_crd(body)
            body["status"] = self._crd_status(body)
        if res in self._custom:
            body = semantics.prune_custom_object(body, self._schemas.get(res))
        body = {
            "apiVersion": body.pop("apiVersion"),
            "kind": body.pop("kind"),
            "metadata": body.pop("metadata"),
            **body,
        }
        admission.check(res, body)  # GAP-ADMIT
        if res == PODS:
            self._admit_service_account(body)
        if dry_run:
            body["metadata"]["resourceVersion"] = str(self._rv)
            return body

        body["metadata"]["resourceVersion"] = self._next_rv()
        self._store(key, body)
        self._by_uid[meta["uid"]] = key
        self._notify(res, "ADDED", body, None)
        if res == CRDS:
            self._register_crd(body)
        if meta.get("ownerReferences"):
            self._want_gc()  # an owner uid that does not exist makes the object garbage
        return body

    def _admit_service_account(self, pod: Mapping[str, Any]) -> None:
        """The ServiceAccount admission plugin: a pod naming a ServiceAccount that does not exist is
        forbidden (the Job controller then posts ``FailedCreate`` and retries). Every namespace has
        "default" (real: created by the ServiceAccount controller; here always there)."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        if account == "default":
            return
        info = self._resources[SERVICE_ACCOUNTS]
        if self._live(self._key(SERVICE_ACCOUNTS, info, meta["namespace"], account)) is None:
            raise k8s_error(
                403,
                "Forbidden",
                f'pods "{meta["name"]}" is forbidden: error looking up service account '
                f'{meta["namespace"]}/{account}: serviceaccount "{account}" not found',
                name=meta["name"],
                kind="pods",
            )

    def _ensure_namespace(self, namespace: str, *, dry_run: bool = False) -> None:
        key = (NAMESPACES, None, namespace)
        existing = self._live(key)
        if existing is not None:
            if existing["metadata"].get("deletionTimestamp"):
                raise k8s_error(
                    403,
                    "Forbidden",
                    f"unable to create new content in namespace {namespace} because it is being terminated",
                )
            return
        if self.strict_namespaces:
            raise k8s_error(
                404, "NotFound", f'namespaces "{namespace}" not found', name=namespace, kind="namespaces"
            )
        if not dry_run:  # GAP-NS: non-strict mode creates namespaces on first use
            self._create(NAMESPACES, self._resources[NAMESPACES], None, {"metadata": {"name": namespace}})
