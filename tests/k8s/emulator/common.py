"""What every part of the emulator shares: constants, error helpers, the request log's records."""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import kmock

T = TypeVar("T")

ArrayKey = tuple[kmock.resource, str | None, str]

ALL_VERBS = frozenset({"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACES = kmock.resource("", "v1", "namespaces")
JOBS_V1 = kmock.resource("batch", "v1", "jobs")
PODS = kmock.resource("", "v1", "pods")
SERVICE_ACCOUNTS = kmock.resource("", "v1", "serviceaccounts")

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
