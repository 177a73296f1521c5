"""The operator's settings, read once from the environment (and flags) and passed explicitly."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from modelwarmup import __version__
from modelwarmup.controller import credentials

PREFIX = "MODELWARMUP_"
IN_CLUSTER_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


class OperatorSettings(BaseModel):
    """What the operator needs to know about its environment."""

    model_config = ConfigDict(frozen=True)

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; all when empty."""
    worker_image: str = f"ghcr.io/modelwarmup/worker:{__version__}"
    """Worker image for Jobs whose spec names none."""
    runtime_image: str = ""
    """Image of the serving pods' verify init container; the worker image when empty."""
    worker_uid: int = 1000
    """UID/GID the worker runs as (and the cache volume's fsGroup)."""
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    """Port of the Prometheus metrics endpoint; 0 turns it off."""
    liveness_port: int = Field(default=8081, ge=0, le=65535)
    """Port of kopf's liveness endpoint; 0 turns it off."""
    resync_seconds: float = Field(default=300.0, gt=0)
    """The slow timer that re-checks every resource, in case an event was missed."""
    pending_recheck_seconds: float = Field(default=15.0, gt=0)
    """How often a resource whose warm-up Job has no running pod yet is looked at again (the
    Job controller's FailedCreate Events trigger nothing)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """The operator's log level."""
    log_format: Literal["text", "json"] = "text"
    """Plain text lines, or one JSON object per line."""
    peering: bool = False
    """Run kopf peering (several replicas, one active); standalone otherwise."""
    peering_name: str = Field(
        default="modelwarmup", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63
    )
    """The kopf peering object the replicas share (created at startup when missing)."""
    peering_priority: int | None = Field(default=None, ge=0)
    """This replica's priority among its peers (the highest acts, the others wait); random when
    unset, since peers of equal priority all pause."""
    kubeconfig: str | None = None
    """A kubeconfig (or several joined by ":", as $KUBECONFIG); the pod's ServiceAccount or ~/.kube/config when unset."""
    kube_context: str | None = None
    """The kubeconfig context to use; its current context when unset."""
    service_account_dir: str = str(credentials.SERVICE_ACCOUNT_DIR)
    """Where a pod's ServiceAccount token and CA are mounted (in-cluster login)."""
    in_cluster_env: dict[str, str] = Field(default_factory=dict)
    """KUBERNETES_SERVICE_HOST/PORT as the kubelet sets them in a pod; empty outside one."""

    def credentials_source(self) -> credentials.Source:
        """Where the operator's Kubernetes credentials come from."""
        return credentials.Source(
            kubeconfig=self.kubeconfig,
            context=self.kube_context,
            service_account_dir=Path(self.service_account_dir),
            environ=self.in_cluster_env,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> OperatorSettings:
        def get(name: str) -> str | None:
            return environ.get(PREFIX + name) or None

        values: dict[str, object] = {}
        if namespaces := get("NAMESPACES"):
            values["namespaces"] = tuple(n.strip() for n in namespaces.split(",") if n.strip())
        for field, name in (
            ("worker_image", "WORKER_IMAGE"),
            ("runtime_image", "RUNTIME_IMAGE"),
            ("worker_uid", "WORKER_UID"),
            ("metrics_port", "METRICS_PORT"),
            ("liveness_port", "LIVENESS_PORT"),
            ("resync_seconds", "RESYNC_SECONDS"),
            ("pending_recheck_seconds", "PENDING_RECHECK_SECONDS"),
            ("service_account_dir", "SERVICE_ACCOUNT_DIR"),
            ("log_level", "LOG_LEVEL"),
            ("log_format", "LOG_FORMAT"),
            ("peering", "PEERING"),
            ("peering_name", "PEERING_NAME"),
            ("peering_priority", "PEERING_PRIORITY"),
        ):
            if (value := get(name)) is not None:
                values[field] = value
        if kubeconfig := environ.get("KUBECONFIG"):
            values["kubeconfig"] = kubeconfig
        values["in_cluster_env"] = {k: environ[k] for k in IN_CLUSTER_ENV if environ.get(k)}
        return cls.model_validate(values)
