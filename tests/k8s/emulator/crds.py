"""CustomResourceDefinitions: validation (CEL cost budget too), status, serving their resources.

A part of :class:`~.core.ApiServerEmulator` (a mixin: the state lives there)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import kmock

from .. import cel_budget
from .common import (
    ALL_VERBS,
    k8s_error,
    now_rfc3339,
)


class Crds:
    """CustomResourceDefinitions: validation (CEL cost budget too), status, serving their resources."""

    @staticmethod
    def _validate_crd(body: Mapping[str, Any]) -> None:
        spec = body.get("spec") or {}
        names = spec.get("names") or {}
        group, plural = spec.get("group"), names.get("plural")
        if not group or not plural or not names.get("kind") or not spec.get("versions"):
            raise k8s_error(
                422,
                "Invalid",
                "spec.group, spec.names.plural, spec.names.kind and spec.versions are required",
            )
        if body["metadata"]["name"] != f"{plural}.{group}":
            raise k8s_error(
                422,
                "Invalid",
                f'metadata.name: Invalid value: must be spec.names.plural+"."+spec.group: {plural}.{group}',
            )
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            raise k8s_error(422, "Invalid", "spec.scope: must be Namespaced or Cluster")
        # A real server estimates each CEL rule's cost and refuses rules that walk unbounded data.
        if problems := cel_budget.crd_problems(body):
            name = body["metadata"]["name"]
            raise k8s_error(
                422,
                "Invalid",
                f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: [{", ".join(problems)}]',
                name=name,
                group="apiextensions.k8s.io",
                kind="CustomResourceDefinition",
                causes=[
                    {
                        "reason": "FieldValueForbidden",
                        "message": p.split(": ", 1)[1],
                        "field": p.split(": ")[0],
                    }
                    for p in problems
                ],
            )

    @staticmethod
    def _crd_status(body: Mapping[str, Any]) -> dict[str, Any]:
        spec = body["spec"]
        stamp = (body.get("status") or {}).get("conditions", [{}])[0].get(
            "lastTransitionTime"
        ) or now_rfc3339()
        names = dict(spec["names"])
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", f"{names['kind']}List")
        return {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": stamp,
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": stamp,
                },
            ],
        }

    def _register_crd(self, crd: Mapping[str, Any]) -> None:
        # GAP-CRD: serve & advertise the CRD's versions, as the apiextensions server does.
        spec = crd["spec"]
        names = spec["names"]
        old = set(self._crd_resources.get(crd["metadata"]["name"], []))
        served: list[kmock.resource] = []
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            res = kmock.resource(spec["group"], version["name"], names["plural"])
            subresources = set((version.get("subresources") or {}).keys())
            self._resources[res] = kmock.ResourceInfo(
                namespaced=spec["scope"] == "Namespaced",
                kind=names["kind"],
                singular=names.get("singular") or names["kind"].lower(),
                verbs=ALL_VERBS,
                shortnames=names.get("shortNames") or [],
                categories=names.get("categories") or [],
                subresources=subresources,
            )
            self._schemas[res] = (version.get("schema") or {}).get("openAPIV3Schema")
            self._custom.add(res)
            served.append(res)
        self._crd_resources[crd["metadata"]["name"]] = served
        for res in old - set(served):
            self._forget_resource(res)

    def _unregister_crd(self, crd: Mapping[str, Any]) -> None:
        # GAP-CRD: deleting a CRD deletes all its objects (here: at once, finalizers ignored).
        for res in self._crd_resources.pop(crd["metadata"]["name"], []):
            for key, _ in list(self._live_items()):
                if key[0] == res:
                    obj = self._live(key)
                    assert obj is not None
                    last = copy.deepcopy(obj)
                    last["metadata"]["resourceVersion"] = self._next_rv()
                    self._objects[key].delete()
                    self._by_uid.pop(last["metadata"]["uid"], None)
                    self._notify(res, "DELETED", last, obj)
            self._forget_resource(res)
        self._want_gc()

    def _forget_resource(self, res: kmock.resource) -> None:
        self._resources.pop(res, None)
        self._schemas.pop(res, None)
        self._custom.discard(res)

    def close_watches(self) -> None:
        """End all watch streams (on shutdown); new events are not delivered anymore."""
        self._closing = True
        if self._changed is not None:
            self._changed.set()
        if self._gc_task is not None:
            self._gc_task.cancel()
