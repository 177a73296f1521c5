"""Shared building blocks of the ModelWarmup API: the base model and Kubernetes' own shapes.

The pydantic models are the single source of truth for the custom resource: the CRD's schema,
its ``kubectl explain`` text (attribute docstrings become descriptions), its defaults and the
operator's validation all come from here. Kubernetes-only schema features (CEL rules,
int-or-string, list types) ride along as JSON-schema extras that :mod:`modelwarmup.crdgen` keeps.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


def cel(rule: str, message: str, *, field_path: str | None = None) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry: a rule the API server checks with CEL.

    ``field_path`` (e.g. ".batchSizes") is where the API server reports a broken rule, so that
    it names the same field as the models do.
    """
    return {"rule": rule, "message": message, **({"fieldPath": field_path} if field_path else {})}


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields rejected, docs from docstrings."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        frozen=True,
    )


# A resource quantity ("8Gi", "500m", 2): Kubernetes' int-or-string. Bounded, as every string a
# CEL rule may walk must be for the API server to accept the rule's cost.
Quantity = Annotated[
    int | Annotated[str, StringConstraints(max_length=64)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
# Map sizes: a CEL rule iterating a map is refused by the API server unless it has maxProperties.
MAX_RESOURCE_NAMES = 32


class Toleration(ApiModel):
    """A Kubernetes toleration, as in a Pod spec."""

    key: str | None = None
    """The taint key the toleration applies to; empty matches all keys (with operator Exists)."""
    operator: Literal["Exists", "Equal"] | None = None
    """How the key relates to the value: Exists or Equal (the default)."""
    value: str | None = None
    """The taint value to match when the operator is Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """How long a NoExecute taint is tolerated before eviction, in seconds."""


class ResourceRequirements(ApiModel):
    """Compute resources of the warm-up container, as in a Pod spec."""

    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=MAX_RESOURCE_NAMES)
    """Maximum resources, e.g. {"nvidia.com/gpu": 1, "memory": "64Gi"}; GPUs are requested here."""
    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=MAX_RESOURCE_NAMES)
    """Minimum resources the scheduler reserves, e.g. {"cpu": "8", "memory": "32Gi"}."""


class LabelSelectorRequirement(ApiModel):
    """One expression of a label selector."""

    key: str
    """The label key the selector applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: list[str] = Field(default_factory=list)
    """The values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(ApiModel):
    """A Kubernetes label selector; all given terms must match."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    """Labels that must all be present with these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)
    """Set-based requirements that must all hold."""


class EnvVar(ApiModel):
    """An extra environment variable with a literal value."""

    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=253)
    """The variable's name."""
    value: str = Field(default="", max_length=32768)
    """The variable's value. Never put a token here: use spec.model.tokenSecretRef."""


class Condition(ApiModel):
    """A status condition in Kubernetes' standard shape (metav1.Condition)."""

    model_config = ConfigDict(extra="ignore")

    type: str
    """The condition's type: Ready, WeightsDownloaded, Compiled or ServingPatched."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str = Field(pattern=CONDITION_REASON)
    """A CamelCase word for why, e.g. Warming, JobFailed, CacheHit, InvalidSpec."""
    message: str = ""
    """A human-readable explanation."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation the condition was computed from."""
    last_transition_time: str
    """When the status last flipped (RFC 3339); unchanged while the status stays the same."""


def validations(*rules: dict[str, Any]) -> dict[str, Any]:
    """JSON-schema extras carrying CEL rules for the API server."""
    return {"x-kubernetes-validations": list(rules)}
