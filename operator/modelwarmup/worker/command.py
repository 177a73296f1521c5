"""`modelwarmup warm-cache`: parse, run the warm-up, report success or failure with its exit code."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from modelwarmup import errors
from modelwarmup.contracts import wiring
from modelwarmup.contracts.summary import WorkerSummary
from modelwarmup.worker import options, report

# huggingface_hub reads these at import time; the worker sets them before it imports it.
HUB_ENV_DEFAULTS = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_XET": "1",  # our resume and checksum path is plain HTTP
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",  # only the token we are given, never ~/.cache's
}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "warm-cache",
        help="download a Hugging Face model and pre-compile its torch graphs into a cache",
        description="Modelled on `max warm-cache`; see docs/cli.md for every option.",
    )
    options.add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from modelwarmup.compilation import recipe

    recipe.pin_environment()  # before torch is imported, as serving processes do
    report.configure_logging()
    for name, value in HUB_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if not os.isatty(2):
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    termination_log = Path(args.termination_log or wiring.TERMINATION_LOG)
    try:
        from modelwarmup.worker import request as request_module

        request = request_module.build_request(args)
        termination_log = request.termination_log or termination_log
        os.environ["HF_HOME"] = str(request.cache_dir / "hf")
        from modelwarmup.worker import warm

        summary = warm.warm_cache(request, os.environ)
    except errors.ModelWarmupError as error:
        failure = WorkerSummary(ok=False, reason=error.reason, message=str(error), permanent=error.permanent)
        report.write_summary(failure, termination_log)
        raise
    except Exception as error:  # a bug or an environment problem: still tell the operator (exit 1, retried)
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        failure = WorkerSummary(
            ok=False, reason=errors.ModelWarmupError.reason, message=f"{type(error).__name__}: {first_line}"
        )
        report.write_summary(failure, termination_log)
        raise
    report.write_summary(summary, termination_log)
    return errors.EXIT_OK
