"""Serving-side helpers: start warm from a compile entry and compile exactly as the Job did."""

from modelwarmup.runtime.loader import (
    ActivationResult,
    activate,
    cache_stats,
    compile_for_serving,
    load_aoti,
)

__all__ = ["ActivationResult", "activate", "cache_stats", "compile_for_serving", "load_aoti"]
