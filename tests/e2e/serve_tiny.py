"""A stand-in model server: load the model from the Hugging Face cache, compile it as modelwarmup
does, answer one completion request (``generate()``), print one JSON line, exit.

Real serving images run their own server; what matters for a warm start is the same: the weights
come from ``HF_HOME`` offline, and torch.compile finds its artifacts. This script is run as a
serving container's main process with the container's (patched) environment, so the runtime
loader's ``sitecustomize`` (on ``PYTHONPATH``, installed by the verify init container) activates
the warmed entry before this code runs, exactly as it would in a pod. The compile settings come
from the entry's manifest (``--manifest``), as a server configured for the entry would use them.

Runs as a plain script (``python tests/e2e/serve_tiny.py ...``): it imports nothing from tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument(
        "--manifest", type=Path, required=True, help="the entry's manifest.json (compile settings)"
    )
    parser.add_argument("--length", type=int, default=13, help="prompt length (13 was never compiled)")
    args = parser.parse_args()

    from modelwarmup.compilation import recipe
    from modelwarmup.compilation.settings import CompileSettings

    settings = CompileSettings.model_validate(json.loads(args.manifest.read_text())["compile"])
    if not os.environ.get("MODELWARMUP_ACTIVATED"):  # cold: nothing was activated by sitecustomize
        recipe.configure_inductor(Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]))

    import torch
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(
        args.repo, revision=args.revision, dtype=getattr(torch, settings.dtype)
    )
    model = recipe.compile_for_serving(model.to(settings.device).eval(), settings)
    ids = torch.randint(0, 250, (1, args.length), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():  # a completion request: prefill, then decoding steps
        tokens = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    result = {
        "first_output_at": time.time(),
        "next_token": int(tokens[0, args.length]),
        "tokens": tokens[0, args.length :].tolist(),
        "stats": recipe.cache_stats(),
        "activated": os.environ.get("MODELWARMUP_ACTIVATED", ""),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
