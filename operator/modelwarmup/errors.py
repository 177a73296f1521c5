"""Every error modelwarmup raises on purpose, in one place, without kopf in it.

Each error knows whether it is permanent (retrying cannot help: bad input, a missing repository,
no access) or transient (network, a 5xx, a busy lock). The worker turns that into its exit code,
and the warm-up Job's ``podFailurePolicy`` fails fast on the permanent one. Each also carries a
CamelCase ``reason`` that becomes a status condition's reason. Classes inherit from the closest
built-in too, so callers can catch ``FileNotFoundError`` or ``PermissionError`` as usual.

Sections: exit codes, input, hub, cache, compile, Kubernetes API. Translating a library's own
exceptions into these stays next to the code that calls the library (``worker/hub_errors.py``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar, Final

if TYPE_CHECKING:  # the serving runtime imports this module, with only the standard library at hand
    import pydantic

# --- Exit codes ----------------------------------------------------------------------------
# Of every `modelwarmup` command. 2 is argparse's own for a bad command line.
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_PERMANENT: Final = 10
EXIT_TRANSIENT: Final = 11
PERMANENT_EXIT_CODES: Final = (EXIT_USAGE, EXIT_PERMANENT)
# `modelwarmup verify`: what the cache holds for this node (0 is a matching complete entry).
EXIT_VERIFY_MISSING: Final = 20
EXIT_VERIFY_INCOMPLETE: Final = 21
EXIT_VERIFY_OTHER_PLATFORM: Final = 22
EXIT_VERIFY_CORRUPT: Final = 23


class ModelWarmupError(Exception):
    """Base of modelwarmup's own errors; its message is safe to show (it never holds a token)."""

    exit_code: ClassVar[int] = EXIT_FAILED
    reason: ClassVar[str] = "Failed"

    @property
    def permanent(self) -> bool:
        return self.exit_code in PERMANENT_EXIT_CODES


class PermanentError(ModelWarmupError):
    """Retrying with the same input cannot succeed."""

    exit_code = EXIT_PERMANENT


class TransientError(ModelWarmupError):
    """A retry may succeed: the network, the hub or a lock was in the way."""

    exit_code = EXIT_TRANSIENT
    reason = "TransientFailure"


# --- Input ---------------------------------------------------------------------------------


class InvalidSpecError(PermanentError, ValueError):
    """A ModelWarmup's spec, or a command line, breaks a rule of the API."""

    reason = "InvalidSpec"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class InvalidOptionError(PermanentError, ValueError):
    """A warm-cache option has a value modelwarmup cannot use."""

    reason = "InvalidOption"


class WeightDtypeMismatch(PermanentError, ValueError):
    """The weights' dtype differs from the one asked for, and casting was not allowed."""

    reason = "WeightDtypeMismatch"


def describe_validation_error(error: pydantic.ValidationError, *, root: str = "spec") -> list[str]:
    """One line per problem, each naming the field by its path as the user wrote it."""
    problems = []
    for item in error.errors(include_url=False):
        path = root
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        path = path.lstrip(".")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(f"{path}: {message}")
    return problems


# --- Hub -----------------------------------------------------------------------------------


class RepositoryNotFound(PermanentError, LookupError):
    reason = "RepositoryNotFound"


class RevisionNotFound(PermanentError, LookupError):
    reason = "RevisionNotFound"


class FileNotOnHub(PermanentError, FileNotFoundError):
    reason = "FileNotFound"


class GatedRepository(PermanentError, PermissionError):
    reason = "GatedRepository"


class BadToken(PermanentError, PermissionError):
    reason = "Unauthorized"


class Forbidden(PermanentError, PermissionError):
    """The hub answered 403: the token (or none) may not read this repository or file."""

    reason = "Forbidden"


class HubUnavailable(TransientError, ConnectionError):
    reason = "HubUnavailable"


class UnsafeHubListing(PermanentError):
    """The hub (or a mirror) listed a file name that would land outside the cache folder."""

    reason = "UnsafeFileName"


_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")


def redact_credentials(text: str) -> str:
    """``scheme://user:secret@host`` becomes ``scheme://***@host``: userinfo never reaches a
    message, a log line or a status (a mirror URL given with its credentials, say)."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


class ChecksumMismatch(TransientError):
    """A downloaded file's sha256 differs from the hub's metadata; the file was removed."""

    reason = "ChecksumMismatch"


# --- Cache ---------------------------------------------------------------------------------


class InsufficientStorage(PermanentError, OSError):
    """The cache volume has not the room the warm-up needs (known before the first byte from the
    hub's sizes, or found out when a write failed with ENOSPC)."""

    reason = "InsufficientStorage"


class CacheLockTimeout(TransientError, TimeoutError):
    """Another worker held the entry's lock for longer than we were willing to wait."""

    reason = "CacheBusy"


# --- Compile -------------------------------------------------------------------------------


class CompiledOutputMismatchError(PermanentError, ArithmeticError):
    """Compiled logits differ from eager beyond tolerance: the artifacts must not be published."""

    reason = "CompiledOutputMismatch"


class CompileFailed(PermanentError, RuntimeError):
    """torch.compile (Dynamo, Inductor, export) refused this model with these settings: the same
    input fails the same way on every retry."""

    reason = "CompileFailed"


# --- Rehearsal (the serving engine run by `modelwarmup rehearse`) ---------------------------


class ServerNotFound(PermanentError, FileNotFoundError):
    """The server command does not exist in this image (or is not executable)."""

    reason = "ServerNotFound"


class ServerExited(PermanentError, ChildProcessError):
    """The server exited before it was ready, or while serving the warm-up requests."""

    reason = "ServerExited"


class ServerNotReady(PermanentError, TimeoutError):
    """The server was still not ready when the rehearsal's timeout ran out."""

    reason = "ServerNotReady"


class WarmupRequestFailed(PermanentError):
    """The ready server refused a warm-up request (its status and body say why)."""

    reason = "WarmupRequestFailed"


class ServerIgnoredSigterm(PermanentError):
    """The server did not stop within its grace period after SIGTERM and was killed: what it
    was writing may be incomplete, so nothing is published."""

    reason = "ServerIgnoredSigterm"


class NothingCaptured(PermanentError):
    """The server ran and stopped, but wrote nothing into the engine cache path: the engine
    compiles nothing, or reads its caches from a place the rehearsal does not redirect."""

    reason = "NothingCaptured"


class CaptureNotReusable(PermanentError):
    """A verification start from the captured caches compiled again: serving pods would start
    cold, so the capture is not published."""

    reason = "CaptureNotReusable"


class CorruptEntry(PermanentError):
    """A published entry's files differ from what its manifest recorded."""

    reason = "CorruptEntry"


class SchemaError(ValueError):
    """The API models produced a schema Kubernetes cannot take as structural (a build-time bug)."""


# --- Kubernetes API ------------------------------------------------------------------------


class KubeCredentialsError(PermanentError):
    """No usable credentials for the Kubernetes API: no config found, or one that logs in anonymously."""

    reason = "NoCredentials"


class KubeApiError(Exception):
    """The API server answered with an error status (the operator decides what it means)."""

    def __init__(self, status: int, reason: str, message: str, causes: tuple[str, ...] = ()) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = causes  # "field: message" of the Status's details.causes
        super().__init__(f"{status} {reason}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """Someone else changed the object first: 409, or a JSON patch whose resourceVersion
        ``test`` failed (a 422 that names no field). Recompute and try again."""
        return self.status == 409 or (self.status == 422 and not self.causes)

    @property
    def invalid(self) -> bool:
        """The API server refused what we sent (400, or 422 naming fields): retrying cannot help."""
        return self.status == 400 or (self.status == 422 and bool(self.causes))
