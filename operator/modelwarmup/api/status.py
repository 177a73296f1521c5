"""The observed state of a ModelWarmup, written by the operator once per reconcile.

Readiness lives in ``conditions`` only (no phase string that could disagree with them); the
per-target entries carry the details a person needs to understand a warm-up.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field

from modelwarmup.api.common import ApiModel, Condition


class ConditionType(StrEnum):
    """The conditions of a ModelWarmup, in the order they are listed."""

    READY = "Ready"
    WEIGHTS_DOWNLOADED = "WeightsDownloaded"
    COMPILED = "Compiled"
    SERVING_PATCHED = "ServingPatched"
    SERVING_WARM = "ServingWarm"


class Reason(StrEnum):
    """The operator's own condition reasons; a failed warm-up reports the worker's (modelwarmup.errors)."""

    JOB_PENDING = "JobPending"
    WARMING = "Warming"
    JOB_FAILED = "JobFailed"
    CACHE_HIT = "CacheHit"
    DOWNLOADED = "Downloaded"
    COMPILED = "Compiled"
    COMPILE_DISABLED = "CompileDisabled"
    READY = "Ready"
    NO_SERVING = "NoServing"
    PATCHED = "Patched"
    WAITING_FOR_CACHE = "WaitingForCache"
    DEPLOYMENT_NOT_FOUND = "DeploymentNotFound"
    DEPLOYMENT_CONFLICT = "DeploymentConflict"
    CONTAINER_NOT_FOUND = "ContainerNotFound"
    INVALID_SPEC = "InvalidSpec"
    REJECTED = "RejectedByApiServer"
    REHEARSED = "Rehearsed"
    DRIFTED = "Drifted"
    NOT_REHEARSABLE = "NotRehearsable"
    SERVED_WARM = "ServedWarm"
    SERVED_COLD = "ServedCold"
    WAITING_FOR_SERVING_POD = "WaitingForServingPod"


TargetPhase = Literal["Pending", "Running", "Succeeded", "Failed", "CacheHit"]


class TargetStatus(ApiModel):
    """What is known of one target's warm-up."""

    model_config = ConfigDict(extra="ignore")

    name: str
    """The target's name from spec.targets."""
    entry_key: str | None = None
    """The entry this target warms: <model-key>/<platform-key> under compiled/ in the cache."""
    job: str | None = None
    """The warm-up Job's name."""
    phase: TargetPhase = "Pending"
    """Pending, Running, Succeeded, Failed, or CacheHit (an entry was already complete)."""
    platform: dict[str, str] = Field(default_factory=dict)
    """The platform fingerprint the worker saw: torch, CUDA, GPU or CPU ISA, Python."""
    image_id: str | None = None
    """The image its last pod ran, by digest, as the node reported it (containerStatuses[].imageID):
    in rehearsal mode the server's image, which serving pods are compared with."""
    bytes: int | None = Field(default=None, ge=0)
    """Bytes the cache entry holds (weights and compiled artifacts)."""
    download_seconds: float | None = Field(default=None, ge=0)
    """How long the download took."""
    compile_seconds: float | None = Field(default=None, ge=0)
    """How long compilation took."""
    reason: str = ""
    """The worker's CamelCase reason for its last result, e.g. Warmed, CacheHit, RepositoryNotFound."""
    message: str = ""
    """The worker's last word: its summary, or why it failed."""
    attempts: int = Field(default=0, ge=0)
    """How many warm-up pods have run for this target."""


class ServingStart(ApiModel):
    """What the first lines of one serving pod's log said about how it started."""

    model_config = ConfigDict(extra="ignore")

    deployment: str
    """The serving Deployment."""
    pod: str
    """The pod whose log was read: the newest ready one carrying the model key."""
    model_key: str
    """The model key the pod was wired to."""
    image_id: str | None = None
    """The image its server container runs, by digest, as the node reported it."""
    warm: bool | None = None
    """True: the server loaded compiled code from the cache; False: it compiled, or started
    cold (with the reason); unset: its log shows neither yet (read again later)."""
    evidence: str = Field(default="", max_length=1024)
    """The log lines the verdict rests on."""


class ModelWarmupStatus(ApiModel):
    """The observed state, written by the operator."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation this status describes."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Ready, WeightsDownloaded, Compiled, ServingPatched and ServingWarm, in Kubernetes' condition
    shape."""
    resolved_revision: str | None = None
    """The commit sha the model's revision resolved to."""
    pinned_revisions: list[str] = Field(default_factory=list, max_length=32)
    """REPO@REVISION=COMMIT for each branch or tag of the model, draft and adapters, resolved once
    and passed to every target's warm-up, so that all of them warm the same commits."""
    resolution_key: str | None = None
    """A digest of what pinnedRevisions were resolved from (revisions, hub, credentials, the
    refresh annotation): when it no longer matches the spec, the revisions are resolved again."""
    last_handled_refresh: str | None = None
    """The value of the refresh.modelwarmup.dev/requested-at annotation that the current pins answer."""
    model_key: str | None = None
    """The model key every target warmed (its entries are compiled/<model-key>/<platform-key>);
    serving Deployments carry it in their modelwarmup.dev/model-key annotation."""
    targets: list[TargetStatus] = Field(default_factory=list)
    """One entry per spec.targets entry."""
    patched_deployments: list[str] = Field(default_factory=list)
    """The Deployments wired to the cache."""
    serving_starts: list[ServingStart] = Field(default_factory=list)
    """For each wired Deployment, how a pod of the current model key started (ServingWarm)."""
