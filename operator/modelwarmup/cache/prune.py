"""`modelwarmup prune`: delete compiled entries a newer warm-up superseded (retention policy).

Only compiled entries go (``compiled/<model-key>/``), and only those of the named repository
whose model key is not in the keep list; the Hugging Face cache is shared between entries and
left alone. An entry is first renamed to a hidden name, so a reader never sees half of it, then
deleted. Refs pointing at a deleted entry are removed too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import uuid
from pathlib import Path

from modelwarmup.cache import layout
from modelwarmup.cache.layout import CacheLayout


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


def prune(cache: CacheLayout, repo: str, keep: set[str]) -> list[str]:
    """Delete superseded entries of ``repo``; returns the model keys removed."""
    removed = []
    for model_dir in superseded(cache, repo, keep):
        hidden = model_dir.with_name(f".{model_dir.name}.{uuid.uuid4().hex[:8]}.stale")
        os.replace(model_dir, hidden)
        shutil.rmtree(hidden, ignore_errors=True)
        removed.append(model_dir.name)
    refs = cache.root / "refs"
    if removed and refs.is_dir():
        for ref in refs.glob("*.json"):
            if ref.read_text().split("/")[0] in removed:
                ref.unlink(missing_ok=True)
    return removed


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "prune", help="delete compiled entries of a model that newer warm-ups superseded"
    )
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--model-path", required=True, help="the repo id whose old entries go")
    parser.add_argument("--keep", action="append", default=[], help="a model key still in use (repeatable)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    removed = prune(CacheLayout(args.cache_dir), args.model_path, set(args.keep))
    print(json.dumps({"ok": True, "removed": removed, "kept": sorted(args.keep)}))
    return 0
