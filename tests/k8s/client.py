"""
A tiny synchronous Kubernetes client over HTTPS (urllib), plus ``wait_for`` polling.

It is for tests, playing the user, kubelet, and controllers: no discovery, no models, just JSON.
Its requests carry ``User-Agent: modelwarmup-tests/…`` so that the request log can tell them
from the operator's (kopf sends ``kopf/…``; the kubernetes client ``OpenAPI-Generator/…``).
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from .access import Access

T = TypeVar("T")

TEST_USER_AGENT = "modelwarmup-tests/1.0"

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


@dataclasses.dataclass(frozen=True)
class Res:
    """A resource, addressed without discovery: ``Res('batch/v1', 'jobs')``."""

    api_version: str
    plural: str
    namespaced: bool = True

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{urllib.parse.quote(namespace)}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{urllib.parse.quote(name)}"
        if subresource is not None:
            base += f"/{subresource}"
        return base

    def __str__(self) -> str:  # as in the request log: 'batch/v1/jobs'
        return f"{self.api_version}/{self.plural}"


PODS = Res("v1", "pods")
EVENTS = Res("v1", "events")
PVCS = Res("v1", "persistentvolumeclaims")
SECRETS = Res("v1", "secrets")
CONFIGMAPS = Res("v1", "configmaps")
SERVICE_ACCOUNTS = Res("v1", "serviceaccounts")
NAMESPACES = Res("v1", "namespaces", namespaced=False)
DEPLOYMENTS = Res("apps/v1", "deployments")
JOBS = Res("batch/v1", "jobs")
CRDS = Res("apiextensions.k8s.io/v1", "customresourcedefinitions", namespaced=False)


class ApiError(Exception):
    """A non-2xx answer; ``body`` is the parsed ``kind: Status`` (or the raw text)."""

    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body
        self.reason = body.get("reason") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else body
        self.message = str(message or "")
        super().__init__(f"{method} {path} -> {status} {self.reason}: {message}")


class KubeClient:
    """Plain JSON over HTTP; methods raise :class:`ApiError` on non-2xx answers."""

    def __init__(self, access: Access, *, user_agent: str = TEST_USER_AGENT, timeout: float = 10.0) -> None:
        self.base_url = access.url.rstrip("/")
        self.user_agent = user_agent
        self.timeout = timeout
        self._auth = access.headers()
        # No proxies from the environment (http_proxy & co. would swallow 127.0.0.1).
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=access.ssl_context())
        )

    def _open(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        query = {
            k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in (params or {}).items()
            if v is not None
        }
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data: bytes | None = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers = {"User-Agent": self.user_agent, "Accept": "application/json", **self._auth}
        if data is not None:
            headers["Content-Type"] = content_type or "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            return self._opener.open(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise ApiError(e.code, parsed, method, path) from None

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        with self._open(method, path, body=body, content_type=content_type, params=params) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    # CRUD.

    def create(
        self,
        res: Res,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        namespace = namespace or body.get("metadata", {}).get("namespace")
        result: dict[str, Any] = self.request("POST", res.path(namespace), body=dict(body))
        return result

    def get(self, res: Res, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", res.path(namespace, name))
        return result

    def get_or_none(
        self,
        res: Res,
        name: str,
        *,
        namespace: str | None = None,
    ) -> dict[str, Any] | None:
        try:
            return self.get(res, name, namespace=namespace)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list_raw(
        self,
        res: Res,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET",
            res.path(namespace),
            params={"labelSelector": label_selector, "fieldSelector": field_selector},
        )
        return result

    def list(
        self,
        res: Res,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.list_raw(
            res, namespace=namespace, label_selector=label_selector, field_selector=field_selector
        )["items"]
        return items

    def patch(
        self,
        res: Res,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: str = "merge",
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        """``patch_type``: ``merge`` (RFC 7386), ``json`` (RFC 6902), ``strategic``, ``apply``."""
        params = {"fieldManager": field_manager or ("tests" if patch_type == "apply" else None)}
        result: dict[str, Any] = self.request(
            "PATCH",
            res.path(namespace, name, subresource),
            body=patch,
            content_type=PATCH_TYPES[patch_type],
            params=params,
        )
        return result

    def patch_status(
        self, res: Res, name: str, status: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch ``.status`` via the status subresource (as kubelet & controllers do)."""
        return self.patch(res, name, {"status": dict(status)}, namespace=namespace, subresource="status")

    def replace(
        self,
        res: Res,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        meta = body.get("metadata", {})
        result: dict[str, Any] = self.request(
            "PUT", res.path(namespace or meta.get("namespace"), meta["name"]), body=dict(body)
        )
        return result

    def delete(
        self,
        res: Res,
        name: str,
        *,
        namespace: str | None = None,
        propagation_policy: str | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        body = {"propagationPolicy": propagation_policy} if propagation_policy else None
        try:
            result: dict[str, Any] = self.request("DELETE", res.path(namespace, name), body=body)
        except ApiError as e:
            if missing_ok and e.status == 404:
                return None
            raise
        return result

    # Watching.

    def watch(
        self,
        res: Res,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: float = 1.0,
        label_selector: str | None = None,
        field_selector: str | None = None,
        send_initial_events: bool = False,
        bookmarks: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Yield watch events until the server ends the stream (after ``timeout_seconds``)."""
        params: dict[str, Any] = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": timeout_seconds,
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "allowWatchBookmarks": "true" if bookmarks or send_initial_events else None,
            "sendInitialEvents": "true" if send_initial_events else None,
            "resourceVersionMatch": "NotOlderThan" if send_initial_events else None,
        }
        with self._open(
            "GET", res.path(namespace), params=params, timeout=timeout_seconds + self.timeout
        ) as response:
            for line in response:
                if line.strip():
                    yield json.loads(line)


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 5.0,
    interval: float = 0.02,
    message: str | Callable[[], str] = "",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll until ``predicate()`` is truthy and return its value; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    error: BaseException | None = None
    while True:
        try:
            last = predicate()
            error = None
        except ignore as e:
            error = e
        if last and error is None:
            result: T = last
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(
                f"Timed out after {timeout}s waiting: {text or predicate!r}; "
                f"last value: {last!r}; last error: {error!r}"
            )
        time.sleep(interval)
