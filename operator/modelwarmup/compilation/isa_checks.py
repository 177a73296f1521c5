"""Inductor's vector-ISA build checks: run once by the warm-up, their answers reused by serving.

Before its first CPU kernel, Inductor decides which instruction-set extensions its kernels may
use (AVX-512 BF16, VNNI, AMX, AMX-FP16) by compiling a small test library for each and loading
it in a child Python (``VecISA.check_build``). That cost every fresh serving process 3.0 s here
(1.1 s with the libraries already in the cache folder: the child processes alone), before its
first compiled call, warm or not; ``TORCHINDUCTOR_VEC_ISA_OK`` skips only the base check.

A check's answer depends on its code, the compiler flags, the compiler and torch (Inductor's own
key for the test library: ``_get_isa_dry_compile_fingerprint``) and the CPU. :func:`install`
wraps the check so that each answer is recorded under a digest of all of these; the warm-up
saves what it saw into the entry (:func:`save`), and a serving process that installs those
answers (:func:`load`) takes an answer only where its own digest is the same, which another
compiler, torch or CPU never gives. Any other check runs as Inductor runs it.

Install before anything calls ``pick_vec_isa()``: Inductor caches the result per process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from modelwarmup.cache import layout
from modelwarmup.contracts.host import cpu_flags

_FORMAT = 1
_ANSWERS: dict[str, bool] = {}  # installed from entries: digest -> answer
_SEEN: dict[str, bool] = {}  # every check this process answered, either way
_RAN: list[str] = []  # those of them Inductor checked itself (compiled and loaded a library)
_INSTALLED: list[Callable[..., bool]] = []  # Inductor's own check_build, once wrapped


def install(answers: Mapping[str, bool] | None = None) -> None:
    """Wrap Inductor's ISA check (once per process) and add ``answers`` to what it may reuse."""
    from torch._inductor import cpu_vec_isa

    _ANSWERS.update(answers or {})
    if _INSTALLED:
        return
    original: Callable[..., bool] = cpu_vec_isa.VecISA.check_build
    _INSTALLED.append(original)

    def check_build(isa: Any, code: str) -> bool:
        key = _digest(isa, code)
        answer = _ANSWERS.get(key)
        if answer is None:
            answer = bool(original(isa, code))
            _RAN.append(key)
        _SEEN[key] = answer
        return answer

    setattr(cpu_vec_isa.VecISA, "check_build", check_build)  # noqa: B010 (a class attribute, on purpose)


def ran() -> int:
    """How many checks this process ran itself (the others took a saved answer)."""
    return len(_RAN)


def save(path: Path) -> bool:
    """Write the answers seen so far to ``path``; False (and nothing written) when there are none."""
    if not _SEEN:
        return False
    path.write_text(json.dumps({"format": _FORMAT, "answers": dict(sorted(_SEEN.items()))}, indent=1))
    return True


def read(paths: Iterable[Path]) -> dict[str, bool]:
    """The answers saved in ``paths`` (missing or unreadable files give none)."""
    answers: dict[str, bool] = {}
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("format") == _FORMAT and isinstance(data.get("answers"), dict):
            answers.update({k: v for k, v in data["answers"].items() if isinstance(v, bool)})
    return answers


def load(paths: Iterable[Path]) -> int:
    """:func:`install` the answers saved in ``paths``; returns how many there were."""
    answers = read(paths)
    install(answers)
    return len(answers)


def saved_in(cache_dir: Path, model_key: str | None = None) -> list[Path]:
    """The answer files saved in the entries of ``model_key`` (of every model where None)."""
    return sorted((cache_dir / "compiled").glob(f"{model_key or '*'}/*/{layout.ISA_CHECKS_FILENAME}"))


def _digest(isa: Any, code: str) -> str:
    from torch._inductor.cpu_vec_isa import _get_isa_dry_compile_fingerprint

    # What Inductor keys the test library by, and the CPU it is loaded on.
    parts = [str(isa), code, _get_isa_dry_compile_fingerprint(isa.build_arch_flags()), cpu_flags()]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
