"""`modelwarmup rehearse` and `restore` with servers that fail the ways real ones do.

The command runs as a user runs it (a fresh process, the model downloaded from the local hub); the
server is the stand-in of ``stand_in_server.py``, a real process and a real HTTP server, made to
exit early, never become ready, ignore SIGTERM, capture nothing or compile at every start. Each
failure must exit with its reason and leave no entry behind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.devkit.hub import LocalHub
from tests.rehearsal.conftest import TINY, entry_dir
from tests.rehearsal.vllm import free_port
from tests.worker import runner

STAND_IN = Path(__file__).with_name("stand_in_server.py")
SECRET = "hf_mwTestSecret7f3c9a1e5b2d8c4f6a0e"


def rehearse(
    hub: LocalHub,
    tmp: Path,
    *server_args: str,
    options: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> runner.Run:
    port = port or free_port()
    log = tmp / "termination-log"
    command = runner.argv(
        "rehearse",
        "--cache-dir", tmp / "cache",
        "--model-path", TINY,
        "--ready-url", f"http://127.0.0.1:{port}/health",
        "--engine-cache-path", tmp / "engine",
        "--termination-log", log,
        "--timeout", "60",
        *options,
        "--",
        sys.executable, STAND_IN, "--port", str(port), *server_args,
    )  # fmt: skip
    return runner.run(
        command,
        runner.clean_env({"HF_ENDPOINT": hub.endpoint, **(env or {})}),
        termination_log=log,
        timeout=120,
    )


def assert_failed(run: runner.Run, reason: str, *in_message: str) -> None:
    assert run.returncode == 10, run
    assert run.summary["ok"] is False and run.summary["reason"] == reason, run
    assert run.summary["permanent"] is True
    assert run.termination_message["reason"] == reason
    for text in in_message:
        assert text in run.summary["message"], run


def published(tmp: Path) -> list[Path]:
    rehearsed = tmp / "cache" / "rehearsed"
    return [p for p in rehearsed.iterdir() if not p.name.startswith(".")] if rehearsed.exists() else []


def test_a_server_that_caches_is_rehearsed_verified_and_hit_the_second_time(
    hub: LocalHub, tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    env = {"STAND_IN_STARTS": str(starts), "HF_TOKEN": SECRET, "VLLM_API_KEY": SECRET, "VLLM_SOME_KNOB": "7"}
    port = free_port()  # the server's command line is part of the key
    first = rehearse(hub, tmp_path, "--cache-var", "TORCHINDUCTOR_CACHE_DIR", env=env, port=port)
    assert first.returncode == 0, first
    summary = first.summary
    assert summary["ok"] and summary["reason"] == "Rehearsed" and not summary["cache_hit"]
    assert len(starts.read_text().splitlines()) == 2  # the rehearsal, then the verification start
    entry = entry_dir(tmp_path / "cache", summary)
    manifest = json.loads((entry / "manifest.json").read_text())
    assert (entry / "caches" / "inductor" / "compiled" / "kernel.bin").is_file()
    assert manifest["verification"]["ran"] and manifest["verification"]["new_files"] == []
    assert manifest["env"]["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "engine" / "inductor")
    assert manifest["key_inputs"]["compile_env"]["VLLM_SOME_KNOB"] == "7"
    # Secrets are neither keyed nor stored nor reported, whatever their prefix.
    for text in (
        (entry / "manifest.json").read_text(),
        (entry / "server.log").read_text(),
        first.stdout,
        first.stderr,
    ):
        assert SECRET not in text
    # The same rehearsal again: a hit that starts no server.
    again = rehearse(hub, tmp_path, "--cache-var", "TORCHINDUCTOR_CACHE_DIR", env=env, port=port)
    assert again.returncode == 0 and again.summary["cache_hit"] and again.summary["key"] == summary["key"], (
        again
    )
    assert len(starts.read_text().splitlines()) == 2
    # Another env value that changes compilation is another key.
    other = rehearse(
        hub, tmp_path, "--cache-var", "TORCHINDUCTOR_CACHE_DIR", env={**env, "VLLM_SOME_KNOB": "8"}, port=port
    )
    assert other.returncode == 0 and other.summary["key"] != summary["key"], other


def test_restore_copies_the_caches_and_refuses_a_damaged_entry(hub: LocalHub, tmp_path: Path) -> None:
    done = rehearse(hub, tmp_path, "--cache-var", "TORCHINDUCTOR_CACHE_DIR")
    assert done.returncode == 0, done
    entry = entry_dir(tmp_path / "cache", done.summary)
    target = tmp_path / "restored"
    restored = runner.run(runner.argv("restore", "--entry", entry, "--to", target), runner.clean_env())
    assert restored.returncode == 0, restored
    assert (target / "inductor" / "compiled" / "kernel.bin").read_bytes() == (
        entry / "caches" / "inductor" / "compiled" / "kernel.bin"
    ).read_bytes()
    assert restored.summary["env"]["TORCHINDUCTOR_CACHE_DIR"] == str(target / "inductor")
    # A flipped byte: refused (exit 10), or with --warn-only an empty folder and exit 0 (serve cold).
    kernel = entry / "caches" / "inductor" / "compiled" / "kernel.bin"
    kernel.write_bytes(bytes([kernel.read_bytes()[0] ^ 1]) + kernel.read_bytes()[1:])
    refused = runner.run(
        runner.argv("restore", "--entry", entry, "--to", tmp_path / "again"), runner.clean_env()
    )
    assert refused.returncode == 10 and "CorruptEntry" in refused.stderr, refused
    warned = runner.run(
        runner.argv("restore", "--entry", entry, "--to", target, "--warn-only"), runner.clean_env()
    )
    assert warned.returncode == 0 and "start cold" in warned.stderr, warned
    missing = runner.run(runner.argv("restore", "--entry", tmp_path / "nothing"), runner.clean_env())
    assert missing.returncode == 10 and "no complete rehearsal entry" in missing.stderr, missing


@pytest.mark.parametrize(
    ("server_args", "options", "reason", "in_message"),
    [
        (("--exit-before-ready", "3"), (), "ServerExited", ("code 3", "cannot load the model")),
        (("--never-ready",), ("--timeout", "4"), "ServerNotReady", ("not ready after 4 s",)),
        (
            ("--cache-var", "TORCHINDUCTOR_CACHE_DIR", "--ignore-sigterm"),
            ("--stop-grace", "2"),
            "ServerIgnoredSigterm",
            ("after SIGTERM",),
        ),
        ((), (), "NothingCaptured", ("wrote nothing",)),
        (
            ("--cache-var", "TORCHINDUCTOR_CACHE_DIR", "--always-compile"),
            (),
            "CaptureNotReusable",
            ("1 new files",),
        ),
        (
            ("--cache-var", "TORCHINDUCTOR_CACHE_DIR", "--reject-completions"),
            (),
            "WarmupRequestFailed",
            ("answered 500",),
        ),
    ],
)
def test_a_failing_server_publishes_nothing(
    hub: LocalHub,
    tmp_path: Path,
    server_args: tuple[str, ...],
    options: tuple[str, ...],
    reason: str,
    in_message: tuple[str, ...],
) -> None:
    run = rehearse(hub, tmp_path, *server_args, options=options)
    assert_failed(run, reason, *in_message)
    assert published(tmp_path) == []


def test_bad_input_is_refused_before_anything_starts(hub: LocalHub, tmp_path: Path) -> None:
    port = free_port()
    base = (
        "--cache-dir",
        tmp_path / "cache",
        "--model-path",
        TINY,
        "--engine-cache-path",
        tmp_path / "engine",
    )
    env = runner.clean_env({"HF_ENDPOINT": hub.endpoint})
    other_host = runner.run(
        runner.argv(
            "rehearse", *base, "--ready-url", "http://10.0.0.7:8000/health", "--", sys.executable, STAND_IN
        ),
        env,
    )
    assert other_host.returncode == 10 and "is another host" in other_host.stderr, other_host
    not_found = runner.run(
        runner.argv(
            "rehearse",
            *base,
            "--ready-url",
            f"http://127.0.0.1:{port}/health",
            "--",
            "no-such-server",
            "--serve",
        ),
        env,
    )
    assert not_found.returncode == 10 and "ServerNotFound" in not_found.stderr, not_found
    # Somebody's folder as the engine cache path: an error, and nothing in it is deleted.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "precious.txt").write_text("keep me")
    refused = runner.run(
        runner.argv(
            "rehearse", *base[:4], "--engine-cache-path", theirs, "--ready-url", f"http://127.0.0.1:{port}/health",
            "--", sys.executable, STAND_IN, "--port", str(port),
        ),
        env,
    )  # fmt: skip
    assert refused.returncode == 10 and "not made by modelwarmup" in refused.stderr, refused
    assert (theirs / "precious.txt").read_text() == "keep me"


def test_the_launcher_runs_on_a_bare_python_from_what_the_init_container_prepared(
    hub: LocalHub, tmp_path: Path
) -> None:
    """The rehearsal Job's two halves: `rehearse --prepare` (our image) downloads and leaves the
    launcher; the serving image's Python runs it with nothing else (-S: no site-packages)."""
    prepared, port = tmp_path / "prepared", free_port()
    prepare = runner.run(
        runner.argv("rehearse", "--cache-dir", tmp_path / "cache", "--model-path", TINY,
                    "--ready-url", "http://127.0.0.1:1/", "--prepare", prepared),
        runner.clean_env({"HF_ENDPOINT": hub.endpoint}),
    )  # fmt: skip
    assert prepare.returncode == 0 and prepare.summary["reason"] == "Prepared", prepare
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(prepared / "python")}
    launched = runner.run(
        [
            sys.executable, "-S", "-m", "modelwarmup.rehearsal",
            "--prepared", prepared,
            "--cache-dir", tmp_path / "cache",
            "--ready-url", f"http://127.0.0.1:{port}/health",
            "--engine-cache-path", tmp_path / "engine",
            "--termination-log", tmp_path / "termination-log",
            "--", sys.executable, "-S", STAND_IN, "--port", str(port), "--cache-var", "VLLM_CACHE_ROOT",
        ],
        env,
        termination_log=tmp_path / "termination-log",
    )  # fmt: skip
    assert launched.returncode == 0, launched
    assert launched.termination_message["reason"] == "Rehearsed"
    assert launched.termination_message["model_key"] == prepare.summary["model_key"]
    assert (
        entry_dir(tmp_path / "cache", launched.summary) / "caches" / "vllm" / "compiled" / "kernel.bin"
    ).is_file()
