"""The one digest function: canonical JSON, then sha256, shortened.

Keys and names derived from content (model keys, platform keys, warm-up keys, Job name
suffixes) all go through :func:`digest`, so dict order, whitespace or float formatting can never
move one of them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

KEY_LENGTH: Final = 16


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def digest(value: Any, length: int = KEY_LENGTH) -> str:
    """A short hex digest of a value's canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]
