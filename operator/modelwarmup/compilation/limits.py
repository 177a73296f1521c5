"""What a model's own config says about the lengths it serves, read from its ``config.json``.

Two facts decide how the warm-up fits a model:

* the longest position it has embeddings for (``max_position_embeddings``, GPT-2's
  ``n_positions``): compiling or serving beyond it fails (absolute embeddings) or leaves the range
  the model was trained for (rotary ones), so ``max_length`` is capped to it;
* the sliding window of its local-attention layers: a prefill shorter than the window, one that
  fills it exactly and one beyond it take different branches in transformers' cache and mask
  code, so each needs its own graph, and the warm-up runs a length of each.

Plain JSON, no torch: the worker reads it before it loads anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


@dataclass(frozen=True)
class ModelLimits:
    """Length limits of one model; None where its config sets none."""

    max_positions: int | None
    sliding_window: int | None

    def exercised_lengths(self, lengths: tuple[int, ...], max_length: int) -> tuple[int, ...]:
        """``lengths`` plus what the model's limits ask for. With a sliding window W below
        ``max_length``, prefill takes three paths (shorter than the window, exactly filling it,
        beyond it) and Dynamo specializes the middle one, so each gets a length: one below W
        (W // 2 if none is), W and W + 1."""
        found = set(lengths)
        window = self.sliding_window
        if window is not None and 2 <= window < max_length:
            if not any(2 <= n < window for n in found):
                found.add(max(2, window // 2))
            found.update({window, window + 1})
        return tuple(sorted(found))


def text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The language model's part of a config (multimodal configs nest it)."""
    nested = config.get("text_config")
    return nested if isinstance(nested, Mapping) else config


def limits_of(config: Mapping[str, Any]) -> ModelLimits:
    """The limits in a parsed ``config.json``."""
    text = text_config(config)
    positions = next((text[k] for k in _POSITION_KEYS if isinstance(text.get(k), int) and text[k] > 0), None)
    window = text.get("sliding_window")
    layer_types = text.get("layer_types")
    if isinstance(layer_types, list):
        sliding = any("sliding" in str(kind) for kind in layer_types)
    else:
        sliding = text.get("use_sliding_window", True) is not False
    if not (sliding and isinstance(window, int) and window > 0):
        window = None
    return ModelLimits(max_positions=positions, sliding_window=window)


def read_config(model_dir: Path) -> dict[str, Any]:
    """The parsed ``config.json`` in ``model_dir``; empty when it is missing or not an object."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def read_limits(model_dir: Path) -> ModelLimits:
    """The limits of the model whose ``config.json`` is in ``model_dir`` (none if unreadable)."""
    return limits_of(read_config(model_dir))
