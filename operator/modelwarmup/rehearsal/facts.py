"""The platform facts and the key of a rehearsal, found with the standard library only.

The server's own software (its torch, CUDA runtime, compiler) is the image's, which the key covers
by name and digest; what the image cannot say is the machine: the CPU's instruction set and the
GPUs (product, compute capability, driver), read here from ``/proc/cpuinfo`` and ``nvidia-smi``.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from modelwarmup.cache import keys
from modelwarmup.contracts import digest
from modelwarmup.contracts.host import cpu_flags

_NVIDIA_QUERY = ("nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader")


def _gpus() -> str:
    """One line per NVIDIA GPU: ``name, compute capability, driver``; empty without one."""
    if shutil.which(_NVIDIA_QUERY[0]) is None:
        return ""
    try:
        result = subprocess.run(_NVIDIA_QUERY, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return "; ".join(line.strip() for line in result.stdout.splitlines() if line.strip())


def platform_facts() -> dict[str, str]:
    return {"machine": platform.machine(), "cpu_flags": cpu_flags(), "gpus": _gpus()}


def key_inputs(
    *,
    model_key: str,
    image: str | None,
    image_digest: str | None,
    command: Sequence[str],
    compile_env: Mapping[str, str],
    engine_cache_path: str,
    facts: Mapping[str, str],
) -> dict[str, Any]:
    """Everything that decides whether a server can reuse what another one compiled."""
    return {
        "model_key": model_key,
        "image": image,
        "image_digest": image_digest,
        "command": list(command),
        "compile_env": dict(compile_env),
        "engine_cache_path": engine_cache_path,
        "platform": dict(facts),
    }


def rehearsal_key(repo: str, inputs: Mapping[str, Any]) -> str:
    """``<repo-slug>-<digest>``, as the model keys are."""
    return f"{keys.repo_slug(repo)}-{digest.digest(dict(inputs))}"
