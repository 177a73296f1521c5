"""The desired state of a ModelWarmup: which model, how to compile it, for which platforms.

Each rule the API server can check is written twice on purpose: once as schema (pattern, enum,
minimum, or a CEL rule in ``x-kubernetes-validations``) so ``kubectl apply`` rejects bad input at
once, and once in pydantic so the operator, the CLI and the tests give the same answer with the
field named. The tests hold both to the same table of bad examples.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from modelwarmup.api import quantity
from modelwarmup.api.common import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ApiModel,
    EnvVar,
    LabelSelector,
    Quantity,
    ResourceRequirements,
    Toleration,
    cel,
    check_labels,
    validations,
)
from modelwarmup.contracts import compile as compile_contract
from modelwarmup.contracts import wiring

# A Hugging Face repo id: "name" or "owner/name"; letters, digits, "-", "_", ".";
# no "--" or ".." (checked by CEL and pydantic, RE2 has no lookahead).
REPO_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$"
# A branch, tag or commit, by git's ref rules (git check-ref-format) within a safe alphabet: "/"-separated
# components that neither start nor end with "." and hold no "..", no empty component, no leading
# "-"; the worker joins it to refs/, so none of it may climb out. No ".lock" ending: CEL, pydantic.
_REF_COMPONENT = r"[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*"
REVISION = rf"^[A-Za-z0-9]([A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*)?(/{_REF_COMPONENT})*$"
COMMIT = r"^[0-9a-f]{40}$"  # a full commit sha: what branches and tags resolve to
REVISION_RULE = "!self.endsWith('.lock') && !self.contains('.lock/')"


def revision_problem(value: str) -> str | None:
    """Why ``value`` is no branch, tag or commit name (beyond :data:`REVISION`), or None."""
    if value.endswith(".lock") or ".lock/" in value:
        return f"{value!r}: a ref component must not end in '.lock'"
    return None


DEVICES = r"^(cpu|gpu(:[0-9]+(,[0-9]+)*)?)$"
ENDPOINT_RULE = "!self.matches('^https?://[^/?#]*@')"
ENDPOINT_CREDENTIALS = (
    "must not carry credentials (user:token@host): they would show in logs and status; "
    "put the token in tokenSecretRef"
)


def _check_repo_id(value: str) -> str:
    if "--" in value or ".." in value or value.endswith((".", "-")):
        raise ValueError(f"{value!r} is not a valid Hugging Face repo id: no '--', '..' or trailing '.'/'-'")
    return value


class SecretKeyRef(ApiModel):
    """A key of a Secret in the resource's namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)
    """The Secret's name."""
    key: str = Field(default="token", pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)
    """The key within the Secret that holds the Hugging Face token."""


class RepoRef(ApiModel):
    """A Hugging Face repository at a revision: the model, its draft model or a LoRA adapter."""

    repo: str = Field(
        pattern=REPO_ID,
        max_length=193,
        json_schema_extra=validations(
            cel(
                "!self.contains('--') && !self.contains('..') && !self.endsWith('.') && !self.endsWith('-')",
                "repo must not contain '--' or '..' nor end in '.' or '-'",
            )
        ),
    )
    """The Hugging Face repo id, e.g. "google/gemma-3-12b-it"."""
    revision: str = Field(
        default="main",
        pattern=REVISION,
        max_length=255,
        json_schema_extra=validations(cel(REVISION_RULE, "a ref component must not end in '.lock'")),
    )
    """A branch, tag or commit sha; resolved to a commit sha before downloading."""

    _repo_ok = field_validator("repo")(_check_repo_id)

    @field_validator("revision")
    @classmethod
    def _revision_ok(cls, value: str) -> str:
        if (problem := revision_problem(value)) is not None:
            raise ValueError(problem)
        return value


class ModelSource(RepoRef):
    """Where the model comes from and what of it to download."""

    allow_patterns: list[str] = Field(default_factory=list, max_length=64)
    """Glob patterns of files to download in addition to what serving needs (config, tokenizer, safetensors)."""
    ignore_patterns: list[str] = Field(default_factory=list, max_length=64)
    """Glob patterns of files never to download."""
    trust_remote_code: bool = False
    """Allow running the modelling code shipped in the repository. Off unless you trust its authors."""
    draft: RepoRef | None = None
    """A draft model for speculative decoding, downloaded with the model; compiled inside assisted generation."""
    loras: list[RepoRef] = Field(default_factory=list, max_length=16)
    """LoRA adapter repositories downloaded with the model; each is warmed applied with PEFT, as servers do."""
    token_secret_ref: SecretKeyRef | None = None
    """The Secret key holding a Hugging Face token, for gated or private models. Never the token itself."""
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/$.?#][^\s]*$",
        max_length=2048,
        json_schema_extra=validations(cel(ENDPOINT_RULE, ENDPOINT_CREDENTIALS)),
    )
    """A Hugging Face Hub mirror's URL (HF_ENDPOINT); the public hub when unset. No credentials in
    it: the token belongs in tokenSecretRef."""

    @field_validator("endpoint")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value is not None and re.match(r"^https?://[^/?#]*@", value):
            raise ValueError(ENDPOINT_CREDENTIALS)
        return value


class CompileSettings(compile_contract.CompileFields, ApiModel):
    """How to compile the model's torch graphs. Every field is part of the cache key."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.batchSizes) || !has(self.maxBatchSize) || self.batchSizes.all(b, b <= self.maxBatchSize)",
                "every entry must be <= maxBatchSize",
                field_path=".batchSizes",
            ),
            cel(
                "!has(self.sequenceLengths) || !has(self.maxLength) || self.sequenceLengths.all(n, n <= self.maxLength)",
                "every entry must be <= maxLength",
                field_path=".sequenceLengths",
            ),
        )
    )

    enabled: bool = True
    """Compile at all; when false only the weights are downloaded."""


GPU_REQUESTED = (
    "has(self.resources) && has(self.resources.limits) && self.resources.limits.exists(k, k.endsWith('/gpu')"
    " && string(self.resources.limits[k]) != '0')"
)


class Target(ApiModel):
    """One platform to warm for: a warm-up Job runs on a node like the serving nodes."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                f"!has(self.devices) || !self.devices.startsWith('gpu') || ({GPU_REQUESTED})",
                "devices gpu needs a GPU in resources.limits (e.g. nvidia.com/gpu)",
            ),
        )
    )

    name: str = Field(pattern=DNS_LABEL, max_length=40)
    """A short name for the platform, unique in the resource, e.g. "h100" or "l4"."""
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=64)
    """Node labels the warm-up Job must run on: the same as the serving pods'."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints the warm-up Job tolerates, as the serving pods do."""
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    """The warm-up container's resources; request GPUs in limits, e.g. {"nvidia.com/gpu": 1}."""
    devices: str | None = Field(default=None, pattern=DEVICES, max_length=64)
    """cpu, gpu (the first GPU) or gpu:0,1 (those GPUs); unset means the first GPU if any, else CPU."""
    runtime_class_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN)
    """The RuntimeClass the warm-up pod uses (e.g. "nvidia"), as the serving pods do."""

    _labels_ok = field_validator("node_selector")(check_labels)

    @model_validator(mode="after")
    def _gpu_requested(self) -> Target:
        wants_gpu = bool(self.devices and self.devices.startswith("gpu"))
        if wants_gpu and not any(
            key.endswith("/gpu") and str(value) != "0" for key, value in self.resources.limits.items()
        ):
            raise ValueError("devices gpu needs a GPU in resources.limits (e.g. nvidia.com/gpu)")
        return self


class PersistentVolumeClaimSource(ApiModel):
    """An existing PersistentVolumeClaim in the resource's namespace."""

    claim_name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)
    """The claim's name."""


AccessMode = Literal["ReadWriteMany", "ReadWriteOnce", "ReadOnlyMany", "ReadWriteOncePod"]


class CacheVolumeTemplate(ApiModel):
    """A PersistentVolumeClaim the operator creates if missing and never deletes."""

    name: str = Field(default="modelwarmup-cache", pattern=DNS_SUBDOMAIN, max_length=253)
    """The claim's name; ModelWarmups naming the same claim share one cache."""
    storage_class_name: str | None = None
    """The StorageClass; the cluster's default when unset."""
    size: Quantity
    """The claim's size, e.g. "200Gi"."""

    @field_validator("size")
    @classmethod
    def _not_empty(cls, size: int | str) -> int | str:
        if quantity.parse(size) <= 0:
            raise ValueError(f"{size!r}: a cache needs a size above zero")
        return size

    access_modes: list[AccessMode] = Field(
        default_factory=lambda: list[AccessMode](["ReadWriteMany"]), min_length=1
    )
    """Access modes; ReadWriteMany lets every serving pod mount the cache."""


class CacheSpec(ApiModel):
    """The volume that holds the cache: an existing claim, or one to create."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.persistentVolumeClaim) != has(self.create)",
                "set exactly one of persistentVolumeClaim or create",
            ),
        )
    )

    persistent_volume_claim: PersistentVolumeClaimSource | None = None
    """Use this existing claim."""
    create: CacheVolumeTemplate | None = None
    """Create this claim (no owner reference: deleting the ModelWarmup keeps the cache)."""
    sub_path: str = Field(default="", pattern=r"^([^/.][^/]*(/[^/.][^/]*)*)?$", max_length=1024)
    """A relative folder inside the volume for this cache; no "..", no leading "/"."""
    retention: Literal["Retain", "DeleteSuperseded"] = "Retain"
    """What happens to compiled entries a new revision or setting supersedes: Retain keeps them;
    DeleteSuperseded runs a prune Job once the Deployments switched (entries other ModelWarmups on this
    cache still use are kept; the shared Hugging Face cache is never pruned)."""

    @model_validator(mode="after")
    def _one_source(self) -> CacheSpec:
        if (self.persistent_volume_claim is None) == (self.create is None):
            raise ValueError("set exactly one of persistentVolumeClaim or create")
        return self

    @property
    def claim_name(self) -> str:
        """The name of the claim the cache lives on, whichever way it is given."""
        if self.persistent_volume_claim is not None:
            return self.persistent_volume_claim.claim_name
        assert self.create is not None
        return self.create.name


# Set by the operator from the spec (the token from tokenSecretRef, the hub from model.endpoint,
# the cache from cache): one set in worker.env would silently win over the spec.
OPERATOR_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HOME", "HF_HUB_OFFLINE")
WORKER_ENV_NO_TOKEN = cel(
    f"self.all(e, !(e.name in {list(OPERATOR_ENV)}))",
    "HF_TOKEN, HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE are set by the operator from the spec "
    "(tokenSecretRef, model.endpoint, cache): not in worker.env",
)
# A Hugging Face token by its shape, whatever the variable is called (pydantic only: a regex over
# 64 values of 32 KiB each would cost more than a CEL rule may).
HF_TOKEN_SHAPE = re.compile(r"(^|[^A-Za-z0-9])hf_[A-Za-z0-9]{30,}")


class WorkerSpec(ApiModel):
    """How warm-up Jobs run."""

    image: str | None = None
    """The worker image; the operator's default (chart value) when unset."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """When to pull the worker image."""
    service_account_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN)
    """The ServiceAccount warm-up pods run as."""
    backoff_limit: int = Field(default=3, ge=0, le=20)
    """Retries of a transient failure (network, 5xx); permanent failures are never retried."""
    active_deadline_seconds: int = Field(default=7200, ge=60)
    """The longest a warm-up Job may run, in seconds."""
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, json_schema_extra=validations(WORKER_ENV_NO_TOKEN)
    )
    """Extra environment variables for the worker (e.g. TORCHINDUCTOR_* knobs)."""

    @field_validator("env")
    @classmethod
    def _no_token(cls, env: list[EnvVar]) -> list[EnvVar]:
        for var in env:
            if var.name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
                raise ValueError(f"{var.name} must not be set here: use spec.model.tokenSecretRef")
            if var.name in OPERATOR_ENV:
                raise ValueError(f"{var.name} is set by the operator from the spec: not in worker.env")
            if HF_TOKEN_SHAPE.search(var.value):
                raise ValueError(
                    f"{var.name} holds what looks like a Hugging Face token: a Secret via "
                    "spec.model.tokenSecretRef keeps it out of the resource"
                )
        return env


# An absolute path of "/"-separated components that do not start with "." (so no "." or ".."), not "/".
MOUNT_PATH = r"^(/[A-Za-z0-9_-][A-Za-z0-9._-]*)+/?$"
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/sys", "/usr", "/var")


# A warm-up request as `modelwarmup rehearse --request` takes it: METHOD /path [JSON body].
WARMUP_REQUEST = r"^(GET|POST) /[^\s]*( .+)?$"


class RehearsalSpec(ApiModel):
    """Warm the Deployment's own server: run its container once in a Job, capture what it compiled."""

    container: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63)
    """The server's container; the Deployment's first container when unset."""
    ready_path: str | None = Field(default=None, pattern=r"^/[^\s]*$", max_length=1024)
    """The path that answers 200 once the server is ready; the container's readinessProbe
    (httpGet) when unset, else /health."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """The server's port; the readinessProbe's (a number), else the container's first port, else 8000."""
    requests: list[Annotated[str, Field(pattern=WARMUP_REQUEST, max_length=65536)]] = Field(
        default_factory=list, max_length=16
    )
    """Warm-up requests, "METHOD /path [JSON body]"; a short and a long /v1/completions when empty."""
    timeout_seconds: int = Field(default=1800, ge=30, le=86400)
    """How long the server may take to become ready in the rehearsal."""
    verify: bool = True
    """Start the server a second time from the captured caches and publish only if it compiled nothing."""
    engine_cache_path: str = Field(
        default=wiring.ENGINE_CACHE_MOUNT,
        pattern=MOUNT_PATH,
        max_length=1024,
        json_schema_extra=validations(cel(f"!(self in {list(SYSTEM_DIRS)})", "must not be a system folder")),
    )
    """Where the server's compile caches live, in the rehearsal and in serving pods (an emptyDir)."""

    @field_validator("engine_cache_path")
    @classmethod
    def _engine_not_a_system_folder(cls, value: str) -> str:
        if value in SYSTEM_DIRS:
            raise ValueError(f"{value!r} must not be a system folder: the mount would hide it")
        return value


class ServingSpec(ApiModel):
    """The serving Deployments to wire to the warmed cache once it is ready."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(has(self.names) && self.names.size() > 0 && has(self.selector))",
                "set names or selector, not both",
            ),
            cel(
                "!has(self.selector) || (has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0)"
                " || (has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)",
                "selector must name at least one label or expression (an empty one selects every Deployment)",
                field_path=".selector",
            ),
            cel(
                "!has(self.rehearsal) || (has(self.names) && self.names.size() == 1)",
                "rehearsal needs exactly one Deployment in names: the one whose server is rehearsed",
            ),
        )
    )

    names: list[Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]] = Field(
        default_factory=list, max_length=64
    )
    """Deployments in the resource's namespace, by name."""
    selector: LabelSelector | None = None
    """Deployments in the resource's namespace, by label."""
    containers: list[str] = Field(default_factory=list, max_length=32)
    """Which containers get the cache mount and env; all when empty."""
    mount_path: str = Field(
        default=wiring.SERVING_CACHE_MOUNT,
        pattern=MOUNT_PATH,
        max_length=1024,
        json_schema_extra=validations(cel(f"!(self in {list(SYSTEM_DIRS)})", "must not be a system folder")),
    )
    """Where the cache is mounted in the serving containers: an absolute path without "." or ".."
    components, not "/" nor a system folder (/etc, /usr, ...), which the mount would hide."""
    verify_init_container: bool = True
    """Add an init container that runs `modelwarmup verify` before the server starts."""
    rehearsal: RehearsalSpec | None = None
    """Warm the Deployment's own server (vLLM, SGLang, TGI...) by rehearsal instead of compiling
    with modelwarmup's loader: spec.compile is then not used."""

    @model_validator(mode="after")
    def _names_or_selector(self) -> ServingSpec:
        if self.names and self.selector is not None:
            raise ValueError("set names or selector, not both")
        if self.rehearsal is not None and len(self.names) != 1:
            raise ValueError(
                "rehearsal needs exactly one Deployment in names: the one whose server is rehearsed"
            )
        if self.selector is not None and not (self.selector.match_labels or self.selector.match_expressions):
            # Kubernetes reads an empty selector as "everything": every Deployment of the namespace.
            raise ValueError(
                "selector must name at least one label or expression (an empty one selects every Deployment)"
            )
        return self

    @field_validator("mount_path")
    @classmethod
    def _not_a_system_folder(cls, value: str) -> str:
        if value in SYSTEM_DIRS:
            raise ValueError(f"{value!r} must not be a system folder: the mount would hide it")
        return value


class ModelWarmupSpec(ApiModel):
    """What to warm: a model, compiled with these settings, for these platforms, into this cache."""

    model: ModelSource
    """The Hugging Face model to download."""
    compile: CompileSettings = Field(default_factory=CompileSettings)
    """How to compile its torch graphs."""
    targets: list[Target] = Field(
        min_length=1,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """The platforms to warm for, one warm-up Job each; names must be unique."""
    cache: CacheSpec
    """The volume that holds the cache."""
    worker: WorkerSpec = Field(default_factory=WorkerSpec)
    """How warm-up Jobs run."""
    serving: ServingSpec | None = None
    """The Deployments to wire to the cache once it is ready."""

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[Target]) -> list[Target]:
        seen: set[str] = set()
        for target in targets:
            if target.name in seen:
                raise ValueError(f"duplicate target name {target.name!r}; names must be unique")
            seen.add(target.name)
        return targets

    # pydantic only: a CEL rule on the spec that reads both targets and serving is costed over
    # every field below the spec, past the API server's budget.
    @model_validator(mode="after")
    def _one_target_to_rehearse(self) -> ModelWarmupSpec:
        if self.serving is not None and self.serving.rehearsal is not None and len(self.targets) != 1:
            raise ValueError(
                "a rehearsal runs the Deployment's server on one kind of node: exactly one target"
            )
        return self
