"""Serving-side helpers: start warm from a compile entry and compile exactly as the Job did.

The public face for server authors; the wrapping itself lives in
:mod:`modelwarmup.compilation.recipe`, shared with the warm-up Job.
"""

from modelwarmup.compilation.recipe import cache_stats, compile_for_serving
from modelwarmup.runtime.loader import ActivationResult, activate, load_aoti

__all__ = ["ActivationResult", "activate", "cache_stats", "compile_for_serving", "load_aoti"]
