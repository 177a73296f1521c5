"""What the worker tells the world: one structured line per phase, and a JSON summary at the end.

The summary goes to stdout and to the Kubernetes termination-message file, from which the
operator reads it on the Pod (:mod:`modelwarmup.contracts.summary` fits it into 4 KiB). Nothing here ever holds a token: values are built from our own
data structures, which never carry one.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelwarmup import errors
from modelwarmup.contracts.summary import WorkerSummary

log = logging.getLogger("modelwarmup.worker")


class _Redacting(logging.Formatter):
    """Every line without URL credentials, whichever library logged it."""

    def format(self, record: logging.LogRecord) -> str:
        return errors.redact_credentials(super().format(record))


def configure_logging() -> None:
    """Plain lines on stderr; the phase lines are JSON already."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_Redacting("%(message)s"))
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def phase_line(phase: str, **fields: Any) -> None:
    """One structured log line for a finished phase."""
    log.info(json.dumps({"phase": phase, **fields}, sort_keys=True, default=str))


@contextmanager
def timed(phase: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Time a phase and log its line at the end; the body may add fields to the yielded dict."""
    extra: dict[str, Any] = {}
    started = time.monotonic()
    yield extra
    phase_line(phase, seconds=round(time.monotonic() - started, 3), **fields, **extra)


def write_summary(summary: WorkerSummary, termination_log: Path | None) -> None:
    """Print the summary as JSON on stdout and, within Kubernetes' limit, to the termination log."""
    summary = summary.model_copy(update={"message": errors.redact_credentials(summary.message)})
    print(summary.to_json(), flush=True)
    if termination_log is None:
        return
    try:
        termination_log.parent.mkdir(parents=True, exist_ok=True)
        termination_log.write_text(summary.termination_message(), encoding="utf-8")
    except OSError as error:  # outside a pod /dev/termination-log is usually not writable
        log.debug("termination log %s not written: %s", termination_log, error)
