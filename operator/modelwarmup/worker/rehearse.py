"""`modelwarmup rehearse`: download the model as warm-cache does, then rehearse the server on it.

With ``--prepare DIR`` it stops after the download and leaves in DIR what the launcher needs in a
serving image (the download's summary and the rehearsal package): the init container of a
rehearsal Job. See :mod:`modelwarmup.rehearsal`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from modelwarmup.contracts import packaging
from modelwarmup.rehearsal import command as rehearsal_command
from modelwarmup.rehearsal import run as rehearsal
from modelwarmup.worker import report
from modelwarmup.worker.command import HUB_ENV_DEFAULTS

# What a serving image's Python needs of ours to run the launcher (standard library only).
LAUNCHER_PARTS = ("__init__.py", "errors.py", "contracts", "cache", "compilation", "rehearsal")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "rehearse",
        help="run the serving engine once on the downloaded model and capture what it compiles",
        description="modelwarmup rehearse [OPTIONS] -- SERVER COMMAND ...; see docs/guide.md.",
    )
    parser.add_argument("--model-path", required=True, help="Hugging Face repo id of the model")
    parser.add_argument("--huggingface-model-revision", default="main", help="branch, tag or commit")
    parser.add_argument("--token-file", type=Path, default=None, help="a file holding the hub token")
    parser.add_argument("--pin", default=None, help="the commit the revision resolved to (the operator's)")
    parser.add_argument(
        "--prepare",
        type=Path,
        default=None,
        metavar="DIR",
        help="download only, and leave the launcher and the download's summary in DIR",
    )
    rehearsal_command.add_rehearsal_arguments(
        parser, engine_cache_default=rehearsal_command.CLI_ENGINE_CACHE_PATH
    )
    parser.add_argument("server_command", nargs="*", metavar="SERVER COMMAND", help="after '--'")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    server_environ = dict(os.environ)  # the server's, before the hub client's settings below
    report.configure_logging()
    for name, value in HUB_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    termination_log = args.termination_log

    def body() -> dict[str, Any]:
        download = _download(args)
        if args.prepare is not None:
            _prepare(args.prepare, download)
            return {**download, "reason": "Prepared", "message": f"prepared {args.prepare} for the launcher"}
        return rehearsal.rehearse(
            rehearsal_command.spec_from(args, args.server_command, download, server_environ)
        )

    return rehearsal_command.reporting(body, termination_log)


def _download(args: argparse.Namespace) -> dict[str, Any]:
    """The model into CACHE/hf, resolved, verified and resumable: warm-cache, download only."""
    os.environ["HF_HOME"] = str(args.cache_dir / "hf")
    from modelwarmup.worker import warm
    from modelwarmup.worker.request import RepoRequest, WarmCacheRequest

    request = WarmCacheRequest(
        model=RepoRequest(repo=args.model_path, revision=args.huggingface_model_revision, pinned=args.pin),
        compile=None,
        cache_dir=args.cache_dir,
        token_file=args.token_file,
    )
    summary = warm.warm_cache(request, os.environ)
    return {**json.loads(summary.to_json()), "repo": args.model_path}


def _prepare(target: Path, download: dict[str, Any]) -> None:
    """The launcher's package and the download's summary, for the serving container."""
    packaging.copy_parts(LAUNCHER_PARTS, target / rehearsal_command.LAUNCHER_PYTHON)
    (target / rehearsal_command.DOWNLOAD_SUMMARY).write_text(json.dumps(download), encoding="utf-8")
