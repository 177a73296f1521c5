"""The warm-up's runs: what servers call, compiled and checked against eager.

Each run calls the model as a server does and compares the compiled result with the eager one, so
that a wrong kernel is never cached and served: :func:`scoring` (the forward without a cache, or
an encoder's as sentence-transformers calls it, padded batches included), :func:`generation`
(``generate()`` with the model's KV cache, optionally assisted by a draft) and :func:`adapter`
(a LoRA adapter applied with PEFT, both of those, and removed again). The timings they return go
into the compile report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict

from modelwarmup import errors
from modelwarmup.compilation.settings import CompileSettings

if TYPE_CHECKING:
    import torch

# (absolute, relative to the largest |eager logit|) tolerance per dtype.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float32": (1e-4, 1e-3),
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 2e-2),
}
_SEED = 1234


class ShapeTiming(BaseModel):
    """One exercised shape: first compiled call (compiles if new), eager call, difference."""

    model_config = ConfigDict(frozen=True)

    batch_size: int
    sequence_length: int
    padded: bool = False
    """The batch's last row was padded (encoders: a batch of texts of different lengths)."""
    compiled_seconds: float
    eager_seconds: float
    max_abs_diff: float
    tolerance: float


class GenerationTiming(BaseModel):
    """One exercised ``generate()`` call: prefill and decoding steps with the model's KV cache."""

    model_config = ConfigDict(frozen=True)

    batch_size: int
    prompt_length: int
    new_tokens: int
    compiled_seconds: float
    eager_seconds: float
    same_tokens: bool
    """Compiled and eager chose the same tokens (else they parted at a near-tie, within tolerance)."""


class AdapterTiming(BaseModel):
    """One LoRA adapter, applied with PEFT and warmed (or why not)."""

    model_config = ConfigDict(frozen=True)

    adapter: str
    warmed: bool
    note: str = ""
    shapes: list[ShapeTiming] = []
    generation: list[GenerationTiming] = []


def logits(model: torch.nn.Module, input_ids: torch.Tensor, *, padded: bool = False) -> torch.Tensor:
    """The scoring forward as servers call it: a causal LM's logits without a cache, or an
    encoder's token embeddings with the keyword arguments its tokenizer gives (so that the
    graph's guards match what sentence-transformers passes), the last row right-padded to half
    its length when ``padded``."""
    import torch

    if not cast(Any, model).can_generate():
        features: dict[str, Any] = {"input_ids": input_ids}
        if int(getattr(cast(Any, model).config, "type_vocab_size", 0) or 0) > 0:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        mask = torch.ones_like(input_ids)
        if padded:
            mask[-1, max(1, input_ids.shape[1] // 2) :] = 0
        features["attention_mask"] = mask
        hidden: torch.Tensor = model(**features, return_dict=True).last_hidden_state
        return hidden * mask.unsqueeze(-1)  # what pooling reads: padded positions count for nothing
    logits: torch.Tensor = model(input_ids=input_ids, use_cache=False).logits
    return logits


def scoring(
    model: torch.nn.Module, settings: CompileSettings, warmed: list[tuple[int, int]]
) -> list[ShapeTiming]:
    """The scoring forward, compiled and eager, per exercised shape; outputs within tolerance."""
    import torch

    shapes: list[ShapeTiming] = []
    encoder = not cast(Any, model).can_generate()
    with torch.no_grad():
        for batch, seq in warmed:
            input_ids = random_ids(model, batch, seq, settings.device)
            # An embedding server batches texts of different lengths: padding gives the layers
            # a mask where an unpadded batch gives them none, another graph each.
            for padded in (False, True) if encoder and batch >= 2 else (False,):
                score = partial(logits, model, input_ids, padded=padded)
                (compiled_s, out), (eager_s, ref) = _compiled_and_eager(settings, score)
                diff, tol = compare(out, ref, settings.dtype)
                shapes.append(
                    ShapeTiming(
                        batch_size=batch,
                        sequence_length=seq,
                        padded=padded,
                        compiled_seconds=round(compiled_s, 4),
                        eager_seconds=round(eager_s, 4),
                        max_abs_diff=diff,
                        tolerance=tol,
                    )
                )
                del out, ref
                if not diff <= tol:
                    raise errors.CompiledOutputMismatchError(
                        f"compiled logits differ from eager by {diff:.3g} (tolerance {tol:.3g}) "
                        f"at batch {batch}, length {seq}; not publishing these artifacts"
                    )
    return shapes


def adapter(
    model: torch.nn.Module, name: str, path: Path, settings: CompileSettings, warmed: list[tuple[int, int]]
) -> AdapterTiming:
    """Apply a LoRA adapter with PEFT, as servers do, warm what it changes, and remove it again.

    PEFT puts its layers into the model's own modules: the already wrapped forward then compiles
    graphs with the adapter's matmuls in them (the weights are inputs of the graph, so adapters
    of one rank and target modules share them). Without peft in the image, nothing is warmed and
    the report says so."""
    try:
        from peft import PeftModel
    except ImportError:
        return AdapterTiming(adapter=name, warmed=False, note="peft is not installed in the worker image")
    applied = PeftModel.from_pretrained(model, str(path)).eval()
    try:
        shapes = scoring(applied, settings, warmed)
        generated = generation(applied, settings, warmed)
    finally:
        applied.unload()  # the LoRA layers out again: the model is the base model
    return AdapterTiming(adapter=name, warmed=True, shapes=shapes, generation=generated)


GENERATED_TOKENS = 8
"""Tokens each warm-up ``generate()`` call produces: past the first decoding steps, where Dynamo
settles on graphs dynamic in the cache's length."""


def generation(
    model: torch.nn.Module,
    settings: CompileSettings,
    warmed: list[tuple[int, int]],
    *,
    assistant: torch.nn.Module | None = None,
) -> list[GenerationTiming]:
    """Run ``generate()`` as a server does, compiled and eager, for every exercised shape that
    leaves room for new tokens; the tokens must agree (or part only at a near-tie)."""
    import torch

    if not callable(getattr(model, "can_generate", None)) or not cast(Any, model).can_generate():
        return []
    timings: list[GenerationTiming] = []
    with torch.no_grad():
        for batch, prompt in warmed:
            new = min(GENERATED_TOKENS, settings.max_length - prompt)
            if new < 1:
                continue
            ids = random_ids(model, batch, prompt, settings.device)
            run = partial(_generate, model, ids, new, assistant)
            (compiled_s, out), (eager_s, ref) = _compiled_and_eager(settings, run)
            with torch.compiler.set_stance("force_eager"):  # the near-tie check reads eager logits
                same = _same_or_near_tie(model, out, ref, settings.dtype)
            if same is None:
                raise errors.CompiledOutputMismatchError(
                    f"compiled generate() chose other tokens than eager at batch {batch}, prompt "
                    f"length {prompt}, and not at a near-tie; not publishing these artifacts"
                )
            timings.append(
                GenerationTiming(
                    batch_size=batch,
                    prompt_length=prompt,
                    new_tokens=new,
                    compiled_seconds=round(compiled_s, 4),
                    eager_seconds=round(eager_s, 4),
                    same_tokens=same,
                )
            )
    return timings


def _generate(
    model: torch.nn.Module, input_ids: torch.Tensor, new_tokens: int, assistant: torch.nn.Module | None = None
) -> torch.Tensor:
    import torch

    extra: dict[str, Any] = {} if assistant is None else {"assistant_model": assistant}

    # As a server calls it: a tokenizer's attention mask, greedy, nothing returned but tokens.
    # min_new_tokens keeps an end-of-sequence token from cutting the decoding steps short.
    generated: torch.Tensor = cast(Any, model).generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        **extra,
    )
    return generated


def _same_or_near_tie(
    model: torch.nn.Module, out: torch.Tensor, ref: torch.Tensor, dtype: str
) -> bool | None:
    """True when the sequences agree; False when they first part where eager's logits of both
    chosen tokens are within tolerance of each other (a tie broken differently); else None."""
    if out.shape != ref.shape:
        return None
    if bool((out == ref).all()):
        return True
    row, col = min(((r, c) for r, c in (out != ref).nonzero().tolist()), key=lambda rc: (rc[1], rc[0]))
    last = logits(model, ref[row : row + 1, :col])[0, -1].float()
    atol, rtol = TOLERANCES[dtype]
    gap = abs(float(last[int(out[row, col])] - last[int(ref[row, col])]))
    return False if gap <= atol + rtol * float(last.abs().max()) else None


def random_ids(model: torch.nn.Module, batch: int, seq: int, device: str) -> torch.Tensor:
    import torch

    config = cast(Any, model).config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = int(getattr(text_config, "vocab_size", 0) or 256)
    generator = torch.Generator().manual_seed(_SEED + 1000 * batch + seq)
    return torch.randint(0, vocab, (batch, seq), generator=generator).to(device)


def _compiled_and_eager(
    settings: CompileSettings, fn: Callable[[], Any]
) -> tuple[tuple[float, Any], tuple[float, Any]]:
    """``fn`` timed compiled (its first call compiles, or loads from the cache), then eagerly."""
    import torch

    compiled = _timed(settings, fn)
    with torch.compiler.set_stance("force_eager"):
        return compiled, _timed(settings, fn)


def _timed(settings: CompileSettings, fn: Callable[[], Any]) -> tuple[float, Any]:
    _sync(settings.device_type)
    started = time.perf_counter()
    result = fn()
    _sync(settings.device_type)
    return time.perf_counter() - started, result


def _sync(device_type: str) -> None:
    if device_type == "cuda":
        import torch

        torch.cuda.synchronize()


def compare(out: torch.Tensor, ref: torch.Tensor, dtype: str) -> tuple[float, float]:
    """Largest |out - ref| and the tolerance it must stay within (NaN counts as a mismatch)."""
    atol, rtol = TOLERANCES[dtype]
    ref32, out32 = ref.float(), out.float()
    if out32.shape != ref32.shape:
        return float("inf"), 0.0
    diff = float((out32 - ref32).abs().max().item())
    scale = float(ref32.abs().max().item())
    return diff, atol + rtol * scale
