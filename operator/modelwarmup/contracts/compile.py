"""The compile settings' fields, stated once: types, bounds, defaults, rules, and their flags.

Three views are derived from :class:`CompileFields` and from nothing else:

* the custom resource's ``spec.compile`` (``modelwarmup.api.spec.CompileSettings`` adds only
  ``enabled``; camelCase names and the CRD schema come from the same fields);
* the worker's command-line options (``modelwarmup.worker.options``: flag names from
  :data:`FLAGS`, choices, defaults and help from the fields), and :func:`command_line`, the
  operator's encoding of the settings into a warm-up Job's arguments;
* the compiler's and the runtime's settings (``modelwarmup.compilation.settings.CompileSettings``
  adds the device and the trust of remote code, which come from elsewhere).

So a new setting is one field here (and, if the seed spells its flag differently, one entry in
:data:`FLAGS`), and a rule that the CRD, the CLI and the worker must agree on is stated once.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
DTYPES: Final = get_args(Dtype)
MODES: Final = get_args(CompileMode)

MAX_SIZE: Final = 1_048_576
Size = Annotated[int, Field(ge=1, le=MAX_SIZE)]
INDUCTOR_OPTION_NAME: Final = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
OptionName = Annotated[str, StringConstraints(pattern=INDUCTOR_OPTION_NAME, max_length=128)]


def _scalar(value: Any) -> Any:
    if isinstance(value, str | int | float | bool):
        return value
    raise ValueError(
        "an Inductor option's value must be a string, a number or a boolean; "
        "nested options take dotted names, e.g. triton.cudagraphs"
    )


OptionValue = Annotated[str | int | float | bool, BeforeValidator(_scalar)]
# Values of any JSON scalar type have no structural schema: the CRD keeps them as they are, and
# the models check them (the operator reports a bad one as InvalidSpec, naming the field).
InductorOptions = Annotated[
    dict[OptionName, OptionValue],
    Field(max_length=64),
    WithJsonSchema({"type": "object", "maxProperties": 64, "x-kubernetes-preserve-unknown-fields": True}),
]

# The worker's flag for each field, where the seed (`max warm-cache`) names it differently from
# the field; every other field's flag is its name with dashes.
FLAGS: Final = {
    "dtype": "quantization-encoding",
    "regional": "use-subgraphs",
    "mode": "compile-mode",
    "extra_options": "inductor-option",
}


class CompileFields(BaseModel):
    """How the model's torch graphs are compiled. Every field is part of the cache key."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    dtype: Dtype = "auto"
    """The weights' dtype when compiling (the seed's --quantization-encoding): auto (the checkpoint's own:
    the dtype its weights are stored in), float32, bfloat16 or float16 (a cast, where the weights differ)."""
    max_length: int = Field(default=2048, ge=2, le=MAX_SIZE)
    """The longest sequence served; compiled graphs are dynamic in length up to this (at least 2: torch
    specializes length 1, so a dynamic range starts at 2)."""
    max_batch_size: int = Field(default=1, ge=1, le=4096)
    """The largest batch served."""
    batch_sizes: tuple[Size, ...] = Field(default=(1,), min_length=1, max_length=16)
    """Batch sizes to pre-compile; each at most maxBatchSize (1 gets a graph of its own)."""
    sequence_lengths: tuple[Size, ...] = Field(default=(), max_length=16)
    """Sequence lengths to run while warming (the graphs stay dynamic); each at most maxLength. Empty
    means 16 and 64, capped at maxLength. Add 1 if prompts of one token are served."""
    mode: CompileMode = "default"
    """torch.compile's mode."""
    regional: bool = True
    """Compile the repeated decoder block once instead of the whole model (the seed's --use-subgraphs)."""
    aot_inductor: bool = False
    """Also produce an AOTInductor package, which serving loads without a C++ compiler."""
    extra_options: InductorOptions = Field(default_factory=dict)
    """Inductor config options passed to torch.compile, e.g. {"freezing": true}; part of the cache key."""

    # Field validators (not a model validator) so that the error names the field, in whichever
    # spelling the caller uses: spec.compile.batchSizes in a resource, --batch-sizes on the CLI.
    @field_validator("batch_sizes")
    @classmethod
    def _batches_within_limit(cls, sizes: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        limit = info.data.get("max_batch_size")
        if limit is not None and any(b > limit for b in sizes):
            raise ValueError(f"every entry must be <= maxBatchSize ({limit})")
        return sizes

    @field_validator("sequence_lengths")
    @classmethod
    def _lengths_within_limit(cls, lengths: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        limit = info.data.get("max_length")
        if limit is not None and any(n > limit for n in lengths):
            raise ValueError(f"every entry must be <= maxLength ({limit})")
        return lengths


def flag(field: str) -> str:
    """The worker's command-line flag (without dashes in front) for a compile field."""
    return FLAGS.get(field, field.replace("_", "-"))


def command_line(fields: CompileFields) -> list[str]:
    """The worker's arguments for these settings: every field spelled out, defaults included,
    so that the worker's own defaults never decide what the resource asked for."""
    args: list[str] = []
    for name in CompileFields.model_fields:
        value: Any = getattr(fields, name)
        option = f"--{flag(name)}"
        if isinstance(value, bool):
            args.append(option if value else f"--no-{flag(name)}")
        elif isinstance(value, tuple):
            if value:  # an empty list has no spelling; empty is the field's default
                args += [option, *map(str, value)]
        elif isinstance(value, dict):
            for key, item in sorted(value.items()):
                args += [option, f"{key}={json.dumps(item)}"]
        else:
            args += [option, str(value)]
    return args
