"""The env-var switch for servers we don't control: start a Python process warm, or cold with a
warning, and never crash it.

The operator sets ``MODELWARMUP_AUTOLOAD=1``, ``MODELWARMUP_CACHE_DIR`` and
``MODELWARMUP_CACHE_KEY`` (the model key) in serving containers, and puts a directory on
``PYTHONPATH`` whose ``sitecustomize.py`` (written by ``modelwarmup verify --install-runtime``)
calls :func:`activate_from_env` when the interpreter starts. It picks the entry built for exactly
this platform; a missing entry or one for another platform gives one warning line naming what
differs, and the process carries on and compiles on its own. After the first compilation it logs
the cache hits and misses torch counted (and sets a Prometheus gauge when prometheus_client is
importable), so a cold start is visible.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelwarmup.contracts import packaging, startlog, wiring

ACTIVATED = wiring.ENV_ACTIVATED  # inherited by child processes: they reuse the same copy
# Set while this process activates. Activation starts Python helpers of its own (Inductor's ISA
# probe dlopens a test library in a child interpreter, under a file lock the parent holds); those
# run sitecustomize too and must not try to activate, or they wait on that lock until the probe
# times out and the parent concludes a different CPU (and so a different platform).
ACTIVATING = wiring.ENV_ACTIVATING
COLD = wiring.ENV_COLD  # set once a process decided to start cold: its children do not ask again


def _warn(message: str) -> None:
    print(
        startlog.warning(f"{message}; starting cold (the server compiles on its own)"),
        file=sys.stderr,
        flush=True,
    )


def _cold(message: str) -> None:
    os.environ[COLD] = "1"
    _warn(message)


def _device() -> str:
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def select_entry(cache_dir: Path, model_key: str, fingerprint: Mapping[str, str]) -> tuple[Path | None, str]:
    """The entry for exactly this platform, or None and why not (which fingerprint keys differ)."""
    from modelwarmup.cache import layout
    from modelwarmup.compilation import platform

    key = platform.platform_key(fingerprint)
    entry = cache_dir / "compiled" / model_key / key
    if layout.read_manifest(entry) is not None:
        return entry, f"entry {model_key}/{key} matches this platform"
    others = layout.CacheLayout(cache_dir).entries_of(model_key)
    if not others:
        return None, f"no complete entry for {model_key} in {cache_dir}"
    differences = []
    for other in others:
        found = layout.read_manifest(other)
        built = found["platform"] if found is not None else {}
        changed = sorted(k for k in set(built) | set(fingerprint) if built.get(k) != fingerprint.get(k))
        shown = ", ".join(f"{k}: built {built.get(k)!r}, here {fingerprint.get(k)!r}" for k in changed[:4])
        differences.append(f"{other.name} differs in {shown}")
    return None, f"no entry for this platform ({key}); " + "; ".join(differences)


def report_stats_after_compile() -> None:
    """Log torch's cache hits and misses after each compilation (the first one tells warm from cold)."""
    from torch._dynamo.callback import callback_handler

    from modelwarmup.compilation import recipe

    def _report(*_: Any) -> None:
        stats = recipe.cache_stats()
        print(startlog.stats_line(stats), file=sys.stderr, flush=True)
        try:
            from prometheus_client import Gauge

            gauge = _gauge(Gauge)
            for name in ("fxgraph_cache_hit", "fxgraph_cache_miss"):
                gauge.labels(counter=name).set(stats.get(name, 0))
        except ImportError:
            pass

    callback_handler.register_end_callback(_report)


_GAUGES: dict[str, Any] = {}


def _gauge(gauge_class: Any) -> Any:
    if "g" not in _GAUGES:
        _GAUGES["g"] = gauge_class(
            "modelwarmup_compile_cache", "torch compile cache counters of this process", ["counter"]
        )
    return _GAUGES["g"]


def activate_from_env(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Activate the warmed entry named by the environment; returns it, or None when cold."""
    if environ.get(wiring.ENV_AUTOLOAD) != "1" or environ.get(ACTIVATING) or environ.get(COLD):
        return None
    try:
        from modelwarmup.compilation import isa_checks, platform, recipe
        from modelwarmup.runtime import loader

        recipe.pin_environment()  # before torch is imported: the same switches as the worker
        cache_dir, model_key = (
            Path(environ.get(wiring.ENV_CACHE_DIR, "")),
            environ.get(wiring.ENV_MODEL_KEY, ""),
        )
        if not model_key or not cache_dir.is_dir():
            _cold(
                f"{wiring.ENV_CACHE_DIR}={cache_dir} / {wiring.ENV_MODEL_KEY}={model_key!r} do not name a cache"
            )
            return None
        if environ.get(ACTIVATED):  # a child of an activated process: same platform, same copy
            recipe.configure_inductor(Path(environ[ACTIVATED]))
            return Path(environ[ACTIVATED])
        os.environ[ACTIVATING] = str(os.getpid())
        try:
            isa_checks.load(isa_checks.saved_in(cache_dir, model_key))  # before the fingerprint runs them
            entry, why = select_entry(cache_dir, model_key, platform.platform_fingerprint(_device()))
            if entry is None:
                _cold(why)
                return None
            result = loader.activate(entry, published=True)
        finally:
            os.environ.pop(ACTIVATING, None)
        os.environ[ACTIVATED] = str(result.inductor_dir)
        report_stats_after_compile()
        print(
            f"modelwarmup: {why}; inductor cache at {result.inductor_dir} ({result.copied_files} files)",
            file=sys.stderr,
            flush=True,
        )
        return entry
    except Exception as error:  # never take the server down
        _cold(f"{type(error).__name__}: {error}")
        return None


SITECUSTOMIZE = f"""\
# Written by `modelwarmup verify --install-runtime`: start this Python process from the warmed cache.
import os as _os

if _os.environ.get({wiring.ENV_AUTOLOAD!r}) == "1":
    try:
        from modelwarmup.runtime import autoload as _autoload

        _autoload.activate_from_env()
    except Exception as _error:  # never take the server down
        import sys as _sys

        print(f"modelwarmup: WARNING: {{_error}}; starting cold", file=_sys.stderr)
"""


# What a serving process imports of modelwarmup (pure Python, the standard library and torch
# alone on the activation path); the operator, the worker and the API models stay out.
RUNTIME_PARTS = ("__init__.py", "py.typed", "errors.py", "contracts", "cache", "compilation", "runtime")


def install_runtime(target: Path) -> None:
    """Copy the serving side of modelwarmup and a sitecustomize.py into ``target``."""
    packaging.copy_parts(RUNTIME_PARTS, target)
    (target / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
