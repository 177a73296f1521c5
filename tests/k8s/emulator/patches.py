"""PATCH (merge, JSON, strategic, apply) and PUT, with resourceVersion checks and the status subresource.

A part of :class:`~.core.ApiServerEmulator` (a mixin: the state lives there)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import kmock
import yaml
from kmock import Response  # type: ignore[attr-defined]  # not in kmock.__all__

from .. import semantics
from . import admission
from .common import (
    CRDS,
    ArrayKey,
    k8s_error,
)


class Patches:
    """PATCH (merge, JSON, strategic, apply) and PUT, with resourceVersion checks and the status subresource."""

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:
        res, info = self._info(request)
        assert request.name is not None
        key = self._key(res, info, request.namespace, request.name)
        old = self._live(key)
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        dry_run = bool(request.params.get("dryRun"))

        if content_type in (semantics.APPLY_PATCH_YAML, semantics.APPLY_PATCH_JSON):
            return self._apply(request, res, info, key, old, dry_run=dry_run)
        if old is None:
            raise self._not_found(res, request.name)

        # GAP-PATCH: the algorithm depends on the Content-Type.
        patch = request.data
        try:
            if content_type == semantics.JSON_PATCH:
                new = semantics.json_patch(old, patch)
            elif content_type == semantics.MERGE_PATCH:
                self._check_patch_rv(old, patch)
                new = semantics.json_merge_patch(old, patch)
            elif content_type == semantics.STRATEGIC_MERGE_PATCH:
                if res in self._custom:
                    raise k8s_error(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted "
                        "media types include: application/json-patch+json, "
                        "application/merge-patch+json, application/apply-patch+yaml",
                    )
                self._check_patch_rv(old, patch)
                new = semantics.strategic_merge_patch(old, patch)
            else:
                raise k8s_error(
                    415, "UnsupportedMediaType", f"unsupported patch Content-Type: {content_type!r}"
                )
        except semantics.PatchError as e:
            raise k8s_error(
                422, "Invalid", f"the server rejected our request due to an error in our request: {e}"
            ) from e
        if not isinstance(new, dict):
            raise k8s_error(400, "BadRequest", "the patch must produce an object")
        return self._update(res, key, old, new, subresource=request.subresource, dry_run=dry_run)

    async def _serve_replace(self, request: kmock.Request) -> kmock.Payload:
        # GAP-PATCH: PUT replaces the whole object (status excluded if it is a subresource).
        res, info = self._info(request)
        if request.name is None:
            raise k8s_error(405, "MethodNotAllowed", "PUT requires an object name")
        key = self._key(res, info, request.namespace, request.name)
        old = self._live(key)
        if old is None:
            raise self._not_found(res, request.name)
        body = request.data
        if not isinstance(body, Mapping):
            raise k8s_error(400, "BadRequest", "the request body must be a JSON object")
        if body.get("metadata", {}).get("name", request.name) != request.name:
            raise k8s_error(400, "BadRequest", "the name of the object does not match the URL")
        self._check_patch_rv(old, body)
        return self._update(
            res,
            key,
            old,
            copy.deepcopy(dict(body)),
            subresource=request.subresource,
            dry_run=bool(request.params.get("dryRun")),
        )

    def _apply(
        self,
        request: kmock.Request,
        res: kmock.resource,
        info: kmock.ResourceInfo,
        key: ArrayKey,
        old: dict[str, Any] | None,
        *,
        dry_run: bool,
    ) -> kmock.Payload:
        # GAP-PATCH: server-side apply, approximated: no managedFields, no conflicts, no removal
        # of fields that the manager stopped applying; lists merge as in a strategic merge patch
        # for built-ins and are replaced for custom resources (CRD lists are atomic by default).
        if not request.params.get("fieldManager"):
            raise k8s_error(422, "Invalid", "fieldManager: Required value: is required for apply patch")
        try:
            body = yaml.safe_load(request.text)
        except yaml.YAMLError as e:
            raise k8s_error(400, "BadRequest", f"invalid YAML: {e}") from e
        if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
            raise k8s_error(400, "BadRequest", "apply requires an object with apiVersion & kind")
        if body.get("metadata", {}).get("name", request.name) != request.name:
            raise k8s_error(400, "BadRequest", "the name of the object does not match the URL")
        if old is None:
            body.setdefault("metadata", {})["name"] = request.name
            created = self._create(res, info, request.namespace, body, dry_run=dry_run)
            if request.subresource == "status" and "status" in body and not dry_run:
                return self._update(
                    res,
                    key,
                    created,
                    {**created, "status": body["status"]},
                    subresource="status",
                    dry_run=dry_run,
                )
            return Response(status=201, payload=created)
        self._check_patch_rv(old, body)
        merge = semantics.json_merge_patch if res in self._custom else semantics.strategic_merge_patch
        return self._update(res, key, old, merge(old, body), subresource=request.subresource, dry_run=dry_run)

    def _check_patch_rv(self, old: Mapping[str, Any], patch: Any) -> None:
        # GAP-RV: optimistic concurrency for merge patches & PUTs that carry a resourceVersion.
        if not isinstance(patch, Mapping) or not isinstance(patch.get("metadata"), Mapping):
            return
        wanted = patch["metadata"].get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            name = old["metadata"]["name"]
            raise k8s_error(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on "{name}": the '
                f"object has been modified; please apply your "
                f"changes to the latest version and try again",
            )

    def _update(
        self,
        res: kmock.resource,
        key: ArrayKey,
        old: dict[str, Any],
        new: dict[str, Any],
        *,
        subresource: str | None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        old_meta = old["metadata"]
        if subresource == "status":
            # GAP-STATUS: /status changes only .status.
            if not self._has_status(res):
                raise k8s_error(404, "NotFound", "the server could not find the requested resource")
            result = copy.deepcopy(old)
            if new.get("status") is not None:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        elif subresource is not None:
            raise k8s_error(405, "MethodNotAllowed", f"subresource {subresource!r} is not served")
        else:
            result = new
            if self._has_status(res):  # GAP-STATUS: the main endpoint ignores .status
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)

        # GAP-META: the system fields cannot be changed by clients.
        meta = result.get("metadata")
        if not isinstance(meta, dict):
            meta = result["metadata"] = {}
        for field in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
        ):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        result["apiVersion"], result["kind"] = old["apiVersion"], old["kind"]

        # GAP-DELETE: no new finalizers on an object being deleted.
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise k8s_error(
                    422,
                    "Forbidden",
                    f"metadata.finalizers: Forbidden: no new "
                    f"finalizers can be added if the object is "
                    f"being deleted, found new finalizers "
                    f"{sorted(added)}",
                )
        if res in self._custom:
            result = semantics.prune_custom_object(result, self._schemas.get(res))
        if res == CRDS:
            self._validate_crd(result)
            result["status"] = self._crd_status(result)
        admission.check(res, result)  # GAP-ADMIT

        # GAP-STATUS: a no-op write is not a write: same resourceVersion, no watch event.
        if result == old:
            return old

        # GAP-STATUS: the generation counts changes of the desired state only.
        if self._tracks_generation(res):
            ignored = {"metadata", "status"} if self._has_status(res) else {"metadata"}
            if {k: v for k, v in result.items() if k not in ignored} != {
                k: v for k, v in old.items() if k not in ignored
            }:
                meta["generation"] = int(old_meta.get("generation") or 0) + 1
        if dry_run:
            return result

        meta["resourceVersion"] = self._next_rv()
        self._store(key, result)
        self._notify(res, "MODIFIED", result, old)
        if res == CRDS:
            self._register_crd(result)
        if meta.get("ownerReferences") != old_meta.get("ownerReferences"):
            self._want_gc()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(key)  # GAP-DELETE: the last finalizer is gone
        return result
