"""What to compile, as one frozen value whose canonical JSON is part of the artifact cache key.

Inductor's own cache keys already cover the traced graph, but the platform cache entry that
modelwarmup publishes is looked up *before* anything is traced: the operator has to decide
whether a stored entry fits a serving pod from the settings and the platform alone. So every
field that changes the generated code (dtype, device type, shapes and their dynamic ranges, the
compile mode and Inductor options, regional vs whole-model compilation, AOTInductor) goes into
:meth:`CompileSettings.cache_json`. Fields that only say how much warm-up to do do not.

This module does not import torch, so the operator can validate and key settings without it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Dtype = Literal["float32", "bfloat16", "float16"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
OptionValue = str | int | float | bool

_DEVICE = re.compile(r"^(cpu|cuda(:[0-9]+)?)$")
# Bump when the way modelwarmup wraps a model changes (marking rules, regional discovery, ...):
# old artifacts then stop matching instead of silently missing Inductor's cache.
WRAPPING_VERSION = 1


class CompileSettings(BaseModel):
    """How a model is compiled ahead of time and how serving processes must compile it again."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dtype: Dtype = "bfloat16"
    """Weights and activations dtype the model is loaded in."""
    device: str = "cpu"
    """Torch device: "cpu", "cuda" or "cuda:N"."""
    max_length: int = Field(default=2048, ge=2)
    """Largest sequence length served; the dynamic sequence dimension is bounded by it."""
    max_batch_size: int = Field(default=1, ge=1)
    """Largest batch served; batches of 2 and more share one dynamic-batch graph."""
    batch_sizes: tuple[int, ...] = (1,)
    """Batch sizes to exercise during warm-up (1 gets its own graph: size 1 is specialized)."""
    sequence_lengths: tuple[int, ...] = ()
    """Sequence lengths to exercise; all lengths >= 2 share one graph, so two are plenty.
    Empty (the default) means 16 and 64, capped at max_length. Add 1 if prompts of one token
    are served: length 1 is specialized and gets a graph of its own."""
    mode: CompileMode = "default"
    """torch.compile mode."""
    regional: bool = False
    """Compile each repeated decoder block once instead of the whole model (much faster compile)."""
    aot_inductor: bool = False
    """Also export and package the model with AOTInductor (loads without a compiler at serve time)."""
    extra_options: dict[str, OptionValue] = Field(default_factory=dict)
    """Inductor config options passed to torch.compile(options=...), e.g. {"freezing": true}."""
    trust_remote_code: bool = False
    """Allow model repositories' own modelling code (it then is part of the compiled graph)."""

    @model_validator(mode="before")
    @classmethod
    def _default_lengths(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("sequence_lengths"):
            cap = data.get("max_length", cls.model_fields["max_length"].default)
            if isinstance(cap, int) and cap >= 2:
                data = {**data, "sequence_lengths": tuple(sorted({min(16, cap), min(64, cap)}))}
        return data

    @model_validator(mode="after")
    def _check(self) -> CompileSettings:
        if not _DEVICE.match(self.device):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {self.device!r}")
        if not self.batch_sizes or not self.sequence_lengths:
            raise ValueError("batch_sizes and sequence_lengths must not be empty")
        if any(b < 1 or b > self.max_batch_size for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must lie in 1..max_batch_size ({self.max_batch_size})")
        if any(s < 1 or s > self.max_length for s in self.sequence_lengths):
            raise ValueError(f"sequence_lengths must lie in 1..max_length ({self.max_length})")
        for name in self.extra_options:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", name):
                raise ValueError(f"extra_options key {name!r} is not an Inductor config name")
        return self

    @property
    def device_type(self) -> str:
        """ "cpu" or "cuda": the index of a GPU does not change the generated code."""
        return self.device.split(":", 1)[0]

    def cache_fields(self) -> dict[str, Any]:
        """Everything that changes compiled code, as plain JSON values."""
        return {
            "wrapping_version": WRAPPING_VERSION,
            "dtype": self.dtype,
            "device_type": self.device_type,
            "max_length": self.max_length,
            "max_batch_size": self.max_batch_size,
            # Which graphs exist depends on which sizes were exercised (size 1 is specialized).
            "batch_sizes": sorted(set(self.batch_sizes)),
            "sequence_lengths": sorted(set(self.sequence_lengths)),
            "mode": self.mode,
            "regional": self.regional,
            "aot_inductor": self.aot_inductor,
            "extra_options": dict(sorted(self.extra_options.items())),
            "trust_remote_code": self.trust_remote_code,
        }

    def cache_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces) of :meth:`cache_fields`, for the cache key."""
        return json.dumps(self.cache_fields(), sort_keys=True, separators=(",", ":"))

    def cache_digest(self, length: int = 16) -> str:
        """Short hex digest of :meth:`cache_json`."""
        return hashlib.sha256(self.cache_json().encode()).hexdigest()[:length]
