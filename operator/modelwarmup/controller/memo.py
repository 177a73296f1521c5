"""What the operator's handlers share in kopf's memo: settings, the API client, metrics, and the
few facts one process must remember between reconciles (locks, who waits on which entry, the
status it last wrote). Nothing here is module-global: a fresh operator gets a fresh one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from modelwarmup.api.status import ModelWarmupStatus
from modelwarmup.controller import served
from modelwarmup.controller.kubeapi import KubeApi
from modelwarmup.controller.metrics import Metrics
from modelwarmup.controller.settings import OperatorSettings


class Runtime:
    """What handlers share, kept in kopf's memo: settings, the API client, metrics, locks."""

    def __init__(self, settings: OperatorSettings, api: KubeApi, metrics: Metrics) -> None:
        self.settings = settings
        self.api = api
        self.metrics = metrics
        self._locks: dict[tuple[str, str], threading.RLock] = defaultdict(threading.RLock)
        self._key_locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        # Which resources wait on which warm-up key, so that a Job's event reaches every resource
        # sharing its entry without listing the namespace's ModelWarmups. Every resource is
        # reconciled when the operator starts (resume), which fills it.
        self._waiting: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._keys_of: dict[tuple[str, str], set[str]] = {}
        self._written: dict[tuple[str, str], dict[str, Any]] = {}
        self._rechecks: dict[tuple[str, str], tuple[int, float]] = {}  # (rechecks so far, next due)
        self._guard = threading.Lock()

    def lock(self, namespace: str, name: str) -> threading.RLock:
        """One resource's lock: its reconciles run one at a time (re-entrant for a caller holding it)."""
        with self._guard:
            return self._locks[(namespace, name)]

    @contextlib.contextmanager
    def warming(self, namespace: str, keys: Iterable[str]) -> Iterator[None]:
        """Hold the locks of these warm-up keys (sorted: no deadlock between two resources).

        Two resources asking for the same entry then observe and create one after the other, so
        the second sees the first one's Job and shares it instead of creating its own.
        """
        with self._guard:
            locks = [self._key_locks[(namespace, key)] for key in sorted(set(keys))]
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            yield

    def waits(self, namespace: str, name: str, keys: Iterable[str]) -> None:
        """Record that ``name`` waits on these warm-up keys (its targets' current ones)."""
        with self._guard:
            for key in self._keys_of.pop((namespace, name), set()):
                self._waiting[(namespace, key)].discard(name)
            self._keys_of[(namespace, name)] = set(keys)
            for key in self._keys_of[(namespace, name)]:
                self._waiting[(namespace, key)].add(name)

    def wanted_by_others(self, namespace: str, name: str) -> frozenset[str]:
        """The warm-up keys the other resources of a namespace wait on (their Jobs must stay)."""
        with self._guard:
            return frozenset(
                key
                for (ns, other), keys in self._keys_of.items()
                if ns == namespace and other != name
                for key in keys
            )

    def waiting_on(self, namespace: str, key: str) -> set[str]:
        """The resources whose targets want the entry of this warm-up key."""
        with self._guard:
            return set(self._waiting.get((namespace, key), ()))

    def written(
        self, namespace: str, name: str, status: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The status this process last wrote for a resource (and, given one, remember it).

        A body from a watch event or a read can predate our own last status write (two triggers
        for one resource in quick succession); judging transitions against it would post their
        Events twice. Only the operator writes status, so its last write is the latest status.
        """
        with self._guard:
            if status is not None:
                self._written[(namespace, name)] = status
            return self._written.get((namespace, name))

    def serving_unjudged(self, namespace: str, model_key: str) -> list[str]:
        """The resources (by the status last written) serving ``model_key`` whose wired
        Deployments do not all have a verdict on how their pods started (ServingWarm)."""
        with self._guard:
            serving = [
                (name, written)
                for (ns, name), written in self._written.items()
                if ns == namespace and written.get("modelKey") == model_key
            ]
        found = []
        for name, written in serving:
            status = ModelWarmupStatus.model_validate(written)
            if served.unjudged(status, status.patched_deployments):
                found.append(name)
        return sorted(found)

    def recheck_due(self, namespace: str, name: str) -> bool:
        """Whether the pending-recheck timer's tick should reconcile: the n-th time after
        ``pending_recheck_seconds * 2**n`` (capped at the resync interval), so a Job that stays
        without a pod for long is looked at less and less often."""
        now = time.monotonic()
        with self._guard:
            count, due = self._rechecks.get((namespace, name), (0, 0.0))
            if now < due:
                return False
            interval = self.settings.pending_recheck_seconds
            backoff = min(interval * 2**count, self.settings.resync_seconds)
            self._rechecks[(namespace, name)] = (count + 1, now + backoff - interval / 2)
            return True

    def recheck_done(self, namespace: str, name: str) -> None:
        """No target waits unexplained any more: the next wait starts rechecking quickly again."""
        with self._guard:
            self._rechecks.pop((namespace, name), None)

    def forget(self, namespace: str, name: str) -> None:
        self.waits(namespace, name, ())
        with self._guard:
            self._rechecks.pop((namespace, name), None)
            self._locks.pop((namespace, name), None)
            self._keys_of.pop((namespace, name), None)
            self._written.pop((namespace, name), None)
