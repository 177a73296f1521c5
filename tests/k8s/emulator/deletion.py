"""DELETE, finalizers, namespace termination and garbage collection of dependents.

A part of :class:`~.core.ApiServerEmulator` (a mixin: the state lives there)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable, Mapping
from typing import Any

import kmock

from .common import (
    CRDS,
    NAMESPACES,
    ORPHAN_BY_DEFAULT,
    ArrayKey,
    k8s_error,
    now_rfc3339,
)


class Deletion:
    """DELETE, finalizers, namespace termination and garbage collection of dependents."""

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        res, info = self._info(request)
        assert request.name is not None
        key = self._key(res, info, request.namespace, request.name)
        obj = self._live(key)
        if obj is None:
            raise self._not_found(res, request.name)
        options = request.data if isinstance(request.data, Mapping) else {}
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            if preconditions.get(field) and preconditions[field] != obj["metadata"][field]:
                raise k8s_error(
                    409,
                    "Conflict",
                    f"Precondition failed: {field} in precondition: "
                    f"{preconditions[field]}, {field} in object meta: "
                    f"{obj['metadata'][field]}",
                )
        policy = (
            options.get("propagationPolicy")
            or request.params.get("propagationPolicy")
            or ("Orphan" if options.get("orphanDependents") else None)
        )
        if request.params.get("dryRun") or options.get("dryRun"):
            return obj
        return self._delete(key, policy)

    def _delete(self, key: ArrayKey, policy: str | None) -> dict[str, Any]:
        res = key[0]
        obj = self._live(key)
        assert obj is not None
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return obj  # already being deleted: nothing changes
        policy = policy or ("Orphan" if res in ORPHAN_BY_DEFAULT else "Background")
        if policy == "Orphan":
            # GAP-GC: real: an "orphan" finalizer until the GC strips the ownerReferences;
            # here: stripped right away.
            self._orphan_dependents(meta["uid"])
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and any(True for _ in self._dependents(meta["uid"])):
            finalizers.append("foregroundDeletion")
        if not finalizers and res != NAMESPACES:
            return self._remove(key)

        # GAP-DELETE: mark for deletion; the generation is bumped as on a real server.
        new = copy.deepcopy(obj)
        new_meta = new["metadata"]
        new_meta["deletionTimestamp"] = now_rfc3339()
        new_meta["deletionGracePeriodSeconds"] = 0
        new_meta["finalizers"] = finalizers
        if "generation" in new_meta:
            new_meta["generation"] = int(new_meta["generation"]) + 1
        if res == NAMESPACES:
            new["status"] = {**(new.get("status") or {}), "phase": "Terminating"}
        new_meta["resourceVersion"] = self._next_rv()
        self._store(key, new)
        self._notify(res, "MODIFIED", new, obj)
        if res == NAMESPACES:
            self._terminate_namespace(key[2])
        if "foregroundDeletion" in finalizers:
            self._want_gc()
        return new

    def _remove(self, key: ArrayKey) -> dict[str, Any]:
        """Remove the object from the storage for real (finalizers are gone)."""
        res, namespace, _ = key
        obj = self._live(key)
        assert obj is not None
        last = copy.deepcopy(obj)
        last["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[key].delete()  # kmock's soft-deletion: the history remains for assertions
        self._by_uid.pop(last["metadata"]["uid"], None)
        self._notify(res, "DELETED", last, obj)
        if res == CRDS:
            self._unregister_crd(last)
        if namespace is not None and namespace not in self._terminating:
            self._remove_namespace_if_done(namespace)
        self._want_gc()
        return last

    def _terminate_namespace(self, namespace: str) -> None:
        # GAP-NS: a deleted namespace deletes its content and goes away when empty.
        self._terminating.add(namespace)
        try:
            for key in [key for key, _ in self._live_items() if key[1] == namespace]:
                if self._live(key) is not None:
                    self._delete(key, "Background")
        finally:
            self._terminating.discard(namespace)
        self._remove_namespace_if_done(namespace)

    def _remove_namespace_if_done(self, namespace: str) -> None:
        ns_key = (NAMESPACES, None, namespace)
        ns = self._live(ns_key)
        if ns is None or not ns["metadata"].get("deletionTimestamp") or ns["metadata"].get("finalizers"):
            return
        if not any(key[1] == namespace for key, _ in self._live_items()):
            self._remove(ns_key)

    def _dependents(self, owner_uid: str) -> Iterable[ArrayKey]:
        for key, obj in self._live_items():
            refs = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in refs):
                yield key

    def _orphan_dependents(self, owner_uid: str) -> None:
        for key in list(self._dependents(owner_uid)):
            obj = self._live(key)
            assert obj is not None
            new = copy.deepcopy(obj)
            new["metadata"]["ownerReferences"] = [
                ref for ref in obj["metadata"]["ownerReferences"] if ref.get("uid") != owner_uid
            ]
            if not new["metadata"]["ownerReferences"]:
                del new["metadata"]["ownerReferences"]
            self._update(key[0], key, obj, new, subresource=None)

    def _owner_exists(self, dependent: ArrayKey, ref: Mapping[str, Any]) -> bool:
        owner_key = self._by_uid.get(ref.get("uid", ""))
        if owner_key is None or self._live(owner_key) is None:
            return False
        # A namespaced dependent can only be owned by a cluster-scoped or same-namespace owner.
        return owner_key[1] is None or owner_key[1] == dependent[1]

    def _want_gc(self) -> None:
        # GAP-GC: the garbage collector runs in the background, like kube-controller-manager's.
        self._gc_wanted = True
        if self._gc_task is None or self._gc_task.done():
            self._gc_task = asyncio.get_running_loop().create_task(self._gc_loop())

    async def _gc_loop(self) -> None:
        while self._gc_wanted and not self._closing:
            self._gc_wanted = False
            await asyncio.sleep(self.gc_delay)
            for _ in range(100):  # until stable (each pass can cascade)
                if not self._gc_pass():
                    break

    def _gc_pass(self) -> bool:
        changed = False
        for key, _ in list(self._live_items()):
            obj = self._live(key)  # fresh: it may be changed or gone by a previous step
            if obj is None:
                continue
            meta = obj["metadata"]
            refs = meta.get("ownerReferences") or []
            if refs:
                alive = [ref for ref in refs if self._owner_exists(key, ref)]
                if not alive and not meta.get("deletionTimestamp"):
                    self._delete(key, "Background")
                    changed = True
                    continue
                if alive and len(alive) < len(refs):
                    new = copy.deepcopy(obj)
                    new["metadata"]["ownerReferences"] = alive
                    self._update(key[0], key, obj, new, subresource=None)
                    changed = True
                    continue
            if meta.get("deletionTimestamp") and "foregroundDeletion" in (meta.get("finalizers") or []):
                dependents = list(self._dependents(meta["uid"]))
                for dep in dependents:
                    dep_obj = self._live(dep)
                    if dep_obj is not None and not dep_obj["metadata"].get("deletionTimestamp"):
                        self._delete(dep, "Background")
                        changed = True
                if not dependents:
                    new = copy.deepcopy(obj)
                    new["metadata"]["finalizers"] = [
                        f for f in meta["finalizers"] if f != "foregroundDeletion"
                    ]
                    self._update(key[0], key, obj, new, subresource=None)
                    changed = True
        return changed
