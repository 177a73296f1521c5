"""Compile a Hugging Face model once, in the warm-up Job, into a cache entry serving reuses.

The run loads the model as serving will (same dtype, device, remote-code policy), wraps it with
:func:`modelwarmup.runtime.loader.compile_for_serving` - the very function serving processes call,
so graphs and Inductor cache keys match - and, per batch size and sequence length (the settings'
and those the model's sliding window asks for), runs what servers run: a scoring forward
(``use_cache=False``) and ``generate()`` with the model's own KV cache, prefill and decoding
steps (:mod:`modelwarmup.compilation.exercise` holds those runs). Every compiled output is
checked against eager (logits within a dtype-dependent tolerance, the same generated tokens): a
wrong kernel would otherwise be cached and served.

The entry it writes into ``artifacts_dir``:

* ``inductor/``: Inductor's cache folder (FX graph cache, AOTAutograd cache, kernels). Serving
  copies it to a private writable folder and starts warm: this is what saves the compile time.
* ``megacache.bin``: torch's Mega-Cache (``torch.compiler.save_cache_artifacts``). Portable and
  small; on CPU it alone barely helps (kernels are rebuilt), but it costs little and carries
  autotuning and PGO results on GPU.
* ``isa_checks.json``: the answers of Inductor's vector-ISA checks on this platform, so that a
  serving process need not compile and load its test libraries again
  (:mod:`modelwarmup.compilation.isa_checks`).
* ``aoti/model.pt2`` (``aot_inductor``): an AOTInductor package of ``input_ids -> logits`` with
  dynamic batch and sequence dims; it loads in about eager time without a C++ compiler. It has
  no KV cache: it is a prefill and scoring path (a server generating with it would recompute
  the whole sequence for every token), not a generation one.

torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict

from modelwarmup import errors
from modelwarmup.cache import layout
from modelwarmup.compilation import exercise, isa_checks, recipe
from modelwarmup.compilation.limits import ModelLimits, read_config, read_limits
from modelwarmup.compilation.settings import CompileSettings

if TYPE_CHECKING:
    import torch


class CompileReport(BaseModel):
    """What a compile run did, how long it took and what it left in the artifacts dir."""

    model_config = ConfigDict(frozen=True)

    settings_digest: str
    torch_version: str
    load_seconds: float
    compile_seconds: float
    """Wall time of the compiled warm-up pass: all shapes' first compiled calls together."""
    shapes: list[exercise.ShapeTiming]
    generation: list[exercise.GenerationTiming] = []
    """``generate()`` calls warmed; empty for models that do not generate (encoders)."""
    assisted: list[exercise.GenerationTiming] = []
    """Assisted generation with the draft model (batch 1), when there is a draft."""
    adapters: list[exercise.AdapterTiming] = []
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
            return exercise.logits(self.inner, input_ids)

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
    shapes = exercise.scoring(model, settings, warmed)
    generation = exercise.generation(model, settings, warmed)
    assisted: list[exercise.GenerationTiming] = []
    if draft_dir is not None:
        # Assisted generation runs batch 1 only; the draft decodes inside it, on its own graphs.
        draft = recipe.compile_for_serving(load_model(draft_dir, settings), settings)
        prompts = sorted({seq for _, seq in warmed})
        assisted = exercise.generation(model, settings, [(1, n) for n in prompts], assistant=draft)
    warmed_adapters = [
        exercise.adapter(model, name, path, settings, warmed) for name, path in adapters.items()
    ]
    timings: list[exercise.ShapeTiming | exercise.GenerationTiming] = [*shapes, *generation, *assisted]
    for adapter in warmed_adapters:
        timings += [*adapter.shapes, *adapter.generation]
    compile_seconds = sum(t.compiled_seconds for t in timings)
    eager_steps = recipe.eager_decode_steps(model)
    after = recipe.cache_stats()

    isa_checks.save(artifacts_dir / layout.ISA_CHECKS_FILENAME)
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
        eager_decode_steps=eager_steps,
        warnings=_not_warmed(model, eager_steps, warmed_adapters),
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
    architectures = read_config(model_dir).get("architectures")
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


def _not_warmed(
    model: torch.nn.Module, eager_decode_steps: int, adapters: list[exercise.AdapterTiming]
) -> list[str]:
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
    example = exercise.random_ids(model, batch, seq, settings.device)
    with torch.no_grad():
        program = export(module, (example,), dynamic_shapes=(dims,), strict=False)
        package.parent.mkdir(parents=True, exist_ok=True)
        aoti_compile_and_package(program, package_path=str(package))
    seconds = time.perf_counter() - started

    runner = aoti_load_package(str(package))
    diff = 0.0
    with torch.no_grad():
        for batch_size, length in exercised_shapes(settings):
            ids = exercise.random_ids(model, batch_size, length, settings.device)
            d, tol = exercise.compare(runner(ids), module(ids), settings.dtype)
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
