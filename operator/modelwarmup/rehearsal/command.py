"""The rehearsal's command lines: the options ``modelwarmup rehearse`` shares with the launcher,
``modelwarmup restore``, and the launcher itself (``python3 -m modelwarmup.rehearsal``).

The launcher is what a rehearsal Job runs in the user's serving image: an init container of ours
has downloaded the model and left its summary and this package in an emptyDir (``--prepared``),
and the launcher, with nothing but the image's Python, runs the server, captures and publishes.
Each prints its summary as the last line on stdout and writes it to the termination-message file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelwarmup import errors
from modelwarmup.contracts import startlog, wiring
from modelwarmup.rehearsal import run as rehearsal
from modelwarmup.rehearsal.server import WarmupRequest

DOWNLOAD_SUMMARY = "download.json"  # in --prepared: the init container's warm-cache summary
LAUNCHER_PYTHON = "python"  # in --prepared: this package, for the image's Python
TERMINATION_MESSAGE_LIMIT = 4096
CLI_ENGINE_CACHE_PATH = Path(tempfile.gettempdir()) / "modelwarmup-engine-cache"


def add_rehearsal_arguments(parser: argparse.ArgumentParser, *, engine_cache_default: Path) -> None:
    parser.add_argument("--cache-dir", type=Path, required=True, help="the cache volume (or its subPath)")
    parser.add_argument(
        "--ready-url", required=True, help="http://127.0.0.1:PORT/PATH: 200 when the server is ready"
    )
    parser.add_argument(
        "--request",
        action="append",
        default=[],
        metavar="'METHOD /path [JSON]'",
        help="a warm-up request (repeatable); default: a short and a long /v1/completions",
    )
    parser.add_argument(
        "--engine-cache-path",
        type=Path,
        default=engine_cache_default,
        help=f"where the server's compile caches go, and serving pods restore them (default {engine_cache_default})",
    )
    parser.add_argument(
        "--hf-home", type=Path, default=None, help="HF_HOME as the server sees it (default CACHE_DIR/hf)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds until the server must be ready"
    )
    parser.add_argument("--stop-grace", type=float, default=60.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--image", default=None, help="the server's image, part of the key")
    parser.add_argument("--image-digest", default=None, help="its digest, when known")
    parser.add_argument("--no-verify", action="store_true", help="publish without a verification start")
    parser.add_argument("--force", action="store_true", help="rehearse again even when the entry exists")
    parser.add_argument("--termination-log", type=Path, default=None)


def spec_from(
    args: argparse.Namespace, command: Sequence[str], download: Mapping[str, Any], environ: Mapping[str, str]
) -> rehearsal.Rehearsal:
    """The rehearsal of ``command`` for a model the warm-cache summary ``download`` describes."""
    if not download.get("ok") or not download.get("model_key") or not download.get("commit"):
        raise errors.InvalidOptionError(
            f"the model's download did not succeed: {download.get('message', download)}"
        )
    return rehearsal.Rehearsal(
        cache_dir=args.cache_dir,
        repo=str(download.get("repo") or args.model_path),
        commit=str(download["commit"]),
        model_key=str(download["model_key"]),
        command=tuple(command),
        ready_url=args.ready_url,
        engine_cache_path=args.engine_cache_path,
        server_env=dict(environ),
        hf_home=args.hf_home,
        requests=tuple(WarmupRequest.parse(r) for r in args.request),
        timeout_s=args.timeout,
        stop_grace_s=args.stop_grace,
        image=args.image,
        image_digest=args.image_digest,
        verify=not args.no_verify,
        force=args.force,
        download_seconds=float(download.get("download_seconds") or 0.0),
    )


def fit(summary: Mapping[str, Any], limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """The summary as JSON within the kubelet's limit: timings, then env, then the message's tail
    go first; never ok, reason, permanent or the keys."""
    data = dict(summary)
    text = json.dumps(data, sort_keys=True)
    for optional in ("timings", "env", "engine_init_seconds"):
        if len(text.encode()) <= limit:
            return text
        data.pop(optional, None)
        data["truncated"] = True
        text = json.dumps(data, sort_keys=True)
    while len(text.encode()) > limit and len(data.get("message", "")) > 16:
        data["message"] = data["message"][: max(16, len(data["message"]) - (len(text.encode()) - limit) - 1)]
        text = json.dumps(data, sort_keys=True)
    return text


def report(summary: Mapping[str, Any], termination_log: Path | None) -> None:
    print(json.dumps(summary, sort_keys=True), flush=True)
    if termination_log is None:
        return
    try:
        termination_log.parent.mkdir(parents=True, exist_ok=True)
        termination_log.write_text(fit(summary), encoding="utf-8")
    except OSError:
        pass  # outside a pod /dev/termination-log is usually not writable


def reporting(handler: Callable[[], dict[str, Any]], termination_log: Path | None) -> int:
    """Run ``handler`` and report its summary, or its failure (then re-raised for the exit code)."""
    try:
        summary = handler()
    except errors.ModelWarmupError as error:
        report(rehearsal.failure(error), termination_log)
        raise
    except Exception as error:  # a bug or the environment: still tell the operator (exit 1, retried)
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        report(
            {"ok": False, "reason": "Failed", "message": f"{type(error).__name__}: {first_line}"},
            termination_log,
        )
        raise
    report(summary, termination_log)
    return errors.EXIT_OK


def _server_environ(prepared: Path) -> dict[str, str]:
    """Our environment minus what the launcher itself needed (its own PYTHONPATH entry)."""
    environ = dict(os.environ)
    ours = str(prepared / LAUNCHER_PYTHON)
    kept = [p for p in environ.get("PYTHONPATH", "").split(":") if p and p != ours]
    if kept:
        environ["PYTHONPATH"] = ":".join(kept)
    else:
        environ.pop("PYTHONPATH", None)
    return environ


def launch(argv: Sequence[str]) -> int:
    """``python3 -m modelwarmup.rehearsal [OPTIONS] --prepared DIR -- SERVER COMMAND``."""
    ours, command = rehearsal.split_command(argv)
    parser = argparse.ArgumentParser(prog="python3 -m modelwarmup.rehearsal")
    add_rehearsal_arguments(parser, engine_cache_default=Path(wiring.ENGINE_CACHE_MOUNT))
    parser.add_argument("--prepared", type=Path, required=True, help="the folder the init container filled")
    args = parser.parse_args(ours)
    termination_log = args.termination_log or Path(wiring.TERMINATION_LOG)

    def run() -> dict[str, Any]:
        try:
            download = json.loads((args.prepared / DOWNLOAD_SUMMARY).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise errors.InvalidOptionError(
                f"--prepared {args.prepared}: no download summary ({error})"
            ) from None
        return rehearsal.rehearse(spec_from(args, command, download, _server_environ(args.prepared)))

    return _exit_code(lambda: reporting(run, termination_log))


def _exit_code(body: Callable[[], int]) -> int:
    try:
        return body()
    except errors.ModelWarmupError as error:
        print(
            f"modelwarmup rehearse: {error.reason}: {errors.redact_credentials(str(error))}", file=sys.stderr
        )
        return error.exit_code


def register_restore(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "restore",
        help="copy a rehearsed entry's compile caches into a writable folder before the server starts",
    )
    add_restore_arguments(parser)
    parser.set_defaults(handler=restore_command)


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--entry", type=Path, required=True, help="the entry (CACHE/rehearsed/KEY)")
    parser.add_argument(
        "--to", type=Path, default=None, help="where to restore (default: the rehearsal's path)"
    )
    parser.add_argument(
        "--warn-only", action="store_true", help="on a missing or damaged entry, warn and exit 0 (serve cold)"
    )


def restore_command(args: argparse.Namespace) -> int:
    try:
        summary = rehearsal.restore(args.entry, args.to)
    except errors.ModelWarmupError as error:
        if not args.warn_only:
            raise
        print(json.dumps(rehearsal.failure(error), sort_keys=True))
        print(
            startlog.warning("the server will start cold (it compiles on its own)", "restore"),
            file=sys.stderr,
        )
        return errors.EXIT_OK
    print(json.dumps(summary, sort_keys=True))
    return errors.EXIT_OK
