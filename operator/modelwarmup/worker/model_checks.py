"""Checks and registrations on the downloaded model before it is compiled."""

from __future__ import annotations

import importlib
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelwarmup import errors
from modelwarmup.compilation import limits
from modelwarmup.compilation.settings import CompileSettings

_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def safetensors_dtypes(path: Path) -> set[str]:
    """The tensor dtypes in a safetensors file, read from its JSON header only."""
    with path.open("rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8))
        header = json.loads(stream.read(length))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def checkpoint_dtype(weights: list[Path], config: Mapping[str, Any]) -> str:
    """The checkpoint's own floating dtype: the one its safetensors hold, else its config's
    ``dtype`` (``torch_dtype`` before transformers 5), else float32."""
    stored = {
        _SAFETENSORS_DTYPES[d] for w in weights for d in safetensors_dtypes(w) if d in _SAFETENSORS_DTYPES
    }
    if len(stored) == 1:
        return stored.pop()
    declared = limits.text_config(config).get("dtype") or config.get("dtype") or config.get("torch_dtype")
    if declared in _SAFETENSORS_DTYPES.values():
        return str(declared)
    return "float32" if not stored or "float32" in stored else sorted(stored)[0]


def fit_to_model(
    settings: CompileSettings, weights: list[Path], model_dir: Path
) -> tuple[CompileSettings, list[str]]:
    """The settings this model is compiled with, and a note for each change: ``auto`` becomes the
    checkpoint's dtype, and ``max_length`` (with the lengths above it) is capped to the positions
    the model has, so that neither compiling nor serving runs past them."""
    config = limits.read_config(model_dir)
    update: dict[str, Any] = {}
    notes: list[str] = []
    if settings.dtype == "auto":
        update["dtype"] = checkpoint_dtype(weights, config)
        notes.append(f"dtype auto: compiling in the checkpoint's {update['dtype']}")
    cap = limits.limits_of(config).max_positions
    if cap is not None and 2 <= cap < settings.max_length:
        kept = tuple(n for n in settings.sequence_lengths if n <= cap)
        update.update(max_length=cap, sequence_lengths=kept or ())
        notes.append(
            f"--max-length {settings.max_length} is above the {cap} positions this model has "
            f"(max_position_embeddings); compiling for {cap}"
            + (
                ", without the sequence lengths above it"
                if len(kept) < len(settings.sequence_lengths)
                else ""
            )
        )
    if not update:
        return settings, notes
    fitted = settings.model_dump()
    fitted.update(update)
    if not fitted["sequence_lengths"]:
        fitted.pop("sequence_lengths")  # the defaults, within the new max_length
    return CompileSettings.model_validate(fitted), notes


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
