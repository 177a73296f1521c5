"""A small JSON client for the Kubernetes API, on the official client's config and transport.

The official client does TLS and token refresh on the credentials that
:mod:`~modelwarmup.controller.credentials` loads; this module only adds what the operator needs
on top: plain dicts in and out, the paths of the few resource kinds it touches, and errors that
say conflict from not-found.
One instance lives in kopf's memo; nothing here is module-global.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from modelwarmup import __version__, errors
from modelwarmup.api import resource

KubeObject = dict[str, Any]  # a Kubernetes object as JSON: what goes over the wire
KubeObjects = list[KubeObject]
USER_AGENT = f"modelwarmup-operator/{__version__}"  # tells our requests from kopf's in audit logs


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path; ``namespace`` None for a cluster-scoped kind."""
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        scope = f"/namespaces/{quote(namespace)}" if namespace is not None else ""
        path = f"{base}{scope}/{self.plural}"
        if name is not None:
            path += f"/{quote(name)}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


MODELWARMUPS = Kind(resource.GROUP, resource.VERSION, resource.PLURAL)
JOBS = Kind("batch", "v1", "jobs")
PODS = Kind("", "v1", "pods")
DEPLOYMENTS = Kind("apps", "v1", "deployments")
CLAIMS = Kind("", "v1", "persistentvolumeclaims")
EVENTS = Kind("", "v1", "events")
# kopf's peering objects: one per watched namespace, or one for the cluster.
PEERINGS = Kind("kopf.dev", "v1", "kopfpeerings")
CLUSTER_PEERINGS = Kind("kopf.dev", "v1", "clusterkopfpeerings")


class KubeApi:
    """JSON over the official client's REST transport."""

    def __init__(self, configuration: Any) -> None:
        """``configuration``: a ``kubernetes.client.Configuration`` with credentials (see credentials.load)."""
        import kubernetes

        self.configuration: Any = configuration
        self.api_client: Any = kubernetes.client.ApiClient(configuration)
        self.requests = 0

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> KubeObject:
        response = self._raw(method, path, query, body, content_type, "application/json")
        data = self._body(response)
        return json.loads(data) if data else {}

    def _raw(
        self, method: str, path: str, query: dict[str, str] | None, body: Any, content_type: str, accept: str
    ) -> Any:
        from kubernetes.client import exceptions

        url = self.configuration.host.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": accept, "Content-Type": content_type, "User-Agent": USER_AGENT}
        for auth in self.configuration.auth_settings().values():
            if auth.get("value"):
                headers[auth["key"]] = auth["value"]
        self.requests += 1
        try:
            return self.api_client.rest_client.request(
                method, url, headers=headers, body=body, _request_timeout=30
            )
        except exceptions.ApiException as error:
            raise _api_error(error.status or 0, error.reason or "", error.body) from None

    @staticmethod
    def _body(response: Any) -> bytes:
        data: bytes = response.read() if hasattr(response, "read") else response.data
        status = getattr(response, "status", 200)
        if status >= 400:
            raise _api_error(status, getattr(response, "reason", ""), data)
        return data

    def log(self, namespace: str, pod: str, container: str, *, limit_bytes: int) -> str:
        """The first ``limit_bytes`` of a container's log (``pods/log``; plain text, not JSON)."""
        query = {"container": container, "limitBytes": str(limit_bytes)}
        response = self._raw(
            "GET", PODS.path(namespace, pod, "log"), query, None, "application/json", "text/plain"
        )
        return self._body(response).decode("utf-8", errors="replace")

    def get(self, kind: Kind, namespace: str, name: str) -> KubeObject:
        return self.request("GET", kind.path(namespace, name))

    def list(
        self,
        kind: Kind,
        namespace: str,
        *,
        labels: dict[str, str] | None = None,
        label_in: tuple[str, list[str]] | None = None,
        fields: dict[str, str] | None = None,
    ) -> KubeObjects:
        """Objects of a namespace with these labels (and ``label_in``'s label having one of its
        values), and these field values (a field selector: the few fields each kind supports)."""
        requirements = [f"{k}={v}" for k, v in (labels or {}).items()]
        if label_in is not None:
            requirements.append(f"{label_in[0]} in ({','.join(sorted(set(label_in[1])))})")
        query = {"labelSelector": ",".join(requirements)} if requirements else {}
        if fields:
            query["fieldSelector"] = ",".join(f"{k}={v}" for k, v in fields.items())
        items: KubeObjects = self.request("GET", kind.path(namespace), query=query or None).get("items", [])
        # Servers filter; re-checking labels costs nothing and guards against one that doesn't.
        return [i for i in items if _has_labels(i, labels or {}, label_in)]

    def create(self, kind: Kind, namespace: str | None, body: KubeObject) -> KubeObject:
        return self.request("POST", kind.path(namespace), body=body)

    def delete(self, kind: Kind, namespace: str, name: str) -> KubeObject:
        """Delete with Background propagation (batch/v1 Jobs would otherwise orphan their pods)."""
        return self.request(
            "DELETE",
            kind.path(namespace, name),
            body={"kind": "DeleteOptions", "propagationPolicy": "Background"},
        )

    def merge_patch(
        self, kind: Kind, namespace: str, name: str, patch: KubeObject, *, subresource: str | None = None
    ) -> KubeObject:
        return self.request(
            "PATCH",
            kind.path(namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
        )

    def json_patch(self, kind: Kind, namespace: str, name: str, patch: KubeObjects) -> KubeObject:
        return self.request(
            "PATCH", kind.path(namespace, name), body=patch, content_type="application/json-patch+json"
        )


def _has_labels(item: KubeObject, labels: dict[str, str], label_in: tuple[str, list[str]] | None) -> bool:
    found = item.get("metadata", {}).get("labels") or {}
    if any(found.get(k) != v for k, v in labels.items()):
        return False
    return label_in is None or found.get(label_in[0]) in label_in[1]


def _api_error(status: int, reason: str, body: Any) -> errors.KubeApiError:
    message, causes = "", tuple[str, ...]()
    try:
        parsed = json.loads(body)
        message = parsed.get("message", "")
        causes = tuple(
            f"{c.get('field', '')}: {c.get('message', '')}"
            for c in (parsed.get("details") or {}).get("causes") or []
        )
    except (TypeError, ValueError, AttributeError):
        message = str(body or "")[:300]
    return errors.KubeApiError(status, reason, message, causes)
