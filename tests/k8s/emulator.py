"""
A Kubernetes API server for tests: kmock's emulator + the semantics every real API server has.

What comes from kmock (PyPI ``kmock``, by kopf's author), unchanged:

* the HTTP server (``kmock.Server``: aiohttp on 127.0.0.1, a random port);
* request parsing into K8s terms (resource, namespace, name, subresource, action);
* the request journal (``emulator.requests``) and the reaction DSL for fault injection,
  e.g. ``server.call(lambda em: em['patch', kmock.resource('batch/v1/jobs')] << 500)``;
* API discovery (``/api``, ``/apis``, ``/apis/{group}/{version}``) from ``emulator.resources``,
  pre-filled with kmock's bundled list of built-in resources (K3s; 71 resources);
* Kubernetes-style error rendering (``kind: Status``) of ``kmock.KubernetesError``;
* the object store with per-object history (``emulator.objects[res, ns, name].history``).

What kmock 0.8 lacks (verified against kmock's source and by requests), and how it is bridged
here. Each item names the gap and what a real API server does; the code has the same markers:

GAP-META    Objects get no ``uid``/``resourceVersion``/``generation``/``creationTimestamp``, and
            objects POSTed to a namespaced URL get no ``metadata.namespace``. Real: all are set by
            the server; resourceVersion is a cluster-wide counter bumped on every write.
GAP-NAME    ``metadata.generateName`` is ignored (the 2nd kopf event in a namespace is a 409).
            Real: the server appends 5 random characters.
GAP-RV      JSON-patch ``test`` ops on ``/metadata/resourceVersion`` fail with a 500 (no such
            field), so kopf's finalizer never lands. Real: the test passes/fails on the actual
            version, and a failed op is a 422 (kopf then retries on the next event). A stale
            ``metadata.resourceVersion`` in a merge patch or PUT is a 409 Conflict.
GAP-PATCH   Content-Type is ignored: every dict is merged (and a dict cannot replace a scalar),
            every list is JSON-patched. Real: RFC 7386 merge patch, RFC 6902 JSON patch,
            strategic merge patch (built-ins only; 415 for custom resources), and server-side
            apply (approximated here as create-or-strategic/merge-patch, no field ownership).
            PUT (replace) is not served at all (404); it is served here.
GAP-STATUS  ``/status`` is not a subresource: a PATCH to it changes anything. Real: for resources
            with a status subresource, ``/status`` writes only ``.status`` and the main endpoint
            ignores ``.status``; ``generation`` is bumped on changes outside metadata/status only.
            A no-op write does not bump resourceVersion and emits no watch event.
GAP-WATCH   A watch ignores ``resourceVersion``: it re-sends all objects as ADDED and then only
            events that happen after it connected, so events between a list and its watch (or
            between two watch connections) are lost. ``timeoutSeconds`` is ignored; there are no
            bookmarks. Real: events after the given resourceVersion are replayed from the watch
            cache (410 Gone if too old); ``sendInitialEvents`` ends with a bookmark.
GAP-SELECT  ``labelSelector``/``fieldSelector`` are ignored on lists and watches. Real: filtered
            server-side; a watched object leaving/entering the selection is DELETED/ADDED.
GAP-DELETE  Deletion without finalizers, with finalizers (``deletionTimestamp``) and the final
            removal once finalizers are gone mostly work in kmock, but: finalizers can be added to
            a deleting object (real: 422), the generation is not bumped (real: it is), and
            DeleteOptions (preconditions, propagationPolicy) are ignored.
GAP-GC      No garbage collection. Real: dependents whose ``ownerReferences`` all point to absent
            owners are deleted in the background (Foreground/Orphan policies too); note that
            batch/v1 Jobs default to *orphaning* their dependents when deleted via the API.
GAP-CRD     A POSTed CRD is only stored: its resource is not served nor discoverable. Real: the
            CRD's versions become discoverable (with the status/scale subresources), CRs are
            pruned & defaulted by the structural schema, the CRD gets Established conditions,
            and a CRD whose CEL rules' estimated cost exceeds the budget is refused (422). The
            cost check here is :mod:`cel_budget`'s sufficient condition, not apiextensions'
            estimator: stricter (every walked list, map and string needs a bound), never looser.
GAP-AUTHN   Plain HTTP, and every request is served. Real: TLS only, and a request without valid
            credentials is a 401 before anything else. Here: HTTPS with a per-server CA and a
            bearer token or a client certificate signed by that CA (:mod:`.access`); a kubeconfig
            carries them, as for a real cluster.
GAP-NS      ``GET /api/v1/namespaces`` is a 500 and ``/api/v1/namespaces/{name}`` is read as a
            namespace scope (kmock's URL parser). Real: namespaces are a cluster-scoped resource.
            Namespaces are created on first use unless ``strict_namespaces=True`` (real: 404).

Not emulated at all (a real server has them): admission & OpenAPI validation (a real server
rejects invalid objects), defaulting of built-in types, RBAC (authorization; tests check the
operator's requests against docs/rbac.md instead), managedFields/field
ownership, DELETE of collections, conversion between CRD versions (each version is stored
separately), controllers (no Pods for Jobs, no ReplicaSets for Deployments: tests play kubelet
and controllers by patching ``/status``).

Threading: :class:`ApiServer` runs the emulator in its own event loop in a background thread,
so synchronous tests, kopf (in its own thread and loop) and subprocesses can all use the URL.
All state changes run synchronously (without awaits) in that loop, so every request is atomic.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import dataclasses
import datetime
import functools
import json
import random
import re
import ssl
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.test_utils
import aiohttp.web
import attrs
import kmock
import yaml
from kmock import Response  # type: ignore[attr-defined]  # not in kmock.__all__

from . import access, cel_budget, semantics

T = TypeVar("T")

ArrayKey = tuple[kmock.resource, str | None, str]

ALL_VERBS = frozenset({"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACES = kmock.resource("", "v1", "namespaces")
JOBS_V1 = kmock.resource("batch", "v1", "jobs")

# GAP-GC: resources whose default deletion propagation is Orphan (for backward compatibility).
ORPHAN_BY_DEFAULT = frozenset({JOBS_V1})

# GAP-NS: the only namespace paths kmock's parser misreads; "/api/v1/namespaces/ns/pods" is fine.
_NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+)(?:/(?P<sub>status|finalize))?)?/?$")

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of apimachinery's generateName


def api_version_of(res: kmock.resource) -> str:
    return f"{res.group}/{res.version}" if res.group else str(res.version)


def resource_str(res: kmock.resource | None) -> str | None:
    return None if res is None else f"{api_version_of(res)}/{res.plural}"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def k8s_error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    # Non-empty details also keep kmock from putting a Python traceback into the Status.
    return kmock.KubernetesError(
        status=status, reason=reason, message=message, details=details or {"causes": []}
    )


@dataclasses.dataclass
class LoggedRequest:
    """One request as seen by the server (appended when it arrives; status when it ends)."""

    seq: int
    time: float  # time.monotonic()
    method: str
    path: str
    query: dict[str, str]
    action: str | None  # kmock's guess: LIST, WATCH, FETCH, CREATE, UPDATE, DELETE, or None
    resource: str | None  # e.g. 'batch/v1/jobs', 'v1/events'
    namespace: str | None
    name: str | None
    subresource: str | None
    user_agent: str
    content_type: str | None
    status: int | None = None  # None while in flight (e.g. an open watch)
    ended: float | None = None

    @property
    def is_watch(self) -> bool:
        return self.action == "WATCH"

    @property
    def is_write(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query.items())
        return f"{self.method} {self.path}{'?' + query if query else ''} -> {self.status}"


@dataclasses.dataclass(frozen=True)
class WatchEntry:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: Mapping[str, Any]
    old: Mapping[str, Any] | None


@dataclasses.dataclass
class WatchLog:
    """GAP-WATCH: the per-resource event history (a real server's watch cache)."""

    entries: list[WatchEntry] = dataclasses.field(default_factory=list)
    rvs: list[int] = dataclasses.field(default_factory=list)
    compacted_rv: int = 0  # events with rv <= this are gone: older watches get 410 Gone

    def append(self, entry: WatchEntry, limit: int) -> None:
        self.entries.append(entry)
        self.rvs.append(entry.rv)
        if len(self.entries) > limit:
            dropped = len(self.entries) - limit
            self.compacted_rv = self.rvs[dropped - 1]
            del self.entries[:dropped], self.rvs[:dropped]

    def since(self, rv: int) -> list[WatchEntry]:
        return self.entries[bisect.bisect_right(self.rvs, rv) :]


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's ``KubernetesEmulator`` with the verbs re-implemented with real API semantics."""

    strict_namespaces: bool = False
    gc_delay: float = 0.0  # seconds before the garbage collector reacts (real: ~immediately)
    bookmark_interval: float | None = 60.0  # real servers send a BOOKMARK about every minute
    watch_cache_size: int = 10_000  # events kept per resource for watch resumption
    tokens: frozenset[str] = frozenset()  # bearer tokens it accepts; every other request is a 401

    request_log: list[LoggedRequest] = attrs.field(factory=list, init=False)
    _rv: int = attrs.field(default=0, init=False)
    _by_uid: dict[str, ArrayKey] = attrs.field(factory=dict, init=False)
    _watch_logs: dict[kmock.resource, WatchLog] = attrs.field(factory=dict, init=False)
    _changed: asyncio.Event | None = attrs.field(default=None, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _gc_task: asyncio.Task[None] | None = attrs.field(default=None, init=False)
    _gc_wanted: bool = attrs.field(default=False, init=False)
    _crd_resources: dict[str, list[kmock.resource]] = attrs.field(factory=dict, init=False)
    _schemas: dict[kmock.resource, Any] = attrs.field(factory=dict, init=False)
    _custom: set[kmock.resource] = attrs.field(factory=set, init=False)
    _terminating: set[str] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()  # kmock registers self._serve_list/_watch/... as fallbacks
        self.fallback[kmock.method.PUT] << self._serve_replace  # GAP-PATCH: kmock has no PUT

    # --------------------------------------------------------------------------------------------
    # Request entry points.
    # --------------------------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # GAP-AUTHN: kmock accepts anyone. A real server authenticates every request first.
        scheme, _, token = raw_request.headers.get("Authorization", "").partition(" ")
        # A client certificate the TLS layer verified against the server's CA (CERT_OPTIONAL).
        certified = raw_request.transport is not None and raw_request.transport.get_extra_info("peercert")
        if not certified and (scheme.lower() != "bearer" or token not in self.tokens):
            self.request_log.append(
                LoggedRequest(
                    seq=len(self.request_log),
                    time=time.monotonic(),
                    method=raw_request.method,
                    path=raw_request.path,
                    query=dict(raw_request.query),
                    action=None,
                    resource=None,
                    namespace=None,
                    name=None,
                    subresource=None,
                    user_agent=raw_request.headers.get("User-Agent", ""),
                    content_type=raw_request.headers.get("Content-Type"),
                    status=401,
                )
            )
            return aiohttp.web.json_response(
                self._status_body(401, "Unauthorized", "Unauthorized"), status=401
            )
        match = _NAMESPACE_PATH.match(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)

        # GAP-NS: kmock's URL parser reads "/api/v1/namespaces/X" as the scope of a namespaced URL
        # (and crashes on "/api/v1/namespaces"); build the request for the namespaces resource.
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        name, sub = match.group("name"), match.group("sub")
        params = dict(raw_request.query)
        method = raw_request.method.upper()
        action = (
            kmock.action.WATCH
            if method == "GET" and params.get("watch") == "true"
            else (kmock.action.LIST if method == "GET" else kmock.action.CREATE if method == "POST" else None)
            if name is None
            else kmock.action.FETCH
            if method == "GET"
            else kmock.action.UPDATE
            if method == "PATCH"
            else kmock.action.DELETE
            if method == "DELETE"
            else None
        )
        request = kmock.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=params,
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=body.decode(errors="replace"),
            data=data,
            action=action,
            resource=NAMESPACES,
            namespace=None,
            name=name,
            subresource=sub,
        )
        self._requests.append(request)
        try:
            return await self._handle(request)
        except kmock.KubernetesError as e:
            return await self._render_error(e)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        entry = LoggedRequest(
            seq=len(self.request_log),
            time=time.monotonic(),
            method=str(request.method.value if request.method else ""),
            path=raw.path if raw is not None else str(request.url.path),
            query=dict(request.params),
            action=request.action.value if request.action else None,
            resource=resource_str(request.resource),
            namespace=request.namespace,
            name=request.name,
            subresource=request.subresource,
            user_agent=request.headers.get("User-Agent", ""),
            content_type=request.headers.get("Content-Type"),
        )
        self.request_log.append(entry)
        try:
            # Skip KubernetesEmulator._handle(): it mutates the objects on every request with
            # merge-only semantics before the reactions run. Here, the state changes in the
            # fallback verbs below, so a user-injected reaction (e.g. a 500) replaces the request.
            response = await kmock.RawHandler._handle(self, request)
        except kmock.KubernetesError as e:
            entry.status = e.status
            raise
        except asyncio.CancelledError:
            entry.status = 499  # the client went away (e.g. closed a watch): nginx's convention
            raise
        except BaseException:
            entry.status = 500
            raise
        finally:
            entry.ended = time.monotonic()
        entry.status = response.status
        return response

    def _get_resources(self) -> list[kmock.resource]:
        # GAP-CRD: kmock also advertises the resources of any stored objects, even deleted ones
        # (so a deleted CRD's resource would stay discoverable); only declared ones are served.
        return kmock.KubernetesScaffold._get_resources(self)

    # --------------------------------------------------------------------------------------------
    # Helpers for the state.
    # --------------------------------------------------------------------------------------------

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

    # --------------------------------------------------------------------------------------------
    # Reads.
    # --------------------------------------------------------------------------------------------

    def _selectors(self, request: kmock.Request) -> Callable[[Mapping[str, Any]], bool]:
        # GAP-SELECT: kmock ignores both selectors.
        try:
            labels = semantics.parse_label_selector(request.params.get("labelSelector"))
            fields = semantics.parse_field_selector(request.params.get("fieldSelector"))
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
        return obj

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

    # --------------------------------------------------------------------------------------------
    # Writes: create.
    # --------------------------------------------------------------------------------------------

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

    # --------------------------------------------------------------------------------------------
    # Writes: patch & replace.
    # --------------------------------------------------------------------------------------------

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

    # --------------------------------------------------------------------------------------------
    # Writes: delete & garbage collection.
    # --------------------------------------------------------------------------------------------

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

    # --------------------------------------------------------------------------------------------
    # CRDs.
    # --------------------------------------------------------------------------------------------

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


class _TlsTestServer(aiohttp.test_utils.RawTestServer):
    """aiohttp's raw test server on TLS (kmock.Server builds it with ``server_cls``)."""

    def __init__(self, handler: Any, *, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._ssl_context = ssl_context

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("ssl", self._ssl_context)
        await super().start_server(loop=loop, **kwargs)


class ApiServer:
    """
    The emulator in a background thread with its own event loop, usable from synchronous code.

    Usage::

        with ApiServer() as server:
            server.install_crd(crd_body)
            client = server.client()
            client.create(JOBS, {...}, namespace='ns')
            assert server.requests(since=mark, user_agent='kopf')

    Everything on the emulator itself must run in its loop: use :meth:`call`.
    """

    def __init__(
        self,
        *,
        bundled_resources: bool = True,
        strict_namespaces: bool = False,
        gc_delay: float = 0.0,
        bookmark_interval: float | None = 60.0,
        watch_cache_size: int = 10_000,
        host: str = "127.0.0.1",
    ) -> None:
        self._options = dict(
            strict_namespaces=strict_namespaces,
            gc_delay=gc_delay,
            bookmark_interval=bookmark_interval,
            watch_cache_size=watch_cache_size,
        )
        self._bundled = bundled_resources
        self._host = host
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._emulator: ApiServerEmulator | None = None
        self.identity = access.ServerIdentity.create(host)
        self._files = tempfile.TemporaryDirectory(prefix="k8s-emulator-")
        self.url = ""

    # Lifecycle.

    def start(self, timeout: float = 10.0) -> ApiServer:
        if self._thread is not None:
            raise RuntimeError("The API server is already started.")
        self._thread = threading.Thread(target=self._thread_main, name="k8s-api-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("The API server did not start in time.")
        if self._error is not None:
            raise RuntimeError("The API server failed to start.") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("The API server did not stop in time.")
        self._thread = None
        self._files.cleanup()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:
            self._error = e
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        emulator = ApiServerEmulator(tokens=frozenset({self.identity.token}), **self._options)  # type: ignore[arg-type]
        if self._bundled:
            with warnings.catch_warnings():  # kmock uses the deprecated importlib.resources API
                warnings.simplefilter("ignore", DeprecationWarning)
                emulator.resources.load_bundled()  # built-ins of a recent K3s, as kmock ships
        # NB: kmock.Server also hooks aiohttp's DNS resolution for its own host:port
        # (process-wide, LIFO): harmless for 127.0.0.1, but stop servers in reverse order.
        tls = functools.partial(_TlsTestServer, ssl_context=self.identity.server_context)
        async with emulator, kmock.Server(emulator, host=self._host, server_cls=tls) as server:
            self._emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stopping.wait()
            emulator.close_watches()
            await asyncio.sleep(0.05)  # let the watch streams end before the server closes

    # Access to the emulator.

    @property
    def emulator(self) -> ApiServerEmulator:
        if self._emulator is None:
            raise RuntimeError("The API server is not started.")
        return self._emulator

    def call(self, fn: Callable[[ApiServerEmulator], T], timeout: float = 10.0) -> T:
        """Run ``fn(emulator)`` in the server's loop (a sync fn or an async one) and return."""
        if self._loop is None:
            raise RuntimeError("The API server is not started.")

        async def runner() -> T:
            result = fn(self.emulator)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(runner(), self._loop).result(timeout)

    @property
    def access(self) -> access.Access:
        """The URL, CA and token a client needs (see :mod:`.access`)."""
        return self.identity.access(self.url)

    def client(self, user_agent: str | None = None) -> Any:
        from .client import TEST_USER_AGENT, KubeClient

        return KubeClient(self.access, user_agent=user_agent or TEST_USER_AGENT)

    def install_crd(self, crd: Mapping[str, Any] | str) -> dict[str, Any]:
        """Create a CRD over HTTP (a dict, YAML text, or a path to a YAML file)."""
        if isinstance(crd, str):
            text = crd
            if "\n" not in crd:
                with open(crd, encoding="utf-8") as f:
                    text = f.read()
            crd = yaml.safe_load(text)
        from .client import CRDS as CRDS_RES

        assert isinstance(crd, Mapping)
        result: dict[str, Any] = self.client().create(CRDS_RES, dict(crd))
        return result

    def kubeconfig(self, path: str | Path | None = None, namespace: str = "default") -> Path:
        """A kubeconfig for this server (the operator's, a subprocess's, ``kubernetes.config``'s).

        Without a path: one file in the server's own folder, removed when the server stops.
        """
        path = Path(path) if path is not None else Path(self._files.name) / f"kubeconfig-{namespace}"
        return self.access.write_kubeconfig(path, namespace=namespace)

    # The request log (for assertions and benchmarks).

    def mark(self) -> int:
        """A position in the request log: pass it as ``since=`` later."""
        return len(self.emulator.request_log)

    def requests(
        self,
        since: int = 0,
        *,
        user_agent: str | None = None,
        exclude_user_agent: str | None = None,
        method: str | None = None,
        action: str | None = None,
        resource: str | None = None,
        writes_only: bool = False,
    ) -> list[LoggedRequest]:
        """Requests since a mark, filtered (user agents are matched as prefixes)."""
        return [
            entry
            for entry in list(self.emulator.request_log)[since:]
            if user_agent is None or entry.user_agent.startswith(user_agent)
            if exclude_user_agent is None or not entry.user_agent.startswith(exclude_user_agent)
            if method is None or entry.method == method.upper()
            if action is None or entry.action == action.upper()
            if resource is None or entry.resource == resource
            if not writes_only or entry.is_write
        ]

    def watching(self, resource: str, *, since: int = 0, user_agent: str | None = None) -> bool:
        """Whether a watch on the resource (e.g. 'batch/v1/jobs') is open now."""
        return any(
            entry.ended is None
            for entry in self.requests(since, action="WATCH", resource=resource, user_agent=user_agent)
        )

    def wait_watching(
        self, *resources: object, since: int = 0, user_agent: str | None = "kopf/", timeout: float = 10.0
    ) -> None:
        """Wait until watches on all the resources (``Res`` or 'batch/v1/jobs') are open."""
        deadline = time.monotonic() + timeout
        wanted = [str(res) for res in resources]
        while not all(self.watching(res, since=since, user_agent=user_agent) for res in wanted):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"No open watches for {wanted} since #{since}:\n"
                    + self.format_requests(self.requests(since))
                )
            time.sleep(0.01)

    def wait_quiet(self, quiet: float = 0.3, timeout: float = 10.0) -> int:
        """
        Wait until no request has arrived or run for ``quiet`` seconds; return a mark then.

        Open watches do not count as activity. For idle measurements::

            mark = server.wait_quiet()
            time.sleep(5)
            assert server.requests(mark) == []
        """
        deadline = time.monotonic() + timeout
        while True:
            log = list(self.emulator.request_log)
            now = time.monotonic()
            active = [entry for entry in log if not entry.is_watch]
            busy = any(entry.ended is None for entry in active[-100:])
            last = max((entry.ended or now for entry in active[-100:]), default=0.0)
            last = max([last] + [entry.time for entry in log[-1:]])
            if not busy and now - last >= quiet:
                return len(log)
            if now > deadline:
                raise TimeoutError(f"The API server was not quiet for {quiet}s in {timeout}s.")
            time.sleep(0.01)

    def objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """A snapshot of the live objects of a resource (bypassing HTTP and the request log)."""
        res = kmock.resource(resource)

        def collect(em: ApiServerEmulator) -> list[dict[str, Any]]:
            return [
                copy.deepcopy(obj)
                for key, obj in em._live_items()
                if key[0] == res and (namespace is None or key[1] == namespace)
            ]

        return self.call(collect)

    @staticmethod
    def format_requests(entries: Iterable[LoggedRequest]) -> str:
        return "\n".join(str(entry) for entry in entries)


__all__ = ["ApiServer", "ApiServerEmulator", "LoggedRequest", "api_version_of", "resource_str"]
