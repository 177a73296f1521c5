"""The ModelWarmup custom resource as a whole, and the names Kubernetes knows it by."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelwarmup.api.spec import ModelWarmupSpec
from modelwarmup.api.status import ModelWarmupStatus
from modelwarmup.contracts import wiring

GROUP: Final = wiring.GROUP
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ModelWarmup"
PLURAL: Final = "modelwarmups"
SINGULAR: Final = "modelwarmup"
SHORT_NAMES: Final = ("mw",)


class ObjectMeta(BaseModel):
    """The part of metadata the operator reads; everything else passes through untouched."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelWarmup(BaseModel):
    """A model to download and pre-compile once, for every serving pod of the named platforms."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    api_version: Literal["modelwarmup.dev/v1alpha1"] = Field(
        default="modelwarmup.dev/v1alpha1", alias="apiVersion"
    )
    kind: Literal["ModelWarmup"] = KIND
    metadata: ObjectMeta
    spec: ModelWarmupSpec
    status: ModelWarmupStatus = Field(default_factory=ModelWarmupStatus)

    @classmethod
    def from_body(cls, body: Any) -> ModelWarmup:
        """Validate a resource body as the API server or a manifest gives it."""
        return cls.model_validate(dict(body))
