"""What the rehearsal knows about serving engines: where they keep their compile caches, which
environment variables change what they compile, and how their logs tell a cache miss.

Every cache location below is redirected into one folder, the *engine cache path*, during the
rehearsal and again in every serving pod (where the captured caches are restored at that same
path), so that the server finds in a new pod exactly what it wrote in the rehearsal:

=========================  ==============  ===================================================
variable                   subfolder       who reads it
=========================  ==============  ===================================================
VLLM_CACHE_ROOT            vllm            vLLM: ``torch_compile_cache`` (its Dynamo/AOT
                                           artifacts and, with AOT compile, Inductor's),
                                           ``modelinfos``
TORCHINDUCTOR_CACHE_DIR    inductor        torch Inductor (vLLM without AOT compile, SGLang,
                                           TGI's torch paths, ``transformers serve``)
TRITON_CACHE_DIR           triton          Triton's compiled GPU kernels
XDG_CACHE_HOME             xdg             what else follows ``~/.cache`` (FlashInfer and
                                           DeepGEMM by default, SGLang's JIT kernels, tvm-ffi)
FLASHINFER_WORKSPACE_BASE  flashinfer      FlashInfer's JIT-built kernels
DG_JIT_CACHE_DIR           deepgemm        DeepGEMM's JIT-built kernels
TORCH_EXTENSIONS_DIR       torch-extensions  torch.utils.cpp_extension builds
CUDA_CACHE_PATH            cuda            the CUDA driver's PTX -> SASS cache
=========================  ==============  ===================================================

Measured with vLLM's CPU build (0.32.0, torch 2.13): with AOT compile off, Inductor's kernels go
to ``TORCHINDUCTOR_CACHE_DIR``; with its default AOT compile, under ``VLLM_CACHE_ROOT``. Inductor's
precompiled C++ header (149 MB) goes to the temp folder, not to any cache folder, and the flag that
builds it is part of Inductor's cache key: a pod whose fresh temp folder lacks it rebuilt it and
missed every kernel. So the rehearsal pins ``TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS=0`` in the
rehearsal and in serving alike (:data:`PINNED_ENV`); a value the user sets wins, in both. It pins
``TORCH_LOGS`` to Inductor's cache log too: vLLM's CPU build says nothing of a cache hit or a
compile, Inductor's log says both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Final

from modelwarmup.contracts.host import SECRET_HINT

CACHE_LOCATIONS: Final[Mapping[str, str]] = {
    "VLLM_CACHE_ROOT": "vllm",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TRITON_CACHE_DIR": "triton",
    "XDG_CACHE_HOME": "xdg",
    "FLASHINFER_WORKSPACE_BASE": "flashinfer",
    "DG_JIT_CACHE_DIR": "deepgemm",
    "TORCH_EXTENSIONS_DIR": "torch-extensions",
    "CUDA_CACHE_PATH": "cuda",
}

PINNED_ENV: Final[Mapping[str, str]] = {
    "TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS": "0",
    # Inductor's own INFO lines, one per graph: "fx graph cache hit/miss for key ...". The only
    # evidence vLLM's CPU build logs of a warm or a cold compile (its log says neither), and the
    # same for every engine that compiles with Inductor. Not in Inductor's cache key.
    "TORCH_LOGS": "torch._inductor.codecache",
}

# Variables that change what an engine compiles: part of the rehearsal's key. Everything else of
# the server's environment (ports, log levels, hostnames) is not, and names that look like
# credentials are never read, whatever their prefix.
_COMPILE_ENV_PREFIXES: Final = (
    "VLLM_",
    "SGLANG_",
    "TORCH",
    "PYTORCH_",
    "TRITON_",
    "INDUCTOR_",
    "FLASHINFER_",
    "DG_",
    "CUDA_",
    "NVIDIA_",
    "HIP_",
    "ROCM_",
    "HSA_",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ATEN_",
    "LD_PRELOAD",
    "MAX_",  # TGI: MAX_BATCH_PREFILL_TOKENS, MAX_INPUT_TOKENS, ... size its CUDA graphs
    "CUDA_GRAPHS",
)
# Set by us or per pod: never a reason for another key.
_NOT_COMPILE_ENV: Final = frozenset(
    {
        *CACHE_LOCATIONS,
        "CUDA_VISIBLE_DEVICES",  # which GPU of the node, set per pod by the device plugin
        "NVIDIA_VISIBLE_DEVICES",
        "VLLM_NO_USAGE_STATS",
        "VLLM_LOGGING_LEVEL",
        "VLLM_CONFIGURE_LOGGING",
    }
)


def redirected_env(engine_cache_path: str) -> dict[str, str]:
    """Every known cache location pointed into the engine cache path."""
    root = PurePosixPath(engine_cache_path)
    return {name: str(root / folder) for name, folder in CACHE_LOCATIONS.items()}


def serving_env(engine_cache_path: str, server_env: Mapping[str, str]) -> dict[str, str]:
    """What the rehearsal adds to the server's own environment, and every serving pod sets too:
    the redirected cache locations, and the pinned knobs the server does not set itself."""
    env = redirected_env(engine_cache_path)
    env.update({name: value for name, value in PINNED_ENV.items() if name not in server_env})
    return env


def compile_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of a server's environment that change what it compiles."""
    return {
        name: value
        for name, value in sorted(environ.items())
        if name.startswith(_COMPILE_ENV_PREFIXES)
        and name not in _NOT_COMPILE_ENV
        and not SECRET_HINT.search(name)
    }


# Lines of an engine's log that say it compiled although a cache was there to load, with what to
# do about it. Searched in the verification start and in serving pods' logs.
MISS_MARKERS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (
        re.compile(r"Compiling model again due to a load failure"),
        "vLLM could not load its own AOT-compiled artifact (a vLLM build and torch that disagree); "
        "set VLLM_USE_AOT_COMPILE=0 in the server's env: vLLM then reuses Inductor's cache instead",
    ),
    (
        re.compile(r"Compiling a graph for (dynamic|compile range|shape)"),
        "vLLM compiled a graph its cache should have held",
    ),
    (
        re.compile(r"fx graph cache miss for key"),
        "Inductor compiled a graph its cache should have held: the server's flags, env, torch or "
        "machine differ from the rehearsal's",
    ),
)
# Lines that say an engine loaded compiled code from its cache: the proof a serving pod started
# warm (vLLM's, with or without its AOT compile).
HIT_MARKERS: Final[tuple[re.Pattern[str], ...]] = (
    re.compile(r"Directly load the compiled graph\(s\) for"),
    re.compile(r"Directly load AOT compilation from"),
    re.compile(r"fx graph cache hit for key"),
)
# vLLM's line with the seconds its engine took to start (profile, KV cache, warm-up).
ENGINE_INIT: Final = re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([0-9.]+) s")


def miss_evidence(log: str) -> list[tuple[str, str]]:
    """(line, hint) for each line of ``log`` that shows a cache miss."""
    found = []
    for line in log.splitlines():
        for pattern, hint in MISS_MARKERS:
            if pattern.search(line):
                found.append((line.strip()[:300], hint))
    return found


def hit_evidence(log: str) -> list[str]:
    """Each line of ``log`` that shows a load from a compile cache."""
    return [line.strip()[:300] for line in log.splitlines() if any(p.search(line) for p in HIT_MARKERS)]


def engine_init_seconds(log: str) -> float | None:
    """The engine's own start-up seconds, where its log says them (vLLM)."""
    found = ENGINE_INIT.findall(log)
    return float(found[-1]) if found else None
