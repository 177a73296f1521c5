"""Model limits read from transformers' own configs, and the settings fitted to them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelwarmup import errors
from modelwarmup.compilation import compiler
from modelwarmup.compilation.limits import ModelLimits, limits_of
from modelwarmup.compilation.settings import CompileSettings
from modelwarmup.worker import model_checks


def _config(model_type: str, **overrides: Any) -> dict[str, Any]:
    from transformers import AutoConfig

    config: dict[str, Any] = AutoConfig.for_model(model_type, **overrides).to_dict()
    return config


@pytest.mark.parametrize(
    ("model_type", "overrides", "expected"),
    [
        # Gemma 3 (multimodal): the text config nests, with 5 sliding layers to 1 global.
        ("gemma3", {}, ModelLimits(max_positions=131072, sliding_window=4096)),
        ("phi3", {"sliding_window": 2047, "max_position_embeddings": 4096}, ModelLimits(4096, 2047)),
        # Qwen2 carries a window in its config but uses it on no layer.
        ("qwen2", {"sliding_window": 4096}, ModelLimits(max_positions=32768, sliding_window=None)),
        ("mistral", {"sliding_window": 4096}, ModelLimits(max_positions=131072, sliding_window=4096)),
        ("gpt2", {}, ModelLimits(max_positions=1024, sliding_window=None)),
        ("bert", {}, ModelLimits(max_positions=512, sliding_window=None)),
    ],
)
def test_limits_from_real_configs(model_type: str, overrides: dict[str, Any], expected: ModelLimits) -> None:
    assert limits_of(_config(model_type, **overrides)) == expected


def test_a_sliding_window_gets_a_length_below_at_and_past_it() -> None:
    limits = ModelLimits(max_positions=4096, sliding_window=1024)
    assert limits.exercised_lengths((16, 64), 2048) == (16, 64, 1024, 1025)
    assert limits.exercised_lengths((2000,), 2048) == (512, 1024, 1025, 2000)
    assert limits.exercised_lengths((16, 64), 1024) == (16, 64)  # the window is never left
    assert ModelLimits(4096, None).exercised_lengths((16, 64), 2048) == (16, 64)


def _model_dir(tmp_path: Path, config: dict[str, Any]) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_defaults_fit_an_embedding_checkpoint(tmp_path: Path) -> None:
    """all-MiniLM-L6-v2's case: float32 weights and 512 positions under the defaults."""
    model_dir = _model_dir(tmp_path, _config("bert", max_position_embeddings=512, dtype="float32"))
    fitted, notes = model_checks.fit_to_model(CompileSettings(), [], model_dir)
    assert (fitted.dtype, fitted.max_length, fitted.sequence_lengths) == ("float32", 512, (16, 64))
    assert notes == [
        "dtype auto: compiling in the checkpoint's float32",
        "--max-length 2048 is above the 512 positions this model has (max_position_embeddings); compiling for 512",
    ]
    explicit = CompileSettings(dtype="bfloat16", max_length=2048, sequence_lengths=(16, 1024))
    fitted, notes = model_checks.fit_to_model(explicit, [], model_dir)
    assert (fitted.dtype, fitted.max_length, fitted.sequence_lengths) == ("bfloat16", 512, (16,))
    assert notes[0].endswith("without the sequence lengths above it")
    within = CompileSettings(dtype="float16", max_length=256)
    assert model_checks.fit_to_model(within, [], model_dir) == (within, [])


def test_auto_dtype_is_what_the_weights_hold(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2, dtype=torch.bfloat16)}, str(weights))
    model_dir = _model_dir(tmp_path, _config("llama", dtype="float32"))
    fitted, _ = model_checks.fit_to_model(CompileSettings(max_length=64), [weights], model_dir)
    assert fitted.dtype == "bfloat16"  # the stored tensors decide, not the config's word


def test_a_compiler_refusal_is_permanent_with_its_reason() -> None:
    from torch.fx.experimental.symbolic_shapes import ConstraintViolationError

    failure = compiler.deterministic_failure(ConstraintViolationError("Constraints violated (L['x'])!\nmore"))
    assert isinstance(failure, errors.CompileFailed) and failure.permanent
    assert failure.reason == "CompileFailed"
    assert str(failure) == (
        "torch.compile failed: ConstraintViolationError: Constraints violated (L['x'])!; "
        "the model's own limits clash with the dynamic range: lower --max-length"
    )
    assert compiler.deterministic_failure(MemoryError("out of memory")) is None
