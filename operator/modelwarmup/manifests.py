"""Read ModelWarmup manifests from YAML and validate them as the operator would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import yaml

from modelwarmup import errors
from modelwarmup.api.resource import API_VERSION, KIND, ModelWarmup

__all__ = ["KIND", "is_modelwarmup", "load_documents", "validate_body"]


def load_documents(path: Path) -> Iterator[dict[str, Any]]:
    """Every non-empty YAML document of a file; a file that cannot be read or parsed is an
    InvalidSpecError saying why (not a traceback)."""
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except IsADirectoryError:
        raise errors.InvalidSpecError(["is a directory, not a manifest file"]) from None
    except FileNotFoundError:
        raise errors.InvalidSpecError(["no such file"]) from None
    except UnicodeDecodeError as error:
        raise errors.InvalidSpecError([f"not UTF-8 text (byte {error.start})"]) from None
    except OSError as error:
        raise errors.InvalidSpecError([f"cannot read it: {error.strerror}"]) from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise errors.InvalidSpecError(
            [f"not valid YAML{line}: {getattr(error, 'problem', None) or error}"]
        ) from None
    for document in documents:
        if document:
            if not isinstance(document, dict):
                raise errors.InvalidSpecError(["a manifest must be a mapping"])
            yield document


def is_modelwarmup(body: dict[str, Any]) -> bool:
    """Whether a manifest is meant as a ModelWarmup (other kinds may share its file)."""
    return body.get("kind") == KIND or str(body.get("apiVersion", "")).startswith("modelwarmup.dev/")


def validate_body(body: dict[str, Any], *, strict: bool = False) -> ModelWarmup:
    """Validate one ModelWarmup body; raises InvalidSpecError naming each bad field.

    ``strict`` holds JSON types as the API server does ("2048" is no integer, "yes" no boolean);
    a body the API server already accepted needs no such check."""
    problems = []
    if body.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: must be {API_VERSION}")
    if body.get("kind") != KIND:
        problems.append(f"kind: must be {KIND}")
    if problems:
        raise errors.InvalidSpecError(problems)
    try:
        if strict:
            return ModelWarmup.model_validate_json(json.dumps(body, default=str), strict=True)
        return ModelWarmup.from_body(body)
    except pydantic.ValidationError as error:
        raise errors.InvalidSpecError(errors.describe_validation_error(error, root="")) from None
