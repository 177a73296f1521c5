"""The rehearsal round trip with vLLM itself (its CPU build, in its own venv: the serving image).

`modelwarmup rehearse` downloads the tiny model from the local hub, runs vLLM cold with its caches
redirected, sends it completions, stops it, verifies a second start from the capture and publishes;
`modelwarmup restore` puts the caches back in a fresh folder; a fresh vLLM started with the env the
restore prints then serves a completion without compiling: no new file in its caches, no miss in
its log, and its engine start well below the cold one. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from modelwarmup.rehearsal import capture, engines
from tests.devkit.hub import LocalHub
from tests.rehearsal.conftest import TINY, entry_dir
from tests.rehearsal.vllm import VLLM_ENV, first_completion, free_port, server_command, vllm_python
from tests.worker import runner

pytestmark = pytest.mark.slow


def rehearse(hub: LocalHub, cache: Path, engine: Path, port: int, env: dict[str, str]) -> runner.Run:
    command = runner.argv(
        "rehearse",
        "--cache-dir", cache,
        "--model-path", TINY,
        "--ready-url", f"http://127.0.0.1:{port}/health",
        "--engine-cache-path", engine,
        "--timeout", "400",
        "--",
        *server_command(vllm_python(), TINY, port),
    )  # fmt: skip
    return runner.run(command, runner.clean_env({"HF_ENDPOINT": hub.endpoint, **env}), timeout=900)


def serve_once(env: dict[str, str], port: int, log: Path) -> tuple[float, dict[str, object]]:
    """A fresh vLLM with ``env``: seconds to its first completion, and the completion."""
    started = time.monotonic()
    with log.open("wb") as output:
        server = subprocess.Popen(
            server_command(vllm_python(), TINY, port), env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        completion = first_completion(server, log, port, TINY, started=started)
        return time.monotonic() - started, completion
    finally:
        server.terminate()
        server.wait(60)


def test_vllm_rehearsed_restored_and_started_warm(hub: LocalHub, tmp_path: Path) -> None:
    cache, engine, port = tmp_path / "cache", tmp_path / "engine", free_port()
    first = rehearse(hub, cache, engine, port, VLLM_ENV)
    assert first.returncode == 0, first
    summary = first.summary
    assert summary["reason"] == "Rehearsed" and summary["captured_bytes"] > 0
    cold, verified = summary["engine_init_seconds"]["cold"], summary["engine_init_seconds"]["verified"]
    assert cold is not None and verified is not None
    entry = entry_dir(cache, summary)
    captured = capture.files(entry / "caches")
    assert any(name.startswith("inductor/") and name.endswith(".so") for name in captured), sorted(captured)[
        :20
    ]

    again = rehearse(hub, cache, engine, port, VLLM_ENV)
    assert again.returncode == 0 and again.summary["cache_hit"], again
    assert again.summary["seconds"] < 15  # no server was started (vLLM alone takes 30 s to import and load)

    restored_to = tmp_path / "pod-engine-cache"
    restored = runner.run(runner.argv("restore", "--entry", entry, "--to", restored_to), runner.clean_env())
    assert restored.returncode == 0, restored
    before = capture.files(restored_to)
    assert before == captured
    pod_env = {**runner.clean_env(VLLM_ENV), **restored.summary["env"]}
    seconds, completion = serve_once(pod_env, free_port(), tmp_path / "pod.log")
    log = (tmp_path / "pod.log").read_text()
    assert completion["usage"]["completion_tokens"] == 16  # type: ignore[index]
    assert capture.files(restored_to) == before, sorted(capture.files(restored_to) - before)
    assert engines.miss_evidence(log) == []
    warm = engines.engine_init_seconds(log)
    assert warm is not None and warm < 0.6 * cold, (warm, cold)
    print(
        f"vLLM engine init: cold {cold} s, verification {verified} s, restored pod {warm} s; pod to first completion {seconds:.1f} s"
    )


def test_vllm_default_aot_compile_is_caught_by_the_verification_start(hub: LocalHub, tmp_path: Path) -> None:
    """vLLM 0.32's default AOT compile saves an artifact that it cannot load with torch 2.13:
    every later start compiles again. The verification start sees it and nothing is published."""
    env = {k: v for k, v in VLLM_ENV.items() if k != "VLLM_USE_AOT_COMPILE"}
    run = rehearse(hub, tmp_path / "cache", tmp_path / "engine", free_port(), env)
    assert run.returncode == 10, run
    assert run.summary["reason"] == "CaptureNotReusable", run
    assert "load failure" in run.summary["message"] and "VLLM_USE_AOT_COMPILE=0" in run.summary["message"]
    assert not (tmp_path / "cache" / "rehearsed").exists() or not [
        p for p in (tmp_path / "cache" / "rehearsed").iterdir() if not p.name.startswith(".")
    ]
