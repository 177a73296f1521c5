"""Read ModelWarmup manifests from YAML and validate them as the operator would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import yaml

from modelwarmup import errors
from modelwarmup.api.resource import API_VERSION, KIND, ModelWarmup


def load_documents(path: Path) -> Iterator[dict[str, Any]]:
    """Every non-empty YAML document of a file."""
    with path.open(encoding="utf-8") as stream:
        for document in yaml.safe_load_all(stream):
            if document:
                if not isinstance(document, dict):
                    raise errors.InvalidSpecError([f"{path}: a manifest must be a mapping"])
                yield document


def is_modelwarmup(body: dict[str, Any]) -> bool:
    """Whether a manifest is meant as a ModelWarmup (other kinds may share its file)."""
    return body.get("kind") == KIND or str(body.get("apiVersion", "")).startswith("modelwarmup.dev/")


def validate_body(body: dict[str, Any]) -> ModelWarmup:
    """Validate one ModelWarmup body; raises InvalidSpecError naming each bad field."""
    problems = []
    if body.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: must be {API_VERSION}")
    if body.get("kind") != KIND:
        problems.append(f"kind: must be {KIND}")
    if problems:
        raise errors.InvalidSpecError(problems)
    try:
        return ModelWarmup.from_body(body)
    except pydantic.ValidationError as error:
        raise errors.InvalidSpecError(errors.describe_validation_error(error, root="")) from None
