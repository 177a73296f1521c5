"""What to compile, as one frozen value whose canonical JSON is part of the artifact cache key.

Inductor's own cache keys already cover the traced graph, but the platform cache entry that
modelwarmup publishes is looked up *before* anything is traced: the operator has to decide
whether a stored entry fits a serving pod from the settings and the platform alone. So every
field that changes the generated code (dtype, device type, shapes and their dynamic ranges, the
compile mode and Inductor options, regional vs whole-model compilation, AOTInductor) goes into
:meth:`CompileSettings.cache_fields`. Fields that only say how much warm-up to do do not.

This module does not import torch, so the operator can validate and key settings without it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import model_validator

from modelwarmup.contracts import compile as compile_contract
from modelwarmup.contracts import digest

_DEVICE = re.compile(r"^(cpu|cuda(:[0-9]+)?)$")
# Bump when the way modelwarmup wraps a model changes (marking rules, regional discovery, ...):
# old artifacts then stop matching instead of silently missing Inductor's cache.
WRAPPING_VERSION = 3  # 3: parameters frozen in compile_for_serving


class CompileSettings(compile_contract.CompileFields):
    """How a model is compiled ahead of time and how serving processes must compile it again.

    The fields of ``spec.compile`` (:class:`~modelwarmup.contracts.compile.CompileFields`), plus
    what the worker learns elsewhere: the device it resolved and whether the repository's own
    modelling code is trusted.
    """

    device: str = "cpu"
    """Torch device: "cpu", "cuda" or "cuda:N"."""
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

    def cache_digest(self) -> str:
        """Short hex digest of :meth:`cache_fields`."""
        return digest.digest(self.cache_fields())
