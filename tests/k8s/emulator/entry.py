"""Where requests come in: authentication, the namespaces kmock misreads, the request log.

A part of :class:`~.core.ApiServerEmulator` (a mixin: the state lives there)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp.test_utils
import aiohttp.web
import kmock

from .common import (
    _NAMESPACE_PATH,
    NAMESPACES,
    LoggedRequest,
    resource_str,
)


class Entry:
    """Where requests come in: authentication, the namespaces kmock misreads, the request log."""

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
