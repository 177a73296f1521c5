"""How much faster does a serving process start from a modelwarmup cache? And how fast is the download?

One run, all against a LocalHub on 127.0.0.1 and a random Llama (by default tiny: hidden 256, 4
layers; ``--layers 24 --hidden 896`` gives real proportions):

1. ``modelwarmup warm-cache --aot-inductor`` fills a cache (timed, not part of the comparison).
2. Four fresh serving processes load the model from that cache's ``HF_HOME`` offline and answer
   one completion request, 16 greedy tokens for a prompt length that was never compiled:

   * ``eager``: ``generate()``, no compilation;
   * ``cold``: ``compile_for_serving`` with an empty Inductor cache (a pod that was never warmed),
     then ``generate()``;
   * ``warm``: ``runtime.activate`` of the entry, then the same ``compile_for_serving`` and
     ``generate()``;
   * ``aoti``: ``runtime.load_aoti`` of the entry's AOTInductor package (no transformers, no
     compiler). It has no KV cache, so each token recomputes the whole sequence: the package is a
     prefill and scoring path, measured here as a server would have to use it to generate.

   Times run from starting the process to the first and to the 16th token being ready; the
   compile part is what a compiling path adds to eager's time to the first token. All four must
   produce the same tokens.
3. Download throughput of a ~150 MB model: the worker's download phase against plain
   ``huggingface_hub.snapshot_download`` of the same files from the same server (fresh caches,
   fresh processes, median of five after one untimed warm-up); ``--no-download`` skips it.

The last line is ``warm_vs_cold=<x> warm_vs_eager=<y> aoti_vs_eager=<z>``: ratios of the time to
the 16th token (first / second; below 1 means faster). Run ``python -m benchmarks.warm_start``
from the repository root; it takes a few minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPO = "bench/llama"
BIG_REPO = "bench/llama-150mb"
PROMPT_LENGTH = 40  # the worker compiles lengths 16 and 64: 40 is new to every serving process
NEW_TOKENS = 16
MODES = ("eager", "cold", "warm", "aoti")
MB = 1e6
ROUNDS = 5


def _env(extra: dict[str, str]) -> dict[str, str]:
    dropped = ("HF_", "TORCHINDUCTOR_", "TRITON_", "MODELWARMUP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "operator"), str(ROOT)]),
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra)
    return env


def _json_line(text: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads([line for line in text.splitlines() if line.startswith("{")][-1])
    return parsed


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        raise SystemExit(
            f"{what} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )


# ---- the serving process ------------------------------------------------------------------------


class _TokenClock:
    """A transformers streamer that notes when each generated token is ready (the first ``put``
    is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if self._prompt_seen:
            self.times.append(time.time())
        self._prompt_seen = True

    def end(self) -> None:
        pass


def child(mode: str, entry: Path, workdir: Path) -> None:
    """One serving process: load, (compile,) answer one completion of NEW_TOKENS, print one JSON line."""
    from modelwarmup.compilation import recipe
    from modelwarmup.runtime import loader

    if mode != "eager":
        recipe.pin_environment()  # what modelwarmup's runtime does before torch is imported
    import torch

    from modelwarmup.compilation.settings import CompileSettings

    settings = CompileSettings.model_validate(json.loads((entry / "manifest.json").read_text())["compile"])
    ids = torch.randint(0, 250, (1, PROMPT_LENGTH), generator=torch.Generator().manual_seed(7))
    activation_s = 0.0
    stats = None
    if mode == "aoti":
        # No KV cache in the package: every token recomputes the whole sequence (greedy).
        runner = loader.load_aoti(entry)
        assert runner is not None, "the entry has no AOTInductor package"
        times, sequence = [], ids
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                next_id = runner(sequence)[:, -1].argmax(-1, keepdim=True)
                sequence = torch.cat([sequence, next_id], dim=1)
                times.append(time.time())
        tokens = sequence[0, PROMPT_LENGTH:].tolist()
    else:
        from transformers import AutoModelForCausalLM

        if mode == "warm":
            started = time.perf_counter()
            loader.activate(entry, private_dir=workdir / "inductor")
            activation_s = time.perf_counter() - started
        elif mode == "cold":
            recipe.configure_inductor(workdir / "inductor")  # empty: compiles from scratch
        model = AutoModelForCausalLM.from_pretrained(REPO, dtype=getattr(torch, settings.dtype)).eval()
        if mode != "eager":
            model = recipe.compile_for_serving(model, settings)
        clock = _TokenClock()
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                streamer=clock,
            )
        times, tokens = clock.times, out[0, PROMPT_LENGTH:].tolist()
        stats = recipe.cache_stats() if mode != "eager" else None
    print(
        json.dumps(
            {
                "first_token_at": times[0],
                "last_token_at": times[-1],
                "activation_s": round(activation_s, 3),
                "tokens": tokens,
                "stats": stats,
            }
        ),
        flush=True,
    )


def serve(mode: str, cache: Path, entry: Path, scratch: Path) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=scratch))
    env = _env(
        {
            "HF_HOME": str(cache / "hf"),
            "HF_HUB_OFFLINE": "1",
            "TORCHINDUCTOR_CACHE_DIR": str(workdir / "inductor"),  # a fresh pod's empty default
            "TMPDIR": str(workdir),
        }
    )
    argv = [
        sys.executable,
        "-m",
        "benchmarks.warm_start",
        "--child",
        mode,
        "--entry",
        str(entry),
        "--workdir",
        str(workdir),
    ]
    started = time.time()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    _check(done, f"the {mode} serving process")
    result = _json_line(done.stdout)
    result["first_s"] = round(result["first_token_at"] - started, 3)
    result["last_s"] = round(result["last_token_at"] - started, 3)
    return result


# ---- the parts ------------------------------------------------------------------------------------


def warm_cache(endpoint: str, cache: Path, repo: str, *args: str) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "modelwarmup.cli",
        "warm-cache",
        "--model-path",
        repo,
        "--cache-dir",
        str(cache),
    ]
    argv += ["--termination-log", str(cache.parent / f"{cache.name}.log"), *args]
    done = subprocess.run(
        argv, env=_env({"HF_ENDPOINT": endpoint}), capture_output=True, text=True, timeout=900, check=False
    )
    _check(done, "warm-cache")
    summary = _json_line(done.stdout)
    summary["phases"] = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"')]
    return summary


SNAPSHOT = """
import json, sys, time
from huggingface_hub import snapshot_download
started = time.perf_counter()
path = snapshot_download(sys.argv[1], cache_dir=sys.argv[2], endpoint=sys.argv[3], token=False, allow_patterns=json.loads(sys.argv[4]))
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def download_throughput(endpoint: str, scratch: Path, files: list[str], size: int) -> tuple[float, float]:
    """Median MB/s of the worker's download phase and of plain snapshot_download, ROUNDS runs each.

    One untimed download first (the server's files into the page cache), then the two alternate,
    each into a fresh cache that is deleted afterwards.
    """

    def ours(cache: Path) -> float:
        summary = warm_cache(endpoint, cache, BIG_REPO, "--no-compile")
        phase = next(p for p in summary["phases"] if p.get("phase") == "download")
        return float(phase["bytes"] / MB / phase["seconds"])

    def plain(cache: Path) -> float:
        argv = [sys.executable, "-c", SNAPSHOT, BIG_REPO, str(cache), endpoint, json.dumps(files)]
        done = subprocess.run(
            argv,
            env=_env({"HF_HUB_DISABLE_XET": "1"}),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        _check(done, "snapshot_download")
        return float(size / MB / _json_line(done.stdout)["seconds"])

    plain(scratch / "dl-warmup")
    shutil.rmtree(scratch / "dl-warmup")
    measured: dict[str, list[float]] = {"ours": [], "plain": []}
    for attempt in range(ROUNDS):
        order = [("ours", ours), ("plain", plain)]
        for name, measure in order if attempt % 2 == 0 else reversed(order):
            cache = scratch / f"dl-{name}-{attempt}"
            measured[name].append(measure(cache))
            shutil.rmtree(cache)
    return statistics.median(measured["ours"]), statistics.median(measured["plain"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--entry", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the random Llama")
    parser.add_argument("--hidden", type=int, default=256, help="its hidden size (a multiple of 64)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compile dtype")
    parser.add_argument("--no-download", action="store_true", help="skip the download comparison")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.entry, args.workdir)
        return 0

    from tests.devkit.hub import LocalHub
    from tests.devkit.tiny_model import make_tiny_llama

    with tempfile.TemporaryDirectory(prefix="modelwarmup-bench-") as tmp:
        scratch = args.keep or Path(tmp)
        scratch.mkdir(parents=True, exist_ok=True)
        heads = args.hidden // 64  # head_dim 64, 2 KV heads (Qwen2-0.5B's shape at hidden 896)
        model = make_tiny_llama(
            scratch / "model",
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=heads,
            num_kv_heads=2 if heads % 2 == 0 else 1,
            intermediate_size=args.hidden * 11 // 2 // 64 * 64,
            seed=11,
        )
        big = make_tiny_llama(scratch / "big", hidden_size=1024, num_layers=4, seed=12)
        with LocalHub() as hub:
            hub.add_repo(REPO, model)
            hub.add_repo(BIG_REPO, big)
            print(
                f"machine: {os.cpu_count()} CPUs, torch threads default; python {sys.version.split()[0]}",
                flush=True,
            )

            cache = scratch / "cache"
            started = time.perf_counter()
            summary = warm_cache(
                hub.endpoint,
                cache,
                REPO,
                "--quantization-encoding",
                args.dtype,
                "--allow-safetensors-weights-fp32-bf16-bidirectional-cast",
                "--devices",
                "cpu",
                "--aot-inductor",
            )
            report = json.loads((cache / "compiled" / summary["entry_key"] / "manifest.json").read_text())[
                "compile_report"
            ]
            print(
                f"worker: {time.perf_counter() - started:.1f} s in all (compile {report['compile_seconds']:.1f} s, "
                f"AOTInductor package {report['aoti_seconds']:.1f} s), entry {summary['entry_key']}",
                flush=True,
            )
            entry = cache / "compiled" / summary["entry_key"]
            results = {mode: serve(mode, cache, entry, scratch) for mode in MODES}
            eager_s = results["eager"]["first_s"]
            for mode, result in results.items():
                stats = result["stats"] or {}
                hits = (
                    f", fxgraph hit/miss {stats['fxgraph_cache_hit']}/{stats['fxgraph_cache_miss']}"
                    if stats
                    else ""
                )
                print(
                    f"{mode:>5}: first token {result['first_s']:6.2f} s, {NEW_TOKENS}th token "
                    f"{result['last_s']:6.2f} s (over eager's first: {result['first_s'] - eager_s:+6.2f} s){hits}"
                )
            agreed = {tuple(r["tokens"]) for r in results.values()}
            if len(agreed) != 1:
                raise SystemExit(f"the serving paths disagree on the tokens: {results}")

            if not args.no_download:
                files = [f for f in os.listdir(big) if f.endswith((".json", ".safetensors", ".jinja"))]
                size = sum((big / f).stat().st_size for f in files)
                ours, plain = download_throughput(hub.endpoint, scratch, files, size)
                print(
                    f"download ({size / MB:.1f} MB): worker {ours:.0f} MB/s, snapshot_download {plain:.0f} MB/s, "
                    f"ratio {ours / plain:.2f}"
                )

        last = {mode: result["last_s"] for mode, result in results.items()}
        # The compile part: what a compiling path adds to eager's time to the first token.
        cold_extra = results["cold"]["first_s"] - eager_s
        warm_extra = max(results["warm"]["first_s"] - eager_s, 1e-3)
        print(f"compile part (first token over eager's): cold / warm = {cold_extra / warm_extra:.1f}x")
        print(
            f"warm_vs_cold={last['warm'] / last['cold']:.2f} "
            f"warm_vs_eager={last['warm'] / last['eager']:.2f} "
            f"aoti_vs_eager={last['aoti'] / last['eager']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
