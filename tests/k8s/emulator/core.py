"""The emulator: kmock's KubernetesEmulator with the verbs of a real API server (see the package docstring)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import attrs
import kmock

from .common import (
    ArrayKey,
    LoggedRequest,
    WatchLog,
)
from .crds import Crds
from .creates import Creates
from .deletion import Deletion
from .entry import Entry
from .patches import Patches
from .reads import Reads
from .state import StateHelpers


@attrs.define(kw_only=True)
class ApiServerEmulator(
    Entry, StateHelpers, Reads, Creates, Patches, Deletion, Crds, kmock.KubernetesEmulator
):
    """kmock's ``KubernetesEmulator`` with the verbs re-implemented with real API semantics."""

    strict_namespaces: bool = False
    gc_delay: float = 0.0  # seconds before the garbage collector reacts (real: ~immediately)
    bookmark_interval: float | None = 60.0  # real servers send a BOOKMARK about every minute
    watch_cache_size: int = 10_000  # events kept per resource for watch resumption
    tokens: frozenset[str] = frozenset()  # bearer tokens it accepts; every other request is a 401

    request_log: list[LoggedRequest] = attrs.field(factory=list, init=False)
    # GAP-LOG: what a kubelet would serve as a container's log: (namespace, pod, container) -> file.
    pod_logs: dict[tuple[str, str, str], Path] = attrs.field(factory=dict, init=False)
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
