"""Shared building blocks of the ModelWarmup API: the base model and Kubernetes' own shapes.

The pydantic models are the single source of truth for the custom resource: the CRD's schema,
its ``kubectl explain`` text (attribute docstrings become descriptions), its defaults and the
operator's validation all come from here. Kubernetes-only schema features (CEL rules,
int-or-string, list types) ride along as JSON-schema extras that :mod:`modelwarmup.crdgen` keeps.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from modelwarmup.api import quantity

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# A label key: an optional DNS-subdomain prefix and "/", then a name of at most 63 characters.
LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
QUALIFIED_NAME_MAX = 317  # a 253-character prefix, "/", a 63-character name


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Keys and values as the API server accepts them in a nodeSelector or on an object."""
    for key, value in labels.items():
        name = key.rpartition("/")[2]
        if not re.fullmatch(LABEL_KEY, key) or len(key) > QUALIFIED_NAME_MAX or len(name) > 63:
            raise ValueError(
                f"{key!r} is not a label key (an optional DNS prefix and '/', then a name of <= 63)"
            )
        if not re.fullmatch(LABEL_VALUE, value):
            raise ValueError(f"{key}: {value!r} is not a label value (<= 63 letters, digits, '-', '_', '.')")
    return labels


def cel(rule: str, message: str, *, field_path: str | None = None) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry: a rule the API server checks with CEL.

    ``field_path`` (e.g. ".batchSizes") is where the API server reports a broken rule, so that
    it names the same field as the models do.
    """
    return {"rule": rule, "message": message, **({"fieldPath": field_path} if field_path else {})}


def validations(*rules: dict[str, Any]) -> dict[str, Any]:
    """JSON-schema extras carrying CEL rules for the API server."""
    return {"x-kubernetes-validations": list(rules)}


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
def _quantity(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("should match a quantity such as 500m, 64Gi or 2")
    quantity.parse(value)
    return value


Quantity = Annotated[
    int | Annotated[str, StringConstraints(max_length=64, pattern=quantity.PATTERN)],
    BeforeValidator(_quantity),  # one error naming the field, not one per branch of the union
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
# Map sizes: a CEL rule iterating a map is refused by the API server unless it has maxProperties.
MAX_RESOURCE_NAMES = 32


class Toleration(ApiModel):
    """A Kubernetes toleration, as in a Pod spec."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(has(self.operator) && self.operator == 'Exists' && has(self.value) && self.value != '')",
                "value must be empty when operator is Exists",
                field_path=".value",
            ),
            cel(
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "tolerationSeconds needs effect NoExecute",
                field_path=".tolerationSeconds",
            ),
        )
    )

    key: str | None = Field(default=None, max_length=QUALIFIED_NAME_MAX)
    """The taint key the toleration applies to; empty matches all keys (with operator Exists)."""
    # maxLength: the rules below compare these, and a real API server bounds their cost by it.
    operator: Literal["Exists", "Equal"] | None = Field(default=None, json_schema_extra={"maxLength": 8})
    """How the key relates to the value: Exists or Equal (the default)."""
    value: str | None = Field(default=None, max_length=63)
    """The taint value to match when the operator is Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, json_schema_extra={"maxLength": 16}
    )
    """The taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """How long a NoExecute taint is tolerated before eviction, in seconds."""

    @field_validator("value")
    @classmethod
    def _no_value_with_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.data.get("operator") == "Exists":
            raise ValueError("value must be empty when operator is Exists")
        return value

    @field_validator("toleration_seconds")
    @classmethod
    def _seconds_need_no_execute(cls, seconds: int | None, info: ValidationInfo) -> int | None:
        if seconds is not None and info.data.get("effect") != "NoExecute":
            raise ValueError("tolerationSeconds needs effect NoExecute")
        return seconds


class ResourceRequirements(ApiModel):
    """Compute resources of the warm-up container, as in a Pod spec."""

    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=MAX_RESOURCE_NAMES)
    """Maximum resources, e.g. {"nvidia.com/gpu": 1, "memory": "64Gi"}; GPUs are requested here."""
    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=MAX_RESOURCE_NAMES)
    """Minimum resources the scheduler reserves, e.g. {"cpu": "8", "memory": "32Gi"}."""

    @model_validator(mode="after")
    def _as_the_api_server_checks(self) -> ResourceRequirements:
        quantity.check_resources(dict(self.limits), dict(self.requests))
        return self


class LabelSelectorRequirement(ApiModel):
    """One expression of a label selector."""

    key: str = Field(max_length=317)
    """The label key the selector applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(json_schema_extra={"maxLength": 12})
    """How the key relates to the values."""
    values: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=64)
    """The values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(ApiModel):
    """A Kubernetes label selector; all given terms must match."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict, max_length=64)
    """Labels that must all be present with these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=32)
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
    """The condition's type: Ready, WeightsDownloaded, Compiled, ServingPatched or ServingWarm."""
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
