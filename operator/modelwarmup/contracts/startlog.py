"""The lines our own code writes into a serving pod's log, which the operator reads back.

In a serving pod three of our programs say whether it starts warm: the init container
(``modelwarmup verify`` or ``modelwarmup restore``) with its JSON verdict, and the runtime loader
inside the server process with a warning when it starts cold and torch's compile-cache counters
after each compilation. The operator reads the first lines of a new pod's log for them (the
``ServingWarm`` condition), so their shape is spelled here once, for writer and reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

PREFIX: Final = "modelwarmup: "
# "modelwarmup: WARNING: ...", "modelwarmup verify: WARNING: ...", "modelwarmup restore: WARNING: ..."
_WARNING: Final = re.compile(r"^modelwarmup(?: [a-z-]+)?: WARNING: (?P<message>.*)$")
_STATS_KEY: Final = "compile_cache"


def warning(message: str, tool: str = "") -> str:
    """The line a program of ours writes when the server will start cold."""
    return f"modelwarmup{' ' + tool if tool else ''}: WARNING: {message}"


def stats_line(stats: Mapping[str, int]) -> str:
    """The runtime loader's line with torch's compile-cache counters."""
    return PREFIX + json.dumps({_STATS_KEY: dict(stats)}, sort_keys=True)


def warnings(log: str) -> list[str]:
    """The messages of every cold-start warning in ``log``."""
    return [m["message"].strip()[:300] for line in log.splitlines() if (m := _WARNING.match(line.strip()))]


def compile_stats(log: str) -> list[dict[str, int]]:
    """Each compile-cache counter line of ``log``, in order."""
    found = []
    for line in log.splitlines():
        line = line.strip()
        if line.startswith(PREFIX + "{"):
            data = _json(line.removeprefix(PREFIX))
            if isinstance(data.get(_STATS_KEY), dict):
                found.append({k: int(v) for k, v in data[_STATS_KEY].items() if isinstance(v, int)})
    return found


def verdicts(log: str) -> list[dict[str, Any]]:
    """The JSON objects an init container of ours printed (verify's or restore's verdict)."""
    return [data for line in log.splitlines() if line.strip().startswith("{") and (data := _json(line))]


def _json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
