"""The operator's requests held to docs/rbac.md: each one must be allowed by the rules there.

The rules are read from the YAML block of docs/rbac.md; a request's verb is what an API server's
authorizer would see (GET of a name: get, of a collection: list, a watch: watch, POST: create,
PATCH: patch, PUT: update, DELETE: delete). Discovery (``/api``, ``/apis``, ``/apis/<g>/<v>``) is
granted to every authenticated user by ``system:discovery`` and is not checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

from tests.e2e.cluster import ROOT
from tests.k8s.emulator import LoggedRequest

DOC = ROOT / "docs" / "rbac.md"
OPERATOR_AGENTS = ("kopf/", "modelwarmup-operator/")
_VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def rules(*, peering: bool = False) -> list[dict[str, Any]]:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None, f"no YAML block in {DOC}"
    parsed = yaml.safe_load(block.group(1))
    # The kopf.dev rules are for the chart's peering.enabled only; standalone, they are not granted.
    everything = [*parsed["rules"], *parsed["clusterRules"]]
    return [rule for rule in everything if peering or "kopf.dev" not in rule["apiGroups"]]


def verb(request: LoggedRequest) -> str:
    if request.is_watch:
        return "watch"
    if request.method == "GET":
        return "get" if request.name else "list"
    return _VERBS[request.method]


def _group_and_resource(request: LoggedRequest) -> tuple[str, str]:
    assert request.resource is not None
    api_version, plural = request.resource.rsplit("/", 1)
    group = api_version.split("/")[0] if "/" in api_version else ""
    return group, plural + (f"/{request.subresource}" if request.subresource else "")


def denied(requests: Iterable[LoggedRequest], *, peering: bool = False) -> list[str]:
    """The operator's requests that the rules do not allow, described."""
    allowed = rules(peering=peering)
    found = []
    for request in requests:
        if (
            not request.user_agent.startswith(OPERATOR_AGENTS)
            or request.resource is None
            or request.resource.endswith("/None")
        ):
            continue  # the tests' own requests, or discovery
        group, resource = _group_and_resource(request)
        wanted = verb(request)
        if not any(
            group in r["apiGroups"] and resource in r["resources"] and wanted in r["verbs"] for r in allowed
        ):
            found.append(f"{wanted} {group or 'core'}/{resource} ({request})")
    return sorted(set(found))
