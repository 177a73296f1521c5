"""Cache keys: what makes a compiled entry valid, reduced to short, stable digests.

The model key covers everything about the *input* that changes compiled code: the resolved
commit(s), the digest of every file that was selected (weights by sha256), and every compile
setting. The platform key (see :mod:`modelwarmup.compilation.platform`) covers the machine and
software that run it. Same inputs give the same key; any input that changes the compiled code
gives a new one. Inputs are serialised as canonical JSON before hashing so that dict order,
whitespace or float formatting can never move a key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

KEY_LENGTH = 16


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def digest(value: Any, length: int = KEY_LENGTH) -> str:
    """A short hex digest of a value's canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def repo_slug(repo: str) -> str:
    """The readable start of a repo's model keys (``org/Name`` -> ``org--name``)."""
    return repo.replace("/", "--").lower()[:48]


def model_key(*, repo: str, inputs: dict[str, Any]) -> str:
    """``<repo-slug>-<digest>``: readable in a directory listing, unique by content."""
    return f"{repo_slug(repo)}-{digest({'repo': repo, **inputs})}"
