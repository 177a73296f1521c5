"""The worker's summary: what one warm-up run tells the operator, and how it fits 4 KiB.

The worker prints it on stdout and writes it to the container's termination-message file; the
operator reads it back from the Pod (``state.terminated.message``), where the kubelet keeps at
most 4096 bytes. :meth:`WorkerSummary.termination_message` always returns valid JSON within that
limit, and gives up the optional parts first (the platform fingerprint, then the message's tail),
never what the operator decides on: ``ok``, ``reason``, ``permanent``, ``cache_hit``, the keys
and the commit.
"""

from __future__ import annotations

import json
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

TERMINATION_MESSAGE_LIMIT: Final = 4096  # bytes the kubelet keeps of a termination message
_MIN_MESSAGE = 16  # characters of the message kept in any case


class WorkerSummary(BaseModel):
    """One warm-up run's outcome. Failures carry only ``ok``, ``reason``, ``message``, ``permanent``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    ok: bool
    reason: str
    """CamelCase, as a status condition's reason: Warmed, CacheHit, or the error's reason."""
    message: str = ""
    permanent: bool = False
    """A failure that retrying cannot fix (the Job's podFailurePolicy acts on the exit code)."""
    cache_hit: bool = False
    """The entry was complete before this run: nothing was downloaded or compiled."""
    entry_key: str | None = None
    """``<model-key>/<platform-key>``: where the entry lives under ``compiled/``."""
    model_key: str | None = None
    platform_key: str | None = None
    commit: str | None = None
    """The commit the model's revision resolved to."""
    pins: tuple[str, ...] = ()
    """``REPO@REVISION=COMMIT`` for the model, draft and adapters (``--resolve-only``): what the
    operator passes to every target's warm-up as ``--pin``."""
    bytes: int | None = Field(default=None, ge=0)
    platform: dict[str, str] = Field(default_factory=dict)
    """The fingerprint the entry was built for (dropped first when the summary is too long)."""
    download_seconds: float | None = None
    compile_seconds: float | None = None
    resumed_bytes: int | None = None
    seconds: float | None = None
    truncated: bool = False
    """Set when :meth:`termination_message` had to leave something out."""

    def to_json(self) -> str:
        data = self.model_dump(mode="json", exclude_defaults=True)
        # What the operator decides on is always spelled out, defaults too.
        data.update(ok=self.ok, reason=self.reason, message=self.message, permanent=self.permanent)
        if self.ok:
            data["cache_hit"] = self.cache_hit
        return json.dumps(data, sort_keys=True)

    def termination_message(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """The summary as JSON of at most ``limit`` UTF-8 bytes, always parseable."""
        text = self.to_json()
        if len(text.encode()) <= limit:
            return text
        shorter = self.model_copy(update={"platform": {}, "truncated": True})
        message = self.message
        while True:
            text = shorter.model_copy(update={"message": message}).to_json()
            overflow = len(text.encode()) - limit
            if overflow <= 0 or len(message) <= _MIN_MESSAGE:
                return text
            # Escaping can make a character several bytes long: cut at least the overflow.
            message = message[: max(_MIN_MESSAGE, len(message) - overflow - 1)]

    @classmethod
    def parse(cls, text: str) -> WorkerSummary | None:
        """The summary in a termination message, or None when the message is something else
        (the log tail the kubelet falls back to when the worker died before writing it)."""
        try:
            return cls.model_validate_json(text)
        except (ValidationError, ValueError):
            return None
