"""How modelwarmup compiles a model, the same in the warm-up Job and in serving processes.

A cache hit needs the *same* graphs and the same Inductor switches on both sides, so this one
module holds what both sides run: :func:`pin_environment` and :func:`configure_inductor` (the
cache folder and switches), :func:`compile_for_serving` (the wrapping: which function is
compiled for which call, dims marked dynamic on every call) and :func:`cache_stats` (torch's hit
and miss counters).

* The cache folder is chosen by the ``TORCHINDUCTOR_CACHE_DIR`` environment variable, which
  Inductor re-reads every time it needs the folder (``runtime.cache_dir_utils.cache_dir()``),
  so setting it in-process works even after torch is imported, as long as nothing has been
  compiled yet. The on/off switches are config values read from the environment only when
  ``torch._inductor.config`` is imported, so :func:`configure_inductor` sets both the
  environment (for a later import) and the live config (for an earlier one).
* Precompiled headers live in ``<tempdir>/torchinductor_<user>/precompiled_headers`` whatever the
  cache folder is, and the switch is part of Inductor's cache key: a fresh pod would rebuild them
  (about 5 s). They are turned off here, in the warm-up Job and in serving alike.
* The sequence dimension (and the batch dimension from 2 up), and a dynamic KV cache's length,
  are marked dynamic on every call, so one graph serves every length up to ``max_length`` and
  nothing depends on torch's automatic-dynamic history in the process. Calls with a KV cache
  (``generate()``) compile the whole model; calls without one can compile the repeated block
  alone (regional). ``generate()`` itself is pinned so that transformers compiles nothing on top.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from modelwarmup.compilation import isa_checks

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
# Vision inputs keep their shapes: images come at the model's fixed resolution, and a channel or
# patch dim that happened to equal the prompt's length must not be taken for a sequence.
_STATIC_INPUTS = frozenset(
    {
        "pixel_values",
        "pixel_attention_mask",
        "image_sizes",
        "image_grid_thw",
        "pixel_values_videos",
        "video_grid_thw",
    }
)


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

    isa_checks.install()  # before the first kernel: record the ISA checks' answers (or reuse them)
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

    Two kinds of call reach a model, and each is compiled the way that gives one stable set of
    graphs (so a warm-up's graphs are exactly what serving asks for):

    * **With a KV cache** (``generate()``, or any call with ``use_cache`` on): the whole model's
      ``forward`` is compiled, decoder layers inlined. Regional compilation cannot serve these
      calls: a layer reads the cache through its own ``layer_idx``, so Dynamo would build one graph
      per layer and stop compiling at its recompile limit. Decoding steps of a model with
      sliding-window layers run eagerly (:func:`eager_decode_steps`).
    * **Without one** (``use_cache=False``: scoring, embeddings, the prefill the worker checks):
      regional (each repeated block's class ``forward`` compiled once, shared by every layer) or
      whole-model, as the settings say.

    Its parameters are frozen (``requires_grad_(False)``): serving never trains, and the graphs
    then do not depend on how the model was loaded or merged.

    The instance's ``forward`` becomes a small eager wrapper that marks the sequence and batch dims
    dynamic and calls the compiled function; ``model(...)`` and HF helpers keep working. The model's
    generation config is pinned as well (:func:`pin_generation_config`). Raises ValueError for
    inputs longer than ``max_length`` or larger than ``max_batch_size``.
    """
    import torch

    if getattr(model, _WRAPPED_MARKER, False):
        raise RuntimeError("model is already wrapped by compile_for_serving")
    kwargs = compile_kwargs(settings)
    # Serving never trains. Whether parameters require grad is part of what AOTAutograd compiles
    # for, and a model's loading decides it: fresh from_pretrained, yes; PEFT's merge_and_unload,
    # no (measured: the merged model missed 1 graph of 3). Frozen here, every model is the same.
    model.requires_grad_(False)
    # Prefill and decode graphs per batch class, with and without a cache, share one code object.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _RECOMPILE_LIMIT)
    whole = torch.compile(type(model).forward, **kwargs)
    layers: dict[type, Callable[..., Any]] = {}
    if settings.regional:
        blocks = find_repeated_blocks(model)
        if not blocks:
            raise ValueError(f"no repeated blocks found in {type(model).__name__}")
        for block in blocks:
            cls = type(block)
            if cls not in layers:
                layers[cls] = torch.compile(cls.forward, **kwargs)
            _install_block(block, layers[cls], settings)

    can_generate = getattr(model, "can_generate", None)
    generates = not callable(can_generate) or bool(can_generate())  # encoders keep no KV cache

    def forward(*args: Any, **call_kwargs: Any) -> Any:
        if generates and _uses_cache(model, call_kwargs):
            with _cached_call():
                cache = _cache_of(call_kwargs)
                if _is_decode_step(args, call_kwargs) and _has_sliding_layers(cache):
                    _EAGER_DECODE_STEPS[id(model)] = _EAGER_DECODE_STEPS.get(id(model), 0) + 1
                    return type(model).forward(model, *args, **call_kwargs)
                mark_dynamic_inputs(args, call_kwargs, settings)
                _mark_cache_dynamic(cache, call_kwargs)
                return whole(model, *args, **call_kwargs)
        if settings.regional:
            return type(model).forward(model, *args, **call_kwargs)
        mark_dynamic_inputs(args, call_kwargs, settings)
        return whole(model, *args, **call_kwargs)

    setattr(forward, _WRAPPED_MARKER, True)
    # The model's own parameters: generate() checks its kwargs against forward's signature, and
    # refused a multimodal model's pixel_values through a bare (*args, **kwargs) (measured: Gemma 3).
    cast(Any, forward).__signature__ = inspect.signature(model.forward)
    model.forward = forward
    pin_generation_config(model, settings)
    object.__setattr__(model, _WRAPPED_MARKER, True)
    return model


def pin_generation_config(model: torch.nn.Module, settings: CompileSettings) -> None:
    """Make ``generate()`` run the graphs the warm-up compiled, in the Job and in serving alike.

    transformers' own auto-compilation (a static cache on a GPU) is turned off: it would compile
    ``__call__`` on top of ours into graphs nobody warmed. A static cache, where the model's
    generation config asks for one, is sized to ``max_length`` once, so its tensors have one
    shape for every request instead of one per prompt length plus ``max_new_tokens``.
    """
    config = getattr(model, "generation_config", None)
    if config is None:
        return
    config.disable_compile = True
    if config.cache_implementation in ("static", "sliding_window", "hybrid", "hybrid_chunked"):
        config.max_cache_len = settings.max_length


def eager_decode_steps(model: torch.nn.Module) -> int:
    """How many decoding steps of ``model`` ran eagerly so far (see :func:`compile_for_serving`).

    Models with sliding-window attention layers decode eagerly: transformers keeps their position
    in a Python int (``cumulative_length_int``), which Dynamo specializes, so every step would
    compile a new graph. Their prefill is compiled.
    """
    return _EAGER_DECODE_STEPS.get(id(model), 0)


def remove_compile_wrapping(model: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`compile_for_serving` on ``model`` (e.g. to export it); return it."""
    for module in model.modules():
        wrapper = module.__dict__.get("forward")
        if getattr(wrapper, _WRAPPED_MARKER, False):
            del module.__dict__["forward"]
    model.__dict__.pop(_WRAPPED_MARKER, None)
    return model


_RECOMPILE_LIMIT = 64
_IN_CACHED_CALL: list[bool] = [False]
_EAGER_DECODE_STEPS: dict[int, int] = {}


@contextmanager
def _cached_call() -> Iterator[None]:
    """While a call with a KV cache runs, blocks call their eager forward (see _install_block)."""
    previous = _IN_CACHED_CALL[0]
    _IN_CACHED_CALL[0] = True
    try:
        yield
    finally:
        _IN_CACHED_CALL[0] = previous


def _uses_cache(model: torch.nn.Module, kwargs: Mapping[str, Any]) -> bool:
    if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
        return True
    use_cache = kwargs.get("use_cache")
    if use_cache is None:
        config: Any = getattr(model, "config", None)
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        use_cache = bool(getattr(text, "use_cache", False))
    return bool(use_cache)


def _cache_of(kwargs: Mapping[str, Any]) -> Any:
    cache = kwargs.get("cache")
    if cache is None:
        cache = kwargs.get("past_key_values")
    return getattr(cache, "self_attention_cache", cache)  # an encoder-decoder's own half


def _has_sliding_layers(cache: Any) -> bool:
    return any(getattr(layer, "is_sliding", False) for layer in getattr(cache, "layers", ()))


def _mark_cache_dynamic(cache: Any, kwargs: Mapping[str, Any]) -> None:
    """Mark a growing cache's length dim (and the attention mask that covers it) dynamic.

    A dynamic cache's keys and values grow by a token a step; the compile settings pin torch's
    automatic dynamism off, so without a mark every step would compile a graph of its own. A
    static cache keeps one shape and is left alone.
    """
    import torch

    for layer in getattr(cache, "layers", ()):
        if getattr(layer, "is_compileable", False):
            continue
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor) and tensor.ndim >= 3 and int(tensor.shape[-2]) >= 2:
                torch._dynamo.maybe_mark_dynamic(tensor, tensor.ndim - 2)
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.ndim == 2 and int(mask.shape[1]) >= 2:
        torch._dynamo.maybe_mark_dynamic(mask, 1)


def _is_decode_step(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    primary = _primary(args, kwargs)
    return primary is not None and primary.ndim >= 2 and int(primary.shape[1]) == 1


def _install_block(module: torch.nn.Module, fn: Callable[..., Any], settings: CompileSettings) -> None:
    import torch

    eager = type(module).forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        # Inside the whole-model graph (Dynamo traces this as a constant) or a cached call, the
        # block is part of the model's graph or runs eagerly; never a graph per layer.
        if torch.compiler.is_compiling() or _IN_CACHED_CALL[0]:
            return eager(module, *args, **kwargs)
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


def _primary(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.Tensor | None:
    import torch

    primary = next((a for a in args if isinstance(a, torch.Tensor)), None)
    for name in _PRIMARY_NAMES:
        if primary is None and isinstance(kwargs.get(name), torch.Tensor):
            primary = kwargs[name]
    return primary


def mark_dynamic_inputs(args: tuple[Any, ...], kwargs: Mapping[str, Any], settings: CompileSettings) -> None:
    """Mark the sequence and batch dims of one call's tensors dynamic, within the settings' limits.

    The primary tensor is the first positional tensor, else input_ids / inputs_embeds /
    hidden_states; other tensors' sequence-position dims are marked where they equal the primary's
    length; vision inputs (``pixel_values``, ...) stay static. Every mark is weak (``maybe_mark_dynamic``): a model's own limits (a sliding window, a
    cache one shorter than ``max_length``) then become guards of the graph, and a length beyond
    them compiles another graph, instead of failing with ConstraintViolationError as a strict
    range would. Sizes 1 stay static (torch specializes 0 and 1 anyway).
    """
    import torch

    primary = _primary(args, kwargs)
    if primary is None or primary.ndim < 2:
        return
    batch, seq = int(primary.shape[0]), int(primary.shape[1])
    if seq > settings.max_length:
        raise ValueError(f"sequence length {seq} exceeds max_length {settings.max_length}")
    if batch > settings.max_batch_size:
        raise ValueError(f"batch size {batch} exceeds max_batch_size {settings.max_batch_size}")
    mark_seq = seq >= 2 and settings.max_length > 2
    mark_batch = batch >= 2 and settings.max_batch_size > 2
    marked = {name: value for name, value in kwargs.items() if name not in _STATIC_INPUTS}
    for tensor in _tensors((args, marked)):
        if tensor is primary:
            if mark_seq:
                torch._dynamo.maybe_mark_dynamic(tensor, 1)
            if mark_batch:
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
            continue
        if mark_seq:
            for dim in _SEQ_DIMS.get(tensor.ndim, ()):
                if int(tensor.shape[dim]) == seq:
                    torch._dynamo.maybe_mark_dynamic(tensor, dim)
        if mark_batch and tensor.ndim >= 2 and int(tensor.shape[0]) == batch:
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
