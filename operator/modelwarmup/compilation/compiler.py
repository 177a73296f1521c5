"""Compile a Hugging Face causal LM once, in the warm-up Job, into a cache entry serving reuses.

The run loads the model as serving will (same dtype, device, remote-code policy), wraps it with
:func:`modelwarmup.runtime.loader.compile_for_serving` - the very function serving processes call,
so graphs and Inductor cache keys match - and, per batch size and sequence length (the settings'
and those the model's sliding window asks for), runs what servers run: a scoring forward
(``use_cache=False``) and ``generate()`` with the model's own KV cache, prefill and decoding
steps. Every compiled output is checked against eager (logits within a dtype-dependent
tolerance, the same generated tokens): a wrong kernel would otherwise be cached and served.

The entry it writes into ``artifacts_dir``:

* ``inductor/``: Inductor's cache folder (FX graph cache, AOTAutograd cache, kernels). Serving
  copies it to a private writable folder and starts warm: this is what saves the compile time.
* ``megacache.bin``: torch's Mega-Cache (``torch.compiler.save_cache_artifacts``). Portable and
  small; on CPU it alone barely helps (kernels are rebuilt), but it costs little and carries
  autotuning and PGO results on GPU.
* ``aoti/model.pt2`` (``aot_inductor``): an AOTInductor package of ``input_ids -> logits`` with
  dynamic batch and sequence dims; it loads in about eager time without a C++ compiler. It has
  no KV cache: it is a prefill and scoring path (a server generating with it would recompute
  the whole sequence for every token), not a generation one.

torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict

from modelwarmup import errors
from modelwarmup.cache import layout
from modelwarmup.compilation import recipe
from modelwarmup.compilation.limits import ModelLimits, read_limits
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


class CompileReport(BaseModel):
    """What a compile run did, how long it took and what it left in the artifacts dir."""

    model_config = ConfigDict(frozen=True)

    settings_digest: str
    torch_version: str
    load_seconds: float
    compile_seconds: float
    """Wall time of the compiled warm-up pass: all shapes' first compiled calls together."""
    shapes: list[ShapeTiming]
    generation: list[GenerationTiming] = []
    """``generate()`` calls warmed; empty for models that do not generate (encoders)."""
    assisted: list[GenerationTiming] = []
    """Assisted generation with the draft model (batch 1), when there is a draft."""
    adapters: list[AdapterTiming] = []
    """Each LoRA adapter, warmed as PEFT applies it."""
    eager_decode_steps: int = 0
    """Decoding steps that ran eagerly: those of models with sliding-window layers (see recipe)."""
    warnings: list[str] = []
    """What serving will still compile on its own, in words (the worker logs each)."""
    max_abs_diff: float
    graph_count: int
    counters: dict[str, int]
    """Cache counters of this run (deltas): fxgraph_cache_hit/miss, autograd_cache_hit/miss, ..."""
    megacache_artifacts: dict[str, int]
    aoti_seconds: float | None = None
    aoti_max_abs_diff: float | None = None
    artifact_bytes: dict[str, int]
    """Size of each artifact: "inductor" (whole folder), "megacache.bin", "aoti/model.pt2"."""


def _logits_module(model: torch.nn.Module) -> torch.nn.Module:
    """The ``input_ids -> logits`` module that AOTInductor packages."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return _logits(self.inner, input_ids)

    return LogitsOnly(model).eval()


def compile_model(
    model_dir: Path,
    settings: CompileSettings,
    artifacts_dir: Path,
    *,
    draft_dir: Path | None = None,
    adapters: Mapping[str, Path] | None = None,
) -> CompileReport:
    """Compile the model in ``model_dir`` per ``settings`` into ``artifacts_dir``; see module doc.

    With ``draft_dir``, assisted generation (``generate(assistant_model=draft)``) is warmed too;
    each of ``adapters`` (name to a PEFT LoRA folder) is applied to the model as a server applies
    it (``PeftModel.from_pretrained``) and warmed, then removed again.

    Raises CompiledOutputMismatchError when compiled and eager logits disagree.
    """
    adapters = adapters or {}
    if settings.dtype == "auto":
        raise ValueError("compile_model needs a concrete dtype: fit 'auto' to the checkpoint first")
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    # Before torch compiles anything in this process.
    recipe.configure_inductor(artifacts_dir / layout.INDUCTOR_DIRNAME)

    import torch

    before = recipe.cache_stats()
    started = time.perf_counter()
    model = load_model(model_dir, settings)
    load_seconds = time.perf_counter() - started

    recipe.compile_for_serving(model, settings)
    warmed = exercised_shapes(settings, read_limits(model_dir))
    shapes = _warm_scoring(model, settings, warmed)
    generation = _warm_generation(model, settings, warmed)
    assisted: list[GenerationTiming] = []
    if draft_dir is not None:
        # Assisted generation runs batch 1 only; the draft decodes inside it, on its own graphs.
        draft = recipe.compile_for_serving(load_model(draft_dir, settings), settings)
        prompts = sorted({seq for _, seq in warmed})
        assisted = _warm_generation(model, settings, [(1, n) for n in prompts], assistant=draft)
    warmed_adapters = [_warm_adapter(model, name, path, settings, warmed) for name, path in adapters.items()]
    timings: list[ShapeTiming | GenerationTiming] = [*shapes, *generation, *assisted]
    for adapter in warmed_adapters:
        timings += [*adapter.shapes, *adapter.generation]
    compile_seconds = sum(t.compiled_seconds for t in timings)
    after = recipe.cache_stats()

    megacache_artifacts: dict[str, int] = {}
    saved = torch.compiler.save_cache_artifacts()
    if saved is not None:
        blob, info = saved
        (artifacts_dir / layout.MEGACACHE_FILENAME).write_bytes(blob)
        megacache_artifacts = {kind: len(keys) for kind, keys in info.artifacts.items()}

    aoti_seconds: float | None = None
    aoti_diff: float | None = None
    if settings.aot_inductor:
        recipe.remove_compile_wrapping(model)
        aoti_seconds, aoti_diff = _package_aoti(model, settings, artifacts_dir / layout.AOTI_RELPATH)

    return CompileReport(
        settings_digest=settings.cache_digest(),
        torch_version=str(torch.__version__),
        load_seconds=round(load_seconds, 3),
        compile_seconds=round(compile_seconds, 3),
        shapes=shapes,
        generation=generation,
        assisted=assisted,
        adapters=warmed_adapters,
        eager_decode_steps=recipe.eager_decode_steps(model),
        warnings=_not_warmed(model, recipe.eager_decode_steps(model), warmed_adapters),
        max_abs_diff=max(s.max_abs_diff for s in shapes),
        graph_count=after["unique_graphs"] - before["unique_graphs"],
        counters={k: v - before.get(k, 0) for k, v in after.items() if k != "unique_graphs"},
        megacache_artifacts=megacache_artifacts,
        aoti_seconds=aoti_seconds,
        aoti_max_abs_diff=aoti_diff,
        artifact_bytes=_artifact_bytes(artifacts_dir),
    )


_COMPILER_MODULES = ("torch._dynamo", "torch._inductor", "torch.fx", "torch.export", "torch._export")


def deterministic_failure(error: BaseException) -> errors.CompileFailed | None:
    """The permanent error for a failure of torch's compiler stack, or None for anything else
    (out of memory, a full disk, a bug of ours), which keeps its own type."""
    module = type(error).__module__
    if not module.startswith(_COMPILER_MODULES):
        return None
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    hint = ""
    if type(error).__name__ == "ConstraintViolationError":
        hint = "; the model's own limits clash with the dynamic range: lower --max-length"
    return errors.CompileFailed(f"torch.compile failed: {type(error).__name__}: {first[:300]}{hint}")


# Heads that generate; any other architecture (BertModel, an embedding model's XLMRobertaModel,
# ...) is loaded as transformers' AutoModel: what sentence-transformers and embedding servers load.
_GENERATIVE_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def is_encoder(model_dir: Path) -> bool:
    """Whether the repository in ``model_dir`` holds an encoder to serve as it is (embeddings),
    rather than a causal LM: a sentence-transformers repository, or a config whose architectures
    name no generative head."""
    if (model_dir / "modules.json").is_file():
        return True
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(architectures, list) or not architectures:
        return False
    return not any(str(name).endswith(_GENERATIVE_SUFFIXES) for name in architectures)


def load_model(model_dir: Path, settings: CompileSettings) -> torch.nn.Module:
    """Load the model as serving does: the settings' dtype and device, eval mode, and the head
    servers use (a causal LM, or the bare encoder for embedding models)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    auto = AutoModel if is_encoder(model_dir) else AutoModelForCausalLM
    model: torch.nn.Module = auto.from_pretrained(
        str(model_dir),
        dtype=getattr(torch, settings.dtype),
        trust_remote_code=settings.trust_remote_code,
    )
    return model.to(settings.device).eval()


def exercised_shapes(
    settings: CompileSettings, model_limits: ModelLimits | None = None
) -> list[tuple[int, int]]:
    """Every (batch size, sequence length) pair the warm-up runs, in a stable order: the
    settings' lengths, and those the model's limits ask for (both sides of a sliding window)."""
    lengths = tuple(settings.sequence_lengths)
    if model_limits is not None:
        lengths = model_limits.exercised_lengths(lengths, settings.max_length)
    return [(batch, seq) for batch in sorted(set(settings.batch_sizes)) for seq in sorted(set(lengths))]


def _logits(model: torch.nn.Module, input_ids: torch.Tensor, *, padded: bool = False) -> torch.Tensor:
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


def _warm_scoring(
    model: torch.nn.Module, settings: CompileSettings, warmed: list[tuple[int, int]]
) -> list[ShapeTiming]:
    """The scoring forward, compiled and eager, per exercised shape; outputs within tolerance."""
    import torch

    shapes: list[ShapeTiming] = []
    encoder = not cast(Any, model).can_generate()
    with torch.no_grad():
        for batch, seq in warmed:
            input_ids = _random_ids(model, batch, seq, settings.device)
            # An embedding server batches texts of different lengths: padding gives the layers
            # a mask where an unpadded batch gives them none, another graph each.
            for padded in (False, True) if encoder and batch >= 2 else (False,):
                score = partial(_logits, model, input_ids, padded=padded)
                compiled_s, out = _timed(settings, score)
                with torch.compiler.set_stance("force_eager"):
                    eager_s, ref = _timed(settings, score)
                diff, tol = _compare(out, ref, settings.dtype)
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


def _warm_adapter(
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
        shapes = _warm_scoring(applied, settings, warmed)
        generation = _warm_generation(applied, settings, warmed)
    finally:
        applied.unload()  # the LoRA layers out again: the model is the base model
    return AdapterTiming(adapter=name, warmed=True, shapes=shapes, generation=generation)


GENERATED_TOKENS = 8
"""Tokens each warm-up ``generate()`` call produces: past the first decoding steps, where Dynamo
settles on graphs dynamic in the cache's length."""


def _warm_generation(
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
            ids = _random_ids(model, batch, prompt, settings.device)
            run = partial(_generate, model, ids, new, assistant)
            compiled_s, out = _timed(settings, run)
            with torch.compiler.set_stance("force_eager"):
                eager_s, ref = _timed(settings, run)
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
    logits = _logits(model, ref[row : row + 1, :col])[0, -1].float()
    atol, rtol = TOLERANCES[dtype]
    gap = abs(float(logits[int(out[row, col])] - logits[int(ref[row, col])]))
    return False if gap <= atol + rtol * float(logits.abs().max()) else None


def _random_ids(model: torch.nn.Module, batch: int, seq: int, device: str) -> torch.Tensor:
    import torch

    config = cast(Any, model).config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = int(getattr(text_config, "vocab_size", 0) or 256)
    generator = torch.Generator().manual_seed(_SEED + 1000 * batch + seq)
    return torch.randint(0, vocab, (batch, seq), generator=generator).to(device)


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


def _compare(out: torch.Tensor, ref: torch.Tensor, dtype: str) -> tuple[float, float]:
    """Largest |out - ref| and the tolerance it must stay within (NaN counts as a mismatch)."""
    atol, rtol = TOLERANCES[dtype]
    ref32, out32 = ref.float(), out.float()
    if out32.shape != ref32.shape:
        return float("inf"), 0.0
    diff = float((out32 - ref32).abs().max().item())
    scale = float(ref32.abs().max().item())
    return diff, atol + rtol * scale


def _not_warmed(model: torch.nn.Module, eager_decode_steps: int, adapters: list[AdapterTiming]) -> list[str]:
    notes = [f"adapter {a.adapter} is not warmed: {a.note}" for a in adapters if not a.warmed]
    if getattr(cast(Any, model).config, "vision_config", None) is not None:
        notes.append("image inputs are not warmed: text requests are, the first image request compiles")
    if eager_decode_steps:
        notes.append(
            "decoding steps run eagerly: the model has sliding-window layers, whose position "
            "transformers keeps in a Python int; prefill is compiled"
        )
    return notes


def _package_aoti(model: torch.nn.Module, settings: CompileSettings, package: Path) -> tuple[float, float]:
    """Export ``input_ids -> logits`` with dynamic dims and package it; check it against eager."""
    import torch
    from torch._inductor import aoti_compile_and_package, aoti_load_package
    from torch.export import Dim, export

    started = time.perf_counter()
    module = _logits_module(model)
    batch = 2 if settings.max_batch_size >= 2 else 1
    seq = max(s for s in settings.sequence_lengths if s >= 1)
    seq = max(seq, 2)
    dims: dict[int, Any] = {1: Dim("seq", min=1, max=settings.max_length)}
    if settings.max_batch_size >= 2:
        dims[0] = Dim("batch", min=1, max=settings.max_batch_size)
    example = _random_ids(model, batch, seq, settings.device)
    with torch.no_grad():
        program = export(module, (example,), dynamic_shapes=(dims,), strict=False)
        package.parent.mkdir(parents=True, exist_ok=True)
        aoti_compile_and_package(program, package_path=str(package))
    seconds = time.perf_counter() - started

    runner = aoti_load_package(str(package))
    diff = 0.0
    with torch.no_grad():
        for batch_size, length in exercised_shapes(settings):
            ids = _random_ids(model, batch_size, length, settings.device)
            d, tol = _compare(runner(ids), module(ids), settings.dtype)
            if not d <= tol:
                raise errors.CompiledOutputMismatchError(
                    f"AOTInductor logits differ from eager by {d:.3g} (tolerance {tol:.3g}) "
                    f"at batch {batch_size}, length {length}"
                )
            diff = max(diff, d)
    return round(seconds, 3), diff


def _artifact_bytes(artifacts_dir: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    inductor = artifacts_dir / layout.INDUCTOR_DIRNAME
    if inductor.is_dir():
        sizes[layout.INDUCTOR_DIRNAME] = sum(p.stat().st_size for p in inductor.rglob("*") if p.is_file())
    for rel in (Path(layout.MEGACACHE_FILENAME), layout.AOTI_RELPATH):
        path = artifacts_dir / rel
        if path.is_file():
            sizes[rel.as_posix()] = path.stat().st_size
    return sizes
