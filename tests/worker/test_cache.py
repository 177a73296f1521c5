"""Cache hits and keys: same inputs give the same key, anything that changes compiled code a new one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelwarmup import cli
from modelwarmup.cache.layout import CacheLayout
from modelwarmup.worker import download, request, warm
from tests.devkit.hub import LocalHub

from . import runner
from .conftest import COMPILE, SERVER_OPTIONS, Warmed


@pytest.mark.slow
def test_a_second_run_is_a_cache_hit_without_calling_the_hub(hub: LocalHub, warmed: Warmed) -> None:
    run = runner.warm_cache(hub.endpoint, warmed.cache, *warmed.args)
    assert run.returncode == 0, run
    assert run.summary["cache_hit"] is True and run.summary["reason"] == "CacheHit"
    assert run.summary["entry_key"] == warmed.summary["entry_key"]
    assert run.summary["compile_seconds"] == 0.0 and run.summary["download_seconds"] == 0.0
    assert hub.request_count == 0
    assert run.termination_message == run.summary
    assert [p["phase"] for p in run.phase_lines()] == ["cache-hit"]


@pytest.mark.slow
def test_force_rebuilds_the_same_entry(hub: LocalHub, warmed: Warmed, tmp_path: Path) -> None:
    cache = warmed.copy(tmp_path / "cache")
    before = json.loads((cache / "compiled" / warmed.summary["entry_key"] / "manifest.json").read_text())
    run = runner.warm_cache(hub.endpoint, cache, *warmed.args, "--force")
    assert run.returncode == 0, run
    assert run.summary["cache_hit"] is False and run.summary["compile_seconds"] > 0
    assert run.summary["entry_key"] == warmed.summary["entry_key"]  # same inputs, same key
    model_dir = cache / "compiled" / warmed.summary["model_key"]
    assert [p.name for p in model_dir.iterdir()] == [
        warmed.summary["platform_key"]
    ]  # one entry, no leftovers
    after = json.loads((model_dir / warmed.summary["platform_key"] / "manifest.json").read_text())
    assert after["created_at"] > before["created_at"]
    assert after["compile_report"]["counters"]["fxgraph_cache_miss"] > 0  # compiled from scratch, not reused
    assert any(r.path.startswith("/api/models/") for r in hub.requests)  # and resolved again


def _model_key(hub: LocalHub, cache: Path, *args: str) -> str:
    """The model key the worker derives for a command line (resolving against the hub, no compile)."""
    parsed = cli.build_parser().parse_args(["warm-cache", "--cache-dir", str(cache), *args])
    built = request.build_request(parsed)
    client = download.HubClient(endpoint=hub.endpoint, token=None, layout=CacheLayout(cache))
    repos = [download.resolve(built.model, client)]
    settings = request.with_device(built.compile, "cpu") if built.compile is not None else None
    return warm.compute_model_key(built, repos, settings)


CHANGES = {
    "encoding": ("--quantization-encoding", "bfloat16"),
    "batch-sizes": ("--batch-sizes", "1", "2"),
    "max-length": ("--max-length", "1024"),
    "max-batch-size": ("--max-batch-size", "8"),
    "sequence-lengths": ("--sequence-lengths", "8", "32"),
    "whole-model": ("--no-use-subgraphs",),
    "aot-inductor": ("--aot-inductor",),
    "compile-mode": ("--compile-mode", "max-autotune"),
    "inductor-option": ("--inductor-option", "freezing=true"),
    "cast-allowed": ("--allow-safetensors-weights-fp32-bf16-bidirectional-cast",),
}
SAME = {
    "server-options": SERVER_OPTIONS,
    "force-download": ("--force-download",),
    "force": ("--force",),
    "default-batch-sizes": ("--batch-sizes", "1"),
    "lock-timeout": ("--lock-timeout", "5"),
    "the-same-weights-named": ("--weight-path", "model.safetensors"),
}


def test_model_key_moves_with_every_compile_input_and_nothing_else(
    hub: LocalHub, tiny_dir: Path, tmp_path: Path
) -> None:
    repo = "tiny/keys"
    hub.add_repo(repo, tiny_dir, tags=["v1"])
    base_args = ("--model-path", repo, *COMPILE, "--max-batch-size", "4")
    base = _model_key(hub, tmp_path, *base_args)
    assert base == _model_key(hub, tmp_path, *base_args)  # same inputs, same key
    for name, extra in SAME.items():
        assert _model_key(hub, tmp_path, *base_args, *extra) == base, name
    misspelt = ("--allow-safetensors-weights-fp32-bf6-bidirectional-cast",)
    assert _model_key(hub, tmp_path, *base_args, *misspelt) == _model_key(
        hub, tmp_path, *base_args, *CHANGES["cast-allowed"]
    )

    keys = {"base": base}
    for name, extra in CHANGES.items():
        keys[name] = _model_key(hub, tmp_path, *base_args, *extra)
    # A new commit on main moves the key; pinning the old one (tag v1) gives the old key back.
    v2 = tmp_path / "v2"
    shutil.copytree(tiny_dir, v2)
    (v2 / "generation_config.json").write_text(json.dumps({"max_new_tokens": 9}))
    hub.add_repo(repo, v2)
    keys["new-commit"] = _model_key(hub, tmp_path, *base_args)
    collisions = {name: key for name, key in keys.items() if list(keys.values()).count(key) > 1}
    assert not collisions, collisions
    assert _model_key(hub, tmp_path, *base_args, "--huggingface-model-revision", "v1") == base


def test_a_new_commit_is_warmed_with_force_download_or_a_pinned_revision(
    hub: LocalHub, tiny_dir: Path, tmp_path: Path
) -> None:
    repo = "tiny/moving"
    first = hub.add_repo(repo, tiny_dir)
    cache = tmp_path / "cache"

    def warm(*args: str) -> runner.Run:
        run = runner.warm_cache(hub.endpoint, cache, "--model-path", repo, "--no-compile", *args)
        assert run.returncode == 0, run
        return run

    one = warm()
    v2 = tmp_path / "v2"
    shutil.copytree(tiny_dir, v2)
    (v2 / "config.json").write_text(
        json.dumps({**json.loads((tiny_dir / "config.json").read_text()), "v": 2})
    )
    second = hub.add_repo(repo, v2)

    hub.clear_log()
    stale = warm()  # the request's ref answers without calling the hub, as a cache hit must
    assert stale.summary["entry_key"] == one.summary["entry_key"] and hub.request_count == 0
    moved = warm("--force-download")
    assert moved.summary["commit"] == second and moved.summary["model_key"] != one.summary["model_key"]
    pinned = warm("--huggingface-model-revision", second)
    assert pinned.summary["cache_hit"] is True and pinned.summary["model_key"] == moved.summary["model_key"]
    back = warm("--huggingface-model-revision", first)
    assert back.summary["cache_hit"] is True and back.summary["model_key"] == one.summary["model_key"]
    assert (cache / "hf" / "hub" / "models--tiny--moving" / "refs" / "main").read_text() == second


PLATFORM = """
import json
from modelwarmup.compilation import platform
fingerprint = platform.platform_fingerprint("cpu")
print(json.dumps({"key": platform.platform_key(fingerprint), "threads": fingerprint["num_threads"]}))
"""


def test_platform_key_follows_the_thread_count() -> None:
    def key(threads: str) -> dict[str, str]:
        env = runner.clean_env({"OMP_NUM_THREADS": threads})
        done = subprocess.run(
            [sys.executable, "-c", PLATFORM], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    one, two = key("1"), key("2")
    assert (one["threads"], two["threads"]) == ("1", "2")
    assert one["key"] != two["key"]
