"""The object store as the verbs use it: keys, live objects, resourceVersions, watch notifications.

A part of :class:`~.core.ApiServerEmulator` (a mixin: the state lives there)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import kmock

from .common import (
    NAMESPACES,
    ArrayKey,
    WatchEntry,
    WatchLog,
    k8s_error,
)


class StateHelpers:
    """The object store as the verbs use it: keys, live objects, resourceVersions, watch notifications."""

    def _info(self, request: kmock.Request) -> tuple[kmock.resource, kmock.ResourceInfo]:
        res = request.resource
        if res is None or res not in self._resources:
            raise k8s_error(404, "NotFound", "the server could not find the requested resource")
        info = self._resources[res]
        if not info.namespaced and request.namespace is not None:
            raise k8s_error(404, "NotFound", "the server could not find the requested resource")
        return res, info

    def _key(
        self, res: kmock.resource, info: kmock.ResourceInfo, namespace: str | None, name: str
    ) -> ArrayKey:
        return (res, namespace if info.namespaced else None, name)

    def _live(self, key: ArrayKey) -> dict[str, Any] | None:
        if key in self._objects and not self._objects[key].deleted:
            return self._objects[key].raw
        return None

    def _live_items(self) -> Iterable[tuple[ArrayKey, dict[str, Any]]]:
        for key, obj in list(self._objects.items()):
            if not obj.deleted:
                yield key, obj.raw

    def _not_found(self, res: kmock.resource, name: str) -> kmock.KubernetesError:
        return k8s_error(
            404,
            "NotFound",
            f'{res.plural}.{res.group} "{name}" not found'
            if res.group
            else f'{res.plural} "{name}" not found',
            name=name,
            group=res.group,
            kind=res.plural,
        )

    def _has_status(self, res: kmock.resource) -> bool:
        return res in self._resources and "status" in self._resources[res].subresources

    def _tracks_generation(self, res: kmock.resource) -> bool:
        # Custom resources and the built-ins with a status subresource (workloads) have
        # metadata.generation; config-like built-ins (ConfigMaps, Secrets, Events) do not.
        return res in self._custom or (self._has_status(res) and res != NAMESPACES)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _notify(
        self, res: kmock.resource, type_: str, obj: Mapping[str, Any], old: Mapping[str, Any] | None
    ) -> None:
        log = self._watch_logs.setdefault(res, WatchLog())
        log.append(
            WatchEntry(int(obj["metadata"]["resourceVersion"]), type_, obj, old), self.watch_cache_size
        )
        if self._changed is not None:
            self._changed.set()
        self._changed = asyncio.Event()

    def _store(self, key: ArrayKey, body: dict[str, Any]) -> None:
        if key in self._objects:
            self._objects[key].create(body)  # appends a new version to kmock's history
        else:
            self._objects[key] = body
