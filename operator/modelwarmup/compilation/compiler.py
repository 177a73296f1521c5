"""Compile a Hugging Face causal LM once, in the warm-up Job, into a cache entry serving reuses.

The run loads the model as serving will (same dtype, device, remote-code policy), wraps it with
:func:`modelwarmup.runtime.loader.compile_for_serving` - the very function serving processes call,
so graphs and Inductor cache keys match - and runs one prefill-style forward (``use_cache=False``)
per batch size and sequence length. Every compiled output is checked against eager within a
dtype-dependent tolerance: a wrong kernel would otherwise be cached and served silently.

The entry it writes into ``artifacts_dir``:

* ``inductor/``: Inductor's cache folder (FX graph cache, AOTAutograd cache, kernels). Serving
  copies it to a private writable folder and starts warm: this is what saves the compile time.
* ``megacache.bin``: torch's Mega-Cache (``torch.compiler.save_cache_artifacts``). Portable and
  small; on CPU it alone barely helps (kernels are rebuilt), but it costs little and carries
  autotuning and PGO results on GPU.
* ``aoti/model.pt2`` (``aot_inductor``): an AOTInductor package of ``input_ids -> logits`` with
  dynamic batch and sequence dims; it loads in about eager time without a C++ compiler.

torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict

from modelwarmup import errors
from modelwarmup.cache import layout
from modelwarmup.compilation import recipe
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
    compiled_seconds: float
    eager_seconds: float
    max_abs_diff: float
    tolerance: float


class CompileReport(BaseModel):
    """What a compile run did, how long it took and what it left in the artifacts dir."""

    model_config = ConfigDict(frozen=True)

    settings_digest: str
    torch_version: str
    load_seconds: float
    compile_seconds: float
    """Wall time of the compiled warm-up pass: all shapes' first compiled calls together."""
    shapes: list[ShapeTiming]
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


def compile_model(model_dir: Path, settings: CompileSettings, artifacts_dir: Path) -> CompileReport:
    """Compile the model in ``model_dir`` per ``settings`` into ``artifacts_dir``; see module doc.

    Raises CompiledOutputMismatchError when compiled and eager logits disagree.
    """
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    # Before torch compiles anything in this process.
    recipe.configure_inductor(artifacts_dir / layout.INDUCTOR_DIRNAME)

    import torch

    before = recipe.cache_stats()
    started = time.perf_counter()
    model = load_model(model_dir, settings)
    load_seconds = time.perf_counter() - started

    recipe.compile_for_serving(model, settings)
    shapes: list[ShapeTiming] = []
    with torch.no_grad():
        for batch, seq in exercised_shapes(settings):
            input_ids = _random_ids(model, batch, seq, settings.device)
            compiled_s, out = _timed(settings, partial(_logits, model, input_ids))
            with torch.compiler.set_stance("force_eager"):
                eager_s, ref = _timed(settings, partial(_logits, model, input_ids))
            diff, tol = _compare(out, ref, settings.dtype)
            shapes.append(
                ShapeTiming(
                    batch_size=batch,
                    sequence_length=seq,
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
    compile_seconds = sum(s.compiled_seconds for s in shapes)
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
        max_abs_diff=max(s.max_abs_diff for s in shapes),
        graph_count=after["unique_graphs"] - before["unique_graphs"],
        counters={k: v - before.get(k, 0) for k, v in after.items() if k != "unique_graphs"},
        megacache_artifacts=megacache_artifacts,
        aoti_seconds=aoti_seconds,
        aoti_max_abs_diff=aoti_diff,
        artifact_bytes=_artifact_bytes(artifacts_dir),
    )


def load_model(model_dir: Path, settings: CompileSettings) -> torch.nn.Module:
    """Load the causal LM as serving does: settings' dtype and device, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        dtype=getattr(torch, settings.dtype),
        trust_remote_code=settings.trust_remote_code,
    )
    return model.to(settings.device).eval()


def exercised_shapes(settings: CompileSettings) -> list[tuple[int, int]]:
    """Every (batch size, sequence length) pair the warm-up runs, in a stable order."""
    return [
        (batch, seq)
        for batch in sorted(set(settings.batch_sizes))
        for seq in sorted(set(settings.sequence_lengths))
    ]


def _logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    logits: torch.Tensor = model(input_ids=input_ids, use_cache=False).logits
    return logits


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
