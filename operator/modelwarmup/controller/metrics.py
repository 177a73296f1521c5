"""Prometheus metrics of the operator, on a registry of its own (no module globals)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from modelwarmup.api.status import ModelWarmupStatus


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.warmups = Gauge(
            "modelwarmup_targets", "Warm-up targets by phase.", ["phase"], registry=self.registry
        )
        self.job_seconds = Histogram(
            "modelwarmup_job_duration_seconds",
            "Download plus compile time of finished warm-ups.",
            buckets=(10, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200),
            registry=self.registry,
        )
        self.failures = Counter(
            "modelwarmup_failures_total", "Failed warm-ups by reason.", ["reason"], registry=self.registry
        )
        self.serving_starts = Counter(
            "modelwarmup_serving_starts_total",
            "Serving pods whose log was judged, by how they started (warm, cold, unknown).",
            ["result"],
            registry=self.registry,
        )
        self.reconciles = Counter("modelwarmup_reconciles_total", "Reconciles run.", registry=self.registry)
        self.reconcile_errors = Counter(
            "modelwarmup_reconcile_errors_total", "Reconciles that raised.", registry=self.registry
        )
        self._phases: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)

    def record(self, namespace: str, name: str, before: ModelWarmupStatus, after: ModelWarmupStatus) -> None:
        """Update the gauges and count what changed between two statuses of one resource."""
        old = {t.name: t.phase for t in before.targets}
        with self._lock:
            for stale in [k for k in self._phases if k[:2] == (namespace, name)]:
                del self._phases[stale]
            for target in after.targets:
                self._phases[(namespace, name, target.name)] = target.phase
                if old.get(target.name) == target.phase:
                    continue
                if target.phase == "Succeeded":
                    self.job_seconds.observe(
                        (target.download_seconds or 0.0) + (target.compile_seconds or 0.0)
                    )
                if target.phase == "Failed":
                    self.failures.labels(reason=target.reason or "Unknown").inc()
            self._refresh()
        judged = {(s.deployment, s.model_key, s.pod, s.warm) for s in before.serving_starts}
        for start in after.serving_starts:
            if (start.deployment, start.model_key, start.pod, start.warm) not in judged:
                result = "unknown" if start.warm is None else "warm" if start.warm else "cold"
                self.serving_starts.labels(result=result).inc()

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            for stale in [k for k in self._phases if k[:2] == (namespace, name)]:
                del self._phases[stale]
            self._refresh()

    def _refresh(self) -> None:
        for phase in ("Pending", "Running", "Succeeded", "Failed", "CacheHit"):
            self.warmups.labels(phase=phase).set(sum(1 for p in self._phases.values() if p == phase))
