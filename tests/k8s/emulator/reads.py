"""GET, LIST and WATCH, with selectors, chunking, resourceVersions and bookmarks.

A part of :class:`~.core.ApiServerEmulator` (a mixin: the state lives there)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import kmock

from .. import semantics
from .common import (
    PODS,
    WatchLog,
    api_version_of,
    k8s_error,
)


class Reads:
    """GET, LIST and WATCH, with selectors, chunking, resourceVersions and bookmarks."""

    def _selectors(self, request: kmock.Request) -> Callable[[Mapping[str, Any]], bool]:
        # GAP-SELECT: kmock ignores both selectors.
        try:
            labels = semantics.parse_label_selector(request.params.get("labelSelector"))
            fields = semantics.parse_field_selector(
                request.params.get("fieldSelector"), request.resource.plural if request.resource else None
            )
        except semantics.SelectorError as e:
            raise k8s_error(400, "BadRequest", str(e)) from e
        namespace, name = request.namespace, request.name

        def matches(obj: Mapping[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            return (
                (namespace is None or meta.get("namespace") == namespace)
                and (name is None or meta.get("name") == name)
                and labels(meta.get("labels") or {})
                and fields(obj)
            )

        return matches

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        res, info = self._info(request)
        assert request.name is not None
        obj = self._live(self._key(res, info, request.namespace, request.name))
        if obj is None:
            raise self._not_found(res, request.name)
        if request.subresource == "log" and res == PODS:
            return self._pod_log(obj, request.params)
        return obj

    def _pod_log(self, pod: Mapping[str, Any], params: Mapping[str, str]) -> kmock.Response:
        # GAP-LOG: kmock serves pods/log as the pod itself. Real: the API server proxies the
        # kubelet's plain-text log of one container, and refuses as below. Here the text is the
        # file a test attached for (namespace, pod, container) (ApiServer.attach_log).
        meta, spec = pod["metadata"], pod.get("spec") or {}
        name = meta["name"]
        containers = [c["name"] for c in spec.get("containers") or []]
        inits = [c["name"] for c in spec.get("initContainers") or []]
        container = params.get("container")
        if not container:
            if len(containers) != 1:
                also = f" or one of the init containers: [{' '.join(inits)}]" if inits else ""
                raise k8s_error(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, "
                    f"choose one of: [{' '.join(containers)}]{also}",
                )
            container = containers[0]
        if container not in containers + inits:
            raise k8s_error(400, "BadRequest", f"container {container} is not valid for pod {name}")
        status = pod.get("status") or {}
        found = [
            c
            for c in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
            if c.get("name") == container
        ]
        state = (found[0].get("state") or {}) if found else {}
        if not state.get("running") and not state.get("terminated"):
            why = (state.get("waiting") or {}).get("reason") or (
                "PodInitializing" if container in containers and inits else "ContainerCreating"
            )
            raise k8s_error(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {why}'
            )
        limit = params.get("limitBytes")
        if limit is not None and (not limit.isdigit() or int(limit) <= 0):
            raise k8s_error(
                422, "Invalid", 'PodLogOptions.meta.k8s.io "" is invalid: limitBytes: must be > 0'
            )
        path = self.pod_logs.get((meta.get("namespace") or "", name, container))
        data = path.read_bytes() if path is not None and path.exists() else b""
        if params.get("tailLines"):
            data = b"".join(data.splitlines(keepends=True)[-int(params["tailLines"]) :])
        if limit is not None:
            data = data[: int(limit)]
        # An aiohttp Response is a Mapping to kmock (rendered as JSON): bytes with a header instead.
        return kmock.Response(payload=data, headers={"Content-Type": "text/plain; charset=utf-8"})

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        res, info = self._info(request)
        matches = self._selectors(request)
        items = sorted(
            (obj for (r, _, _), obj in self._live_items() if r == res and matches(obj)),
            key=lambda obj: (obj["metadata"].get("namespace") or "", obj["metadata"]["name"]),
        )
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        limit = int(request.params.get("limit") or 0)
        offset = int(request.params.get("continue") or 0)
        if limit > 0:  # chunked lists: "continue" is an opaque token; here it is an offset
            items, rest = items[offset : offset + limit], items[offset + limit :]
            if rest:
                meta["continue"] = str(offset + limit)
                meta["remainingItemCount"] = len(rest)
        return {
            "apiVersion": api_version_of(res),
            "kind": f"{info.kind}List",
            "metadata": meta,
            "items": items,
        }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        # GAP-WATCH: resume from ?resourceVersion= by replaying the watch log; no lost events.
        res, info = self._info(request)
        matches = self._selectors(request)
        params = request.params
        bookmarks = params.get("allowWatchBookmarks") == "true"
        since = params.get("resourceVersion") or None
        initial = params.get("sendInitialEvents") == "true"
        loop = asyncio.get_running_loop()
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        deadline = loop.time() + timeout if timeout else None
        log = self._watch_logs.setdefault(res, WatchLog())
        kind, api_version = info.kind, api_version_of(res)

        def bookmark(rv: int, initial_end: bool = False) -> dict[str, Any]:
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": meta}}

        yield b""  # kmock starts streaming (sends the headers) on the first chunk

        if since is None or since == "0" or initial:
            # "Get state and start at most recent": synthetic ADDED events for what exists now.
            last = self._rv
            snapshot = sorted(
                (obj for (r, _, _), obj in self._live_items() if r == res and matches(obj)),
                key=lambda obj: (obj["metadata"].get("namespace") or "", obj["metadata"]["name"]),
            )
            for obj in snapshot:
                yield {"type": "ADDED", "object": obj}
            if initial and bookmarks:
                yield bookmark(last, initial_end=True)
        else:
            try:
                last = int(since)
            except ValueError:
                yield {
                    "type": "ERROR",
                    "object": self._status_body(400, "BadRequest", f"invalid resourceVersion {since!r}"),
                }
                return
            if last < log.compacted_rv:
                yield {
                    "type": "ERROR",
                    "object": self._status_body(
                        410, "Expired", f"too old resource version: {last} ({log.compacted_rv})"
                    ),
                }
                return

        next_bookmark = loop.time() + self.bookmark_interval if self.bookmark_interval else None
        while not self._closing:
            wakeup = self._changed = self._changed or asyncio.Event()
            entries = log.since(last)
            for entry in entries:
                last = entry.rv
                now_in, was_in = matches(entry.obj), entry.old is not None and matches(entry.old)
                if entry.type == "DELETED":
                    event_type = "DELETED" if now_in else None
                elif now_in:
                    event_type = "MODIFIED" if was_in else "ADDED"
                else:  # left the selection: a real server reports it as deleted
                    event_type = "DELETED" if was_in else None
                if event_type is not None:
                    yield {"type": event_type, "object": entry.obj}
            if entries:
                continue
            now = loop.time()
            if deadline is not None and now >= deadline:
                return
            if bookmarks and next_bookmark is not None and now >= next_bookmark:
                last = max(last, self._rv)  # everything up to here is delivered (no awaits)
                yield bookmark(last)
                next_bookmark = now + (self.bookmark_interval or 0)
                continue
            waits = [t - now for t in (deadline, next_bookmark if bookmarks else None) if t is not None]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=min([1.0, *waits]))

    @staticmethod
    def _status_body(code: int, reason: str, message: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
        }
