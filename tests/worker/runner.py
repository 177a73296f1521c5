"""Run `modelwarmup warm-cache` and `modelwarmup verify` as a Job's pod would: a fresh process each.

Each run gets a clean environment (no inherited HF_*, TORCHINDUCTOR_*, TRITON_* or MODELWARMUP_*
variables), the local hub's address in ``HF_ENDPOINT`` and this checkout on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_DROPPED_PREFIXES = ("HF_", "HUGGING_FACE_", "TORCHINDUCTOR_", "TRITON_", "MODELWARMUP_", "TORCH_COMPILE_")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without anything that steers the hub client or torch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_PREFIXES)}
    env["PYTHONPATH"] = str(ROOT / "operator")
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.update(extra or {})
    return env


@dataclass
class Run:
    """A finished `modelwarmup` process."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    termination_log: Path | None = None

    @cached_property
    def summary(self) -> dict[str, Any]:
        """The JSON summary: the last line of stdout that is a JSON object."""
        lines = [line for line in self.stdout.splitlines() if line.startswith("{")]
        assert lines, f"no JSON summary on stdout\n{self}"
        parsed: dict[str, Any] = json.loads(lines[-1])
        return parsed

    @property
    def termination_message(self) -> dict[str, Any]:
        assert self.termination_log is not None
        parsed: dict[str, Any] = json.loads(self.termination_log.read_text(encoding="utf-8"))
        return parsed

    def phase_lines(self) -> list[dict[str, Any]]:
        """The worker's structured per-phase log lines (JSON objects with a "phase")."""
        found = []
        for line in self.stderr.splitlines():
            if line.startswith("{") and '"phase"' in line:
                found.append(json.loads(line))
        return found

    def __str__(self) -> str:
        return (
            f"$ {' '.join(self.argv[2:])}\nexit {self.returncode}\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-6000:]}"
        )


def argv(command: str, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", "modelwarmup.cli", command, *map(str, args)]


def warm_cache_argv(cache_dir: Path, *args: str | Path, termination_log: Path | None = None) -> list[str]:
    log = termination_log or cache_dir.parent / f"{cache_dir.name}.termination-log"
    return argv("warm-cache", "--cache-dir", cache_dir, "--termination-log", log, *args)


def run(
    command: list[str], env: Mapping[str, str], *, timeout: float = 300, termination_log: Path | None = None
) -> Run:
    done = subprocess.run(
        command, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    return Run(command, done.returncode, done.stdout, done.stderr, termination_log)


def warm_cache(
    endpoint: str,
    cache_dir: Path,
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> Run:
    """`modelwarmup warm-cache --cache-dir CACHE ARGS...` against the hub at ``endpoint``."""
    log = cache_dir.parent / f"{cache_dir.name}.termination-log"
    log.unlink(missing_ok=True)
    command = warm_cache_argv(cache_dir, *args, termination_log=log)
    return run(
        command, clean_env({"HF_ENDPOINT": endpoint, **(env or {})}), timeout=timeout, termination_log=log
    )


def start_warm_cache(
    endpoint: str, cache_dir: Path, *args: str | Path, name: str = "worker"
) -> subprocess.Popen[str]:
    """Start a worker in its own process group (so a test can kill it with everything it started)."""
    log = cache_dir.parent / f"{cache_dir.name}.{name}.termination-log"
    return subprocess.Popen(
        warm_cache_argv(cache_dir, *args, termination_log=log),
        env=clean_env({"HF_ENDPOINT": endpoint}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen[str], *, timeout: float = 300) -> Run:
    stdout, stderr = process.communicate(timeout=timeout)
    command = [str(a) for a in process.args] if isinstance(process.args, list) else [str(process.args)]
    return Run(command, process.returncode, stdout, stderr)


def verify(cache_dir: Path, *args: str | Path, timeout: float = 120) -> Run:
    """`modelwarmup verify --cache-dir CACHE ARGS...` (offline: it never calls the hub)."""
    return run(argv("verify", "--cache-dir", cache_dir, *args), clean_env(), timeout=timeout)
