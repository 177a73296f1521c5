"""Checks and registrations on the downloaded model before it is compiled."""

from __future__ import annotations

import importlib
import json
import struct
from pathlib import Path

from modelwarmup import errors

_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def safetensors_dtypes(path: Path) -> set[str]:
    """The tensor dtypes in a safetensors file, read from its JSON header only."""
    with path.open("rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8))
        header = json.loads(stream.read(length))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def check_weight_dtype(weights: list[Path], requested: str, allow_cast: bool) -> None:
    """The seed's rule: float32 <-> bfloat16 casts only with the allow-cast flag."""
    stored = {_SAFETENSORS_DTYPES.get(d, d) for w in weights for d in safetensors_dtypes(w)}
    floating = stored & set(_SAFETENSORS_DTYPES.values())
    if not floating or floating == {requested} or allow_cast:
        return
    raise errors.WeightDtypeMismatch(
        f"the weights are {', '.join(sorted(floating))} but --quantization-encoding is {requested}; "
        "pass --allow-safetensors-weights-fp32-bf16-bidirectional-cast to cast, or request the stored dtype"
    )


def register_custom_architectures(specs: tuple[str, ...]) -> list[str]:
    """Import each module[:attr] and register its ARCHITECTURES with transformers' Auto classes."""
    from transformers import AutoConfig, AutoModelForCausalLM

    registered: list[str] = []
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise errors.InvalidOptionError(
                f"--custom-architectures {spec}: cannot import {module_name}: {error}"
            ) from None
        architectures = getattr(module, attribute or "ARCHITECTURES", None)
        if not isinstance(architectures, list | tuple):
            raise errors.InvalidOptionError(
                f"--custom-architectures {spec}: {module_name} has no ARCHITECTURES list"
            )
        for model_class in architectures:
            config_class = getattr(model_class, "config_class", None)
            model_type = getattr(config_class, "model_type", None)
            if config_class is None or not model_type:
                raise errors.InvalidOptionError(
                    f"--custom-architectures {spec}: {model_class!r} has no config_class with a model_type"
                )
            AutoConfig.register(model_type, config_class, exist_ok=True)
            AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)
            registered.append(f"{model_type}:{model_class.__name__}")
    return registered
