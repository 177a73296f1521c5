"""Cache keys: what makes a compiled entry valid, reduced to short, stable digests.

The model key covers everything about the *input* that changes compiled code: the resolved
commit(s), the digest of every file that was selected (weights by sha256), and every compile
setting. The platform key (see :mod:`modelwarmup.compilation.platform`) covers the machine and
software that run it. Same inputs give the same key; any input that changes the compiled code
gives a new one. Inputs go through the one digest function (:mod:`modelwarmup.contracts.digest`).
"""

from __future__ import annotations

from typing import Any

from modelwarmup.contracts import digest


def repo_slug(repo: str) -> str:
    """The readable start of a repo's model keys (``org/Name`` -> ``org--name``)."""
    return repo.replace("/", "--").lower()[:48]


def model_key(*, repo: str, inputs: dict[str, Any]) -> str:
    """``<repo-slug>-<digest>``: readable in a directory listing, unique by content."""
    return f"{repo_slug(repo)}-{digest.digest({'repo': repo, **inputs})}"
