"""What killed or interrupted workers leave on the volume, collected once it is old enough.

A worker killed mid-download leaves ``blobs/*.incomplete``; one killed mid-build a staging folder
(``compiled/<model-key>/.<platform>.<id>.tmp``) or a half-removed one (``.stale``); one killed
inside an atomic write a ``.<name>.<pid>.<id>.tmp`` beside the file. A live worker may still be
using any of them, so each is removed only when it is older than the threshold *and* its lock is
free (the blob's lock that huggingface_hub and the worker take, the entry's builder lock): the
same locks builds hold, taken without waiting; a busy one is left for the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from modelwarmup.cache import layout
from modelwarmup.cache.layout import CacheLayout

DEFAULT_STALE_AFTER_S = 24 * 3600.0


@contextlib.contextmanager
def lock_if_free(path: Path) -> Iterator[bool]:
    """Hold ``path``'s flock if nobody does (True), else yield False at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _old(path: Path, now: float, older_than_s: float) -> bool:
    try:
        return now - path.lstat().st_mtime >= older_than_s
    except FileNotFoundError:
        return False


def collect(cache: CacheLayout, *, older_than_s: float = DEFAULT_STALE_AFTER_S) -> list[str]:
    """Remove stale leftovers; returns their paths relative to the cache root."""
    now, removed = time.time(), []
    for partial in sorted(cache.hub_cache.glob("models--*/blobs/*.incomplete")):
        blob = partial.with_name(partial.name.removesuffix(".incomplete"))
        if _old(partial, now, older_than_s):
            with lock_if_free(layout.blob_lock_file(blob)) as free:
                if free:
                    partial.unlink(missing_ok=True)
                    removed.append(partial)
    for leftover in sorted(cache.compiled.glob("*/.*")) if cache.compiled.is_dir() else []:
        name = leftover.name  # .<platform>.<id>.tmp or .<entry>.<id>.stale
        if not name.endswith((".tmp", ".stale")) or not _old(leftover, now, older_than_s):
            continue
        platform = name[1:].split(".")[0]
        with lock_if_free(cache.lock_file(leftover.parent.name, platform)) as free:
            if free:
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
    for hidden in sorted(cache.compiled.glob(".*.stale")) if cache.compiled.is_dir() else []:
        if _old(hidden, now, older_than_s):  # renamed away by a prune that was killed while deleting
            shutil.rmtree(hidden, ignore_errors=True)
            removed.append(hidden)
    for temporary in sorted(
        p for folder in (cache.root / "refs", cache.hub_cache) for p in _atomic_temporaries(folder)
    ):
        if _old(temporary, now, older_than_s):  # a live writer renames its file within moments
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return [p.relative_to(cache.root).as_posix() for p in removed]


def _atomic_temporaries(folder: Path) -> Iterator[Path]:
    """``.<name>.<pid>.<id>.tmp`` files of :func:`layout.write_text_atomic` / ``write_json_atomic``."""
    if folder.is_dir():
        yield from (p for p in folder.rglob(".*.tmp") if p.is_file() and not p.is_symlink())
