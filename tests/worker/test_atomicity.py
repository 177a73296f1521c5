"""Entries are atomic: a killed worker leaves nothing a reader trusts; racing workers build once."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.devkit.hub import LocalHub

from . import runner
from .conftest import COMPILE, TINY, Warmed

pytestmark = pytest.mark.slow


def _staging_dirs(cache: Path) -> list[Path]:
    return sorted((cache / "compiled").glob("*/.*.tmp"))


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_compile_leaves_no_entry_and_a_rerun_completes(
    hub: LocalHub, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    args = ("--model-path", TINY, *COMPILE)
    worker = runner.start_warm_cache(hub.endpoint, cache, *args)
    deadline = time.monotonic() + 180
    # Mid-compile: Inductor has started writing generated code into the staging directory.
    while not any(
        path.is_file() for staging in _staging_dirs(cache) for path in (staging / "inductor").rglob("*")
    ):
        assert worker.poll() is None, runner.finish(worker)
        assert time.monotonic() < deadline, "the worker never started compiling"
        time.sleep(0.1)
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and any compile subprocesses it started
    worker.wait(timeout=30)

    [stale] = _staging_dirs(cache)
    assert not list((cache / "compiled").rglob("manifest.json"))
    checked = runner.verify(cache, "--model-path", TINY, "--devices", "cpu")
    assert checked.returncode == 21, checked  # incomplete
    assert json.loads(checked.stderr.splitlines()[0])["verify"] == "Incomplete"

    rerun = runner.warm_cache(hub.endpoint, cache, *args)
    assert rerun.returncode == 0, rerun
    assert rerun.summary["cache_hit"] is False
    assert not stale.exists() and _staging_dirs(cache) == []
    entry = cache / "compiled" / rerun.summary["entry_key"]
    assert json.loads((entry / "manifest.json").read_text())["entry_key"] == rerun.summary["entry_key"]


@pytest.mark.timeout(300)
def test_concurrent_workers_for_the_same_key_build_it_once(
    hub: LocalHub, warmed: Warmed, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    # float32 weights compiled in bfloat16, allowed by the seed's misspelt cast flag.
    cast = ("--quantization-encoding", "bfloat16", "--allow-safetensors-weights-fp32-bf6-bidirectional-cast")
    args = ("--model-path", TINY, "--devices", "cpu", *cast)
    workers = [runner.start_warm_cache(hub.endpoint, cache, *args, name=f"w{i}") for i in range(2)]
    runs = [runner.finish(worker, timeout=240) for worker in workers]
    for run in runs:
        assert run.returncode == 0, run
    summaries = [run.summary for run in runs]
    assert sorted(s["cache_hit"] for s in summaries) == [False, True], summaries
    assert len({s["entry_key"] for s in summaries}) == 1
    compiled = [run for run in runs if any(p["phase"] == "compile" for p in run.phase_lines())]
    assert len(compiled) == 1
    [waited] = [run for run in runs if run.summary["cache_hit"]]
    hit = next(p for p in waited.phase_lines() if p["phase"] == "cache-hit")
    assert hit["how"] == "manifest"  # it raced: waited on the entry's lock, then found the manifest

    key = summaries[0]["entry_key"]
    model_dir = cache / "compiled" / summaries[0]["model_key"]
    assert [p.name for p in model_dir.iterdir()] == [summaries[0]["platform_key"]]
    manifest = json.loads((cache / "compiled" / key / "manifest.json").read_text())
    assert manifest["entry_key"] == key and manifest["compile"]["dtype"] == "bfloat16"
    report = manifest["compile_report"]
    assert report["max_abs_diff"] <= min(shape["tolerance"] for shape in report["shapes"])
    # Another encoding than the warmed float32 entry: another model key, the same platform.
    assert summaries[0]["model_key"] != warmed.summary["model_key"]
    assert summaries[0]["platform_key"] == warmed.summary["platform_key"]
