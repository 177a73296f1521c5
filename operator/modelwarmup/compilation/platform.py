"""A fingerprint of everything outside the model that decides whether compile artifacts fit a host.

Inductor's cache keys are built for one machine: they hash the torch build, the compiler, the
Inductor config and the graph, but *not* the CPU's instruction set (an AVX-512 cache served on an
AVX2 node fails or runs the wrong kernels) and not the GPU model beyond what the Triton cache
notices. A shared cache volume serves many nodes, so modelwarmup keys its entries by this
fingerprint: torch/triton/CUDA versions, the GPU name and compute capability, the vector ISA
Inductor picks and the CPU flags behind it, the C++ compiler Inductor would call and its version,
the Python interpreter and headers (real paths), the thread count (Inductor writes it into the
generated C++: a different count is a miss of its own cache too) and the environment variables
that steer compilation. The transformers version is not a member: it shapes the traced graph,
which Inductor's own key covers, and never makes a cached kernel wrong.

Same machine and environment give the same key; change any input and the key changes. Paths that
legitimately differ between pods (cache dirs, temp dirs) and the knobs modelwarmup itself pins in
every process (see :mod:`modelwarmup.runtime.loader`) are left out. Secrets are never read: only
variables with known compile-related prefixes are considered, and names that look like
credentials are dropped even then.

torch is imported lazily, inside :func:`platform_fingerprint`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from typing import Any

from modelwarmup.contracts import digest
from modelwarmup.contracts.host import SECRET_HINT, cpu_flags

# Environment variables that change what Inductor generates. The OpenMP runtime's own switches
# (KMP_*, GOMP_*, *_NUM_THREADS) are not among them: they steer scheduling, not code, and the
# thread count Inductor writes into its C++ is the fingerprint's num_threads. Libraries set some
# of them on import (scikit-learn: KMP_DUPLICATE_LIB_OK, KMP_INIT_AT_FORK), which made a process
# that had imported one look like another platform.
_ENV_PREFIXES = (
    "TORCHINDUCTOR_",
    "TORCH_COMPILE_",
    "TORCHDYNAMO_",
    "TORCH_DYNAMO_",
    "TORCH_INDUCTOR_",
    "INDUCTOR_",
    "TRITON_",
)
_ENV_NAMES = frozenset(
    {
        "ATEN_CPU_CAPABILITY",
        "CXX",
        "CC",
        "CPATH",
        "TORCH_CUDA_ARCH_LIST",
        "PYTORCH_ROCM_ARCH",
        "CUDA_HOME",
        "ROCM_HOME",
        "LD_PRELOAD",
    }
)
# Set per pod, or pinned by modelwarmup to the same value in every process.
_ENV_EXCLUDED = frozenset(
    {
        "TORCHINDUCTOR_CACHE_DIR",
        "TRITON_CACHE_DIR",
        "TRITON_HOME",
        "TRITON_DUMP_DIR",
        "TRITON_OVERRIDE_DIR",
        "TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS",
        "TORCHINDUCTOR_FX_GRAPH_CACHE",
        "TORCHINDUCTOR_AUTOGRAD_CACHE",
        "TORCHINDUCTOR_VEC_ISA_OK",
    }
)


def compile_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The compile-related environment variables of ``environ`` (default: os.environ)."""
    env = os.environ if environ is None else environ
    picked: dict[str, str] = {}
    for name, value in env.items():
        if name in _ENV_EXCLUDED or SECRET_HINT.search(name):
            continue
        if name in _ENV_NAMES or name.startswith(_ENV_PREFIXES):
            picked[name] = value
    return dict(sorted(picked.items()))


def _package_version(*names: str) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def _cxx_info() -> dict[str, str]:
    """The C++ compiler Inductor would invoke: resolved path, version line and a digest of -v."""
    try:
        from torch._inductor import cpp_builder

        compiler = cpp_builder.get_cpp_compiler()
        version_dump = cpp_builder.get_compiler_version_info(compiler)
    except Exception as exc:  # no compiler: AOTI-only serving still works
        return {"cxx": "", "cxx_error": type(exc).__name__}
    resolved = shutil.which(compiler) or compiler
    first_line = ""
    try:
        result = subprocess.run(
            [resolved, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        first_line = (result.stdout or result.stderr).splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    return {
        "cxx": os.path.realpath(resolved) if os.path.exists(resolved) else resolved,
        "cxx_version": first_line,
        "cxx_version_digest": hashlib.sha256(version_dump.encode()).hexdigest()[:16],
    }


def _cpu_info() -> dict[str, str]:
    from torch._inductor import cpu_vec_isa

    from modelwarmup.compilation import isa_checks

    isa_checks.install()  # answers loaded from an entry spare the checks; the worker records them
    isa = cpu_vec_isa.pick_vec_isa()
    info = {
        "cpu_vec_isa": type(isa).__name__,
        "cpu_vec_isa_bits": str(isa.bit_width()) if isa else "0",
        "cpu_flags": cpu_flags(),
    }
    try:
        import torch

        info["aten_cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    except Exception:
        info["aten_cpu_capability"] = ""
    return info


def _cuda_info(device: str) -> dict[str, str]:
    """GPU identity. Not exercised where there is no GPU; every call is guarded."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but torch sees no CUDA/ROCm device")
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    props = torch.cuda.get_device_properties(index)
    major, minor = torch.cuda.get_device_capability(index)
    info = {
        "gpu_name": str(props.name),
        "gpu_capability": f"{major}.{minor}",
        "gpu_sm_count": str(props.multi_processor_count),
        "gpu_arch": str(getattr(props, "gcnArchName", "")),
    }
    try:
        cudnn: Any = torch.backends.cudnn
        info["cudnn"] = str(cudnn.version() or "")
    except Exception:
        info["cudnn"] = ""
    return info


def platform_fingerprint(device: str = "cpu") -> dict[str, str]:
    """Describe this process's compile platform for ``device`` as flat string pairs.

    Calling it may run the C++ compiler (Inductor's ISA checks, unless answers saved by a warm-up
    were loaded: :mod:`modelwarmup.compilation.isa_checks`) and imports torch. Keys starting
    with ``env:`` are environment variables.
    """
    import torch

    device_type = device.split(":", 1)[0]
    fp: dict[str, str] = {
        "device_type": device_type,
        "machine": platform.machine(),
        "os": platform.system(),
        "torch": str(torch.__version__),
        "torch_git": str(getattr(torch.version, "git_version", "")),
        "torch_cuda": str(torch.version.cuda or ""),
        "torch_hip": str(getattr(torch.version, "hip", None) or ""),
        "triton": _package_version("triton", "pytorch-triton", "pytorch-triton-rocm"),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        # What compiled kernels depend on: the interpreter itself and the headers they build
        # against, as real paths. `python` and `python3`, or a virtualenv and the install it
        # was made from, are the same interpreter and the same headers.
        "python_executable": os.path.realpath(sys.executable),
        "python_include": os.path.realpath(sysconfig.get_paths()["include"]),
        "torch_path": os.path.dirname(os.path.realpath(torch.__file__)),
        "num_threads": str(torch.get_num_threads()),
    }
    fp.update(_cxx_info())
    if device_type == "cpu":
        fp.update(_cpu_info())
    elif device_type == "cuda":
        fp.update(_cuda_info(device))
    else:
        raise ValueError(f"unsupported device {device!r}")
    for name, value in compile_env().items():
        fp[f"env:{name}"] = value
    return fp


def platform_key(fp: Mapping[str, str]) -> str:
    """Short hex digest of a fingerprint."""
    return digest.digest(dict(fp))
