"""How modelwarmup compiles a model, the same in the warm-up Job and in serving processes.

A cache hit needs the *same* graphs and the same Inductor switches on both sides, so this one
module holds what both sides run: :func:`pin_environment` and :func:`configure_inductor` (the
cache folder and switches), :func:`compile_for_serving` (the wrapping: whole-model or regional,
dims marked dynamic on every call) and :func:`cache_stats` (torch's hit and miss counters).

* The cache folder is chosen by the ``TORCHINDUCTOR_CACHE_DIR`` environment variable, which
  Inductor re-reads every time it needs the folder (``runtime.cache_dir_utils.cache_dir()``),
  so setting it in-process works even after torch is imported, as long as nothing has been
  compiled yet. The on/off switches are config values read from the environment only when
  ``torch._inductor.config`` is imported, so :func:`configure_inductor` sets both the
  environment (for a later import) and the live config (for an earlier one).
* Precompiled headers live in ``<tempdir>/torchinductor_<user>/precompiled_headers`` whatever the
  cache folder is, and the switch is part of Inductor's cache key: a fresh pod would rebuild them
  (about 5 s). They are turned off here, in the warm-up Job and in serving alike.
* The sequence dimension (and the batch dimension from 2 up) are marked dynamic on every call, so
  one graph serves every length up to ``max_length`` and nothing depends on torch's
  automatic-dynamic history in the process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: serving processes import this without pydantic at hand
    import torch

    from modelwarmup.compilation.settings import CompileSettings

_WRAPPED_MARKER = "_modelwarmup_compiled"

# Environment pinned in every process that compiles or serves (see the module docstring).
PINNED_ENV: Mapping[str, str] = {
    "TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS": "0",
    # Trust the CPU flags instead of Inductor's vector-ISA probe, which compiles and dlopens a
    # test library per ISA in every fresh process (about 5 s here, and a C++ compiler at serve
    # time even for AOTInductor). Our platform key holds the CPU flags and the compiler already.
    "TORCHINDUCTOR_VEC_ISA_OK": "1",
    "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
    "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
}
# Sequence-position dims by tensor rank in HF decoder inputs: input_ids/position_ids (b, s),
# hidden_states/cos/sin (b, s, d), 4-D masks (b, 1, q, kv), cache_position (s,).
_SEQ_DIMS: Mapping[int, tuple[int, ...]] = {1: (0,), 2: (1,), 3: (1,), 4: (2, 3)}
_PRIMARY_NAMES = ("input_ids", "inputs_embeds", "hidden_states")


def pin_environment() -> None:
    """Set the pinned switches before torch is imported (and in its live config if it already is)."""
    import sys

    os.environ.update(PINNED_ENV)
    config = sys.modules.get("torch._inductor.config")
    if config is not None:
        config.cpp.vec_isa_ok = True


def configure_inductor(cache_dir: Path) -> Path:
    """Point Inductor (and Triton under it) at ``cache_dir`` and pin the cache switches.

    Call before the first compilation in the process. Raises RuntimeError where an environment
    variable forced caching off when torch was imported (in-process settings cannot undo that).
    """
    cache_dir = cache_dir.resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    # Triton's cache then defaults to <cache_dir>/triton/<device>, inside the entry.
    os.environ.pop("TRITON_CACHE_DIR", None)
    for name, value in PINNED_ENV.items():
        os.environ[name] = value

    import torch
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    from torch._inductor.codecache import CacheBase

    inductor_config.cpp_cache_precompile_headers = False
    inductor_config.cpp.vec_isa_ok = True
    inductor_config.aot_inductor.precompile_headers = False
    inductor_config.fx_graph_cache = True
    inductor_config.autotune_local_cache = True
    functorch_config.enable_autograd_cache = True
    CacheBase.get_local_cache_path.cache_clear()  # functools.cache'd on the old folder
    if not inductor_config.fx_graph_cache or not functorch_config.enable_autograd_cache:
        raise RuntimeError(
            "Inductor caches were forced off by the environment when torch was imported "
            "(TORCHINDUCTOR_FX_GRAPH_CACHE / TORCHINDUCTOR_AUTOGRAD_CACHE); unset them"
        )
    if torch.compiler.config.force_disable_caches:
        raise RuntimeError("torch.compiler.config.force_disable_caches is set; unset it")
    return cache_dir


def cache_stats() -> dict[str, int]:
    """Cache counters of this process so far, e.g. {"fxgraph_cache_hit": 2, ...}.

    ``fxgraph_cache_*`` come from Inductor, ``autograd_cache_*`` from AOTAutograd, and
    ``unique_graphs`` counts the graphs Dynamo captured (a hit still captures the graph).
    """
    from torch._dynamo.utils import counters

    stats: dict[str, int] = {
        "fxgraph_cache_hit": 0,
        "fxgraph_cache_miss": 0,
        "fxgraph_cache_bypass": 0,
        "autograd_cache_hit": 0,
        "autograd_cache_miss": 0,
        "autograd_cache_bypass": 0,
    }
    for group in ("inductor", "aot_autograd"):
        for name, value in counters[group].items():
            if "cache" in name:
                stats[name] = int(value)
    stats["unique_graphs"] = int(counters["stats"]["unique_graphs"])
    return stats


def compile_kwargs(settings: CompileSettings) -> dict[str, Any]:
    """The keyword arguments of every torch.compile call modelwarmup makes."""
    kwargs: dict[str, Any] = {"backend": "inductor", "dynamic": False}
    if settings.extra_options:
        options: dict[str, Any] = {}
        if settings.mode != "default":
            # torch.compile takes mode *or* options; spell the mode out as options.
            from torch._inductor import list_mode_options

            options.update(list_mode_options(settings.mode))
        options.update(settings.extra_options)
        kwargs["options"] = options
    elif settings.mode != "default":
        kwargs["mode"] = settings.mode
    return kwargs


def find_repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks (decoder layers) of a model, for regional compilation.

    Hugging Face models name their layer classes in ``_no_split_modules``; every instance of
    those classes not nested in another one is a block. Without that list, the children of the
    longest ``nn.ModuleList`` whose entries all share one class are used.
    """
    import torch

    names = set(getattr(model, "_no_split_modules", None) or ())
    blocks: list[torch.nn.Module] = []
    if names:
        inside: set[int] = set()
        for module in model.modules():
            if id(module) in inside or type(module).__name__ not in names:
                continue
            blocks.append(module)
            inside.update(id(sub) for sub in module.modules())
    if blocks:
        return blocks
    best: list[torch.nn.Module] = []
    for module in model.modules():
        if (
            isinstance(module, torch.nn.ModuleList)
            and len(module) >= max(2, len(best) + 1)
            and len({type(child) for child in module}) == 1
        ):
            best = list(module)
    return best


def compile_for_serving(model: torch.nn.Module, settings: CompileSettings) -> torch.nn.Module:
    """Wrap ``model`` in place with torch.compile as modelwarmup does everywhere; return it.

    Whole-model: the model's ``forward`` is compiled. Regional: each repeated block's class
    ``forward`` is compiled once and shared by all its instances, so one graph serves every layer.
    Either way the instance's ``forward`` becomes a small eager wrapper that marks the sequence
    (and batch, from 2 up) dims dynamic and calls the compiled function; ``model(...)`` and HF
    helpers keep working. Raises ValueError for inputs longer than ``max_length`` or larger
    than ``max_batch_size``.
    """
    import torch

    if getattr(model, _WRAPPED_MARKER, False):
        raise RuntimeError("model is already wrapped by compile_for_serving")
    kwargs = compile_kwargs(settings)
    if settings.regional:
        targets = find_repeated_blocks(model)
        if not targets:
            raise ValueError(f"no repeated blocks found in {type(model).__name__}")
    else:
        targets = [model]
    compiled: dict[type, Callable[..., Any]] = {}
    for module in targets:
        cls = type(module)
        if cls not in compiled:
            compiled[cls] = torch.compile(cls.forward, **kwargs)
        _install(module, compiled[cls], settings)
    object.__setattr__(model, _WRAPPED_MARKER, True)
    return model


def remove_compile_wrapping(model: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`compile_for_serving` on ``model`` (e.g. to export it); return it."""
    for module in model.modules():
        wrapper = module.__dict__.get("forward")
        if getattr(wrapper, _WRAPPED_MARKER, False):
            del module.__dict__["forward"]
    model.__dict__.pop(_WRAPPED_MARKER, None)
    return model


def _install(module: torch.nn.Module, fn: Callable[..., Any], settings: CompileSettings) -> None:
    def forward(*args: Any, **kwargs: Any) -> Any:
        mark_dynamic_inputs(args, kwargs, settings)
        return fn(module, *args, **kwargs)

    setattr(forward, _WRAPPED_MARKER, True)
    # A plain attribute, not a Module/Parameter: nn.Module.__setattr__ stores it in __dict__,
    # where it shadows the class's forward for this instance only.
    module.forward = forward


def _tensors(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 3 and isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item, depth + 1)
    elif depth < 3 and isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item, depth + 1)


def mark_dynamic_inputs(args: tuple[Any, ...], kwargs: Mapping[str, Any], settings: CompileSettings) -> None:
    """Mark the sequence and batch dims of one call's tensors dynamic, bounded by the settings.

    The primary tensor (first positional tensor, else input_ids / inputs_embeds /
    hidden_states) is marked strictly with min 2 and the settings' maximum; other tensors are
    marked weakly (``maybe_mark_dynamic``) in their sequence-position dims when those equal the
    primary's length, so a coincidentally equal static dim specializes instead of failing.
    Sizes 1 stay static (torch specializes 0 and 1 anyway).
    """
    import torch

    leaves = list(_tensors((args, dict(kwargs))))
    primary = next((a for a in args if isinstance(a, torch.Tensor)), None)
    for name in _PRIMARY_NAMES:
        if primary is None and isinstance(kwargs.get(name), torch.Tensor):
            primary = kwargs[name]
    if primary is None or primary.ndim < 2:
        return
    batch, seq = int(primary.shape[0]), int(primary.shape[1])
    if seq > settings.max_length:
        raise ValueError(f"sequence length {seq} exceeds max_length {settings.max_length}")
    if batch > settings.max_batch_size:
        raise ValueError(f"batch size {batch} exceeds max_batch_size {settings.max_batch_size}")
    mark_seq = seq >= 2 and settings.max_length > 2
    mark_batch = batch >= 2 and settings.max_batch_size > 2
    for tensor in leaves:
        if tensor is primary:
            if mark_seq:
                torch._dynamo.mark_dynamic(tensor, 1, min=2, max=settings.max_length)
            if mark_batch:
                torch._dynamo.mark_dynamic(tensor, 0, min=2, max=settings.max_batch_size)
            continue
        if mark_seq:
            for dim in _SEQ_DIMS.get(tensor.ndim, ()):
                if int(tensor.shape[dim]) == seq:
                    torch._dynamo.maybe_mark_dynamic(tensor, dim)
        if mark_batch and tensor.ndim >= 2 and int(tensor.shape[0]) == batch:
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
