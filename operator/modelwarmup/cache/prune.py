"""`modelwarmup prune`: delete compiled entries a newer warm-up superseded (retention policy).

Only compiled entries go (``compiled/<model-key>/``, and rehearsed ones, ``rehearsed/<key>/``),
and only those of the named repository whose key is not in the keep list (a rehearsed one kept as
``rehearsed/<key>``); the Hugging Face cache is shared between entries and left alone. An entry
is first renamed to a hidden name, so a reader never sees half of it, then
deleted. Refs pointing at a deleted entry are removed too. A model key whose entry a worker is
building right now (its builder lock held) is left for the next prune.

Every prune also collects what killed workers left behind (:mod:`.housekeeping`): partial
downloads, staging folders and temporary files older than ``--stale-after``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

from modelwarmup import errors
from modelwarmup.cache import housekeeping, layout
from modelwarmup.cache.layout import CacheLayout

REHEARSED = "rehearsed/"  # a kept key naming a rehearsed entry: rehearsed/<key>, as in status.modelKey


def superseded(cache: CacheLayout, repo: str, keep: set[str]) -> list[Path]:
    """Model-key directories of ``repo`` whose key is not kept."""
    if not cache.compiled.is_dir():
        return []
    found = []
    for model_dir in sorted(cache.compiled.iterdir()):
        if model_dir.name.startswith(".") or model_dir.name in keep or not model_dir.is_dir():
            continue
        manifests = [layout.read_manifest(entry) for entry in model_dir.iterdir() if entry.is_dir()]
        if any(m is not None and m["repo"] == repo for m in manifests):
            found.append(model_dir)
    return found


def superseded_rehearsals(cache: CacheLayout, repo: str, keep: set[str]) -> list[Path]:
    """Rehearsed entries of ``repo`` (``rehearsed/<key>``) whose key is not kept."""
    if not cache.rehearsed.is_dir():
        return []
    return [
        entry
        for entry in sorted(cache.rehearsed.iterdir())
        if not entry.name.startswith(".")
        and entry.is_dir()
        and f"{REHEARSED}{entry.name}" not in keep
        and (found := layout.read_rehearsal(entry)) is not None
        and found["repo"] == repo
    ]


def _platforms(model_dir: Path) -> set[str]:
    """The platform keys with an entry or a staging folder under a model key."""
    return {p.name.lstrip(".").split(".")[0] for p in model_dir.iterdir() if p.is_dir()}


def prune(cache: CacheLayout, repo: str, keep: set[str]) -> tuple[list[str], list[str]]:
    """Delete superseded entries of ``repo``; returns the keys removed and those left because a
    worker or a rehearsal holds one of their locks."""
    candidates = [
        (
            model_dir,
            model_dir.name,
            [cache.lock_file(model_dir.name, p) for p in sorted(_platforms(model_dir))],
        )
        for model_dir in superseded(cache, repo, keep)
    ] + [
        (entry, f"{REHEARSED}{entry.name}", [cache.rehearsal_lock(entry.name)])
        for entry in superseded_rehearsals(cache, repo, keep)
    ]
    removed, busy = [], []
    for folder, key, locks in candidates:
        with contextlib.ExitStack() as stack:
            if not all(stack.enter_context(housekeeping.lock_if_free(lock)) for lock in locks):
                busy.append(key)
                continue
            hidden = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.stale")
            os.replace(folder, hidden)
        shutil.rmtree(hidden, ignore_errors=True)
        removed.append(key)
    refs = cache.root / "refs"
    if removed and refs.is_dir():
        for ref in refs.glob("*.json"):
            if ref.read_text().split("/")[0] in removed:
                ref.unlink(missing_ok=True)
    return removed, busy


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "prune", help="delete compiled entries of a model that newer warm-ups superseded"
    )
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--model-path", required=True, help="the repo id whose old entries go")
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        help="a model key, or rehearsed/<key>, still in use (repeatable)",
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=housekeeping.DEFAULT_STALE_AFTER_S,
        help="seconds after which a killed worker's partial download, staging folder or temporary file goes",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.stale_after < 0:
        raise errors.InvalidOptionError(f"--stale-after {args.stale_after}: must be 0 or more seconds")
    cache = CacheLayout(args.cache_dir)
    removed, busy = prune(cache, args.model_path, set(args.keep))
    collected = housekeeping.collect(cache, older_than_s=args.stale_after)
    print(
        json.dumps(
            {"ok": True, "removed": removed, "busy": busy, "kept": sorted(args.keep), "collected": collected}
        )
    )
    return 0
