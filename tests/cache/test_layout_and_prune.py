"""Atomic entries, locks and pruning of the cache layout (no model needed)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from modelwarmup import errors
from modelwarmup.cache import housekeeping, layout, prune
from modelwarmup.cache.layout import CacheLayout
from modelwarmup.contracts import manifest
from modelwarmup.contracts.manifest import EntryManifest
from modelwarmup.contracts.rehearsal import REHEARSAL_MANIFEST_VERSION, RehearsalManifest


def entry_manifest(repo: str, model_key: str, platform_key: str) -> EntryManifest:
    """A manifest as the worker writes it, for an entry with an Inductor folder only."""
    return {
        "manifest_version": manifest.MANIFEST_VERSION,
        "worker_version": "test",
        "created_at": "2026-12-01T00:00:00+00:00",
        "entry_key": f"{model_key}/{platform_key}",
        "model_key": model_key,
        "platform_key": platform_key,
        "repo": repo,
        "revision": "main",
        "commit": "c" * 40,
        "weight_commit": "c" * 40,
        "repos": [],
        "hf_home": "hf",
        "platform": {},
        "compile": None,
        "compile_report": None,
        "artifacts": {
            "inductor": "inductor",
            "megacache": "megacache.bin",
            "aoti": None,
            "chat_template": None,
        },
        "checksums": {},
        "bytes": 100,
        "weights_bytes": 0,
        "artifacts_bytes": 100,
        "timings": {"download_seconds": 0.0, "compile_seconds": 0.0},
        "served_model_name": None,
        "server_options": {},
    }


def build(cache: CacheLayout, model_key: str, platform_key: str, repo: str = "org/m") -> Path:
    with layout.staging_dir(cache, model_key, platform_key) as staging:
        (staging / "inductor").mkdir()
        (staging / "inductor" / "kernel.so").write_bytes(b"x" * 100)
        entry = cache.entry(model_key, platform_key)
        layout.publish(staging, entry, entry_manifest(repo, model_key, platform_key))
    return entry


def test_an_entry_is_complete_only_with_its_manifest(tmp_path: Path) -> None:
    cache = CacheLayout(tmp_path)
    entry = build(cache, "m1", "p1")
    assert layout.read_manifest(entry) == entry_manifest("org/m", "m1", "p1")
    assert not list((tmp_path / "compiled" / "m1").glob(".*.tmp"))  # staging removed
    (entry / layout.MANIFEST).unlink()
    assert layout.read_manifest(entry) is None
    assert cache.entries_of("m1") == []


@pytest.mark.parametrize(
    "change",
    [{"manifest_version": 1}, {"entry_key": ""}, {"platform": None}, {"repos": {}}, {"commit": None}],
)
def test_a_manifest_of_another_version_or_shape_is_no_manifest(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    entry = build(CacheLayout(tmp_path), "m1", "p1")
    layout.write_json_atomic(entry / layout.MANIFEST, {**entry_manifest("org/m", "m1", "p1"), **change})
    assert layout.read_manifest(entry) is None
    assert CacheLayout(tmp_path).entries_of("m1") == []
    layout.write_json_atomic(
        entry / layout.MANIFEST,
        {k: v for k, v in entry_manifest("org/m", "m1", "p1").items() if k != "repos"},
    )
    assert layout.read_manifest(entry) is None


def test_publishing_over_an_incomplete_leftover_replaces_it(tmp_path: Path) -> None:
    cache = CacheLayout(tmp_path)
    leftover = cache.entry("m1", "p1")
    leftover.mkdir(parents=True)
    (leftover / "half-written").write_text("junk")
    entry = build(cache, "m1", "p1")
    assert not (entry / "half-written").exists() and (entry / "inductor" / "kernel.so").exists()


def _hold_lock(root: str, seconds: float) -> None:
    with layout.entry_lock(CacheLayout(Path(root)), "m1", "p1", timeout_s=5):
        time.sleep(seconds)


def test_the_entry_lock_excludes_another_process_and_times_out(tmp_path: Path) -> None:
    holder = multiprocessing.get_context("spawn").Process(target=_hold_lock, args=(str(tmp_path), 3.0))
    holder.start()
    lock_file = CacheLayout(tmp_path).lock_file("m1", "p1")
    deadline = time.monotonic() + 10
    while not lock_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    with (
        pytest.raises(errors.CacheLockTimeout),
        layout.entry_lock(CacheLayout(tmp_path), "m1", "p1", timeout_s=0.6),
    ):
        pass
    holder.join()
    with layout.entry_lock(CacheLayout(tmp_path), "m1", "p1", timeout_s=1):
        pass  # released when the holder exited


def test_stale_staging_of_one_platform_is_removed_and_others_kept(tmp_path: Path) -> None:
    cache = CacheLayout(tmp_path)
    parent = tmp_path / "compiled" / "m1"
    (parent / ".p1.dead.tmp").mkdir(parents=True)
    (parent / ".p2.live.tmp").mkdir()
    assert layout.remove_stale_staging(cache, "m1", "p1") == 1
    assert (parent / ".p2.live.tmp").exists()


def test_prune_removes_only_superseded_entries_of_the_repo(tmp_path: Path) -> None:
    cache = CacheLayout(tmp_path)
    build(cache, "old", "p1")
    build(cache, "new", "p1")
    build(cache, "other-model", "p1", repo="org/other")
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "a.json").write_text("old/p1")
    (tmp_path / "refs" / "b.json").write_text("new/p1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelwarmup.cli",
            "prune",
            "--cache-dir",
            str(tmp_path),
            "--model-path",
            "org/m",
            "--keep",
            "new",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "compiled").iterdir()) == ["new", "other-model"]
    assert [p.name for p in (tmp_path / "refs").iterdir()] == ["b.json"]
    assert prune.prune(cache, "org/m", {"new"}) == ([], [])


def test_prune_leaves_an_entry_a_worker_is_building(tmp_path: Path) -> None:
    """The builder holds the entry's lock: deleting its model key now would break its publish."""
    cache = CacheLayout(tmp_path)
    build(cache, "old", "p1")
    build(cache, "new", "p1")
    with layout.entry_lock(cache, "old", "p1", timeout_s=1):
        assert prune.prune(cache, "org/m", {"new"}) == ([], ["old"])
    assert prune.prune(cache, "org/m", {"new"}) == (["old"], [])


def test_housekeeping_collects_old_leftovers_of_killed_workers_and_nothing_in_use(tmp_path: Path) -> None:
    cache = CacheLayout(tmp_path)
    blobs = cache.hub_cache / "models--org--m" / "blobs"
    blobs.mkdir(parents=True)
    old_partial, new_partial, locked_partial = (blobs / f"{c * 64}.incomplete" for c in "abc")
    staging = tmp_path / "compiled" / "m1" / ".p1.0123.tmp"
    staging.mkdir(parents=True)
    temporary = tmp_path / "refs" / ".main.4242.deadbeef.tmp"
    temporary.parent.mkdir()
    for path in (old_partial, new_partial, locked_partial, temporary):
        path.write_bytes(b"x")
    day_ago = time.time() - 2 * 86400
    for path in (old_partial, locked_partial, staging, temporary):
        os.utime(path, (day_ago, day_ago))
    blob_lock = cache.hub_cache / ".locks" / "models--org--m" / f"{'c' * 64}.lock"
    with housekeeping.lock_if_free(blob_lock) as held:  # a worker downloading that blob right now
        assert held
        collected = housekeeping.collect(cache)
    assert sorted(collected) == sorted(
        p.relative_to(tmp_path).as_posix() for p in (old_partial, staging, temporary)
    )
    assert new_partial.exists() and locked_partial.exists() and not staging.exists()


def rehearsed(cache: CacheLayout, key: str, repo: str = "org/m") -> Path:
    """A rehearsed entry as ``modelwarmup rehearse`` publishes it (caches/, then the manifest)."""
    entry = cache.rehearsal_entry(key)
    with layout.staging_beside(entry) as staging:
        (staging / "caches" / "inductor").mkdir(parents=True)
        (staging / "caches" / "inductor" / "kernel.so").write_bytes(b"x" * 10)
        built: RehearsalManifest = {
            "manifest_version": REHEARSAL_MANIFEST_VERSION,
            "worker_version": "test",
            "created_at": "2026-12-02T00:00:00+00:00",
            "key": key,
            "key_inputs": {},
            "repo": repo,
            "commit": "c" * 40,
            "model_key": "download-key",
            "image": "vllm/vllm-openai:v0.32.0",
            "image_digest": None,
            "command": ["vllm", "serve"],
            "engine_cache_path": "/var/cache/modelwarmup-engine",
            "env": {},
            "platform": {},
            "captured_bytes": 10,
            "captured_files": 1,
            "checksums": {},
            "timings": {},
            "engine_init_seconds": None,
            "verification": {
                "ran": False,
                "new_files": [],
                "evidence": [],
                "engine_init_seconds": None,
                "ready_seconds": None,
            },
        }
        layout.publish(staging, entry, built)
    assert layout.read_rehearsal(entry) is not None
    return entry


def test_prune_removes_superseded_rehearsed_entries_of_the_repo_unless_a_rehearsal_holds_one(
    tmp_path: Path,
) -> None:
    cache = CacheLayout(tmp_path)
    for key in ("m-old", "m-older", "m-new"):
        rehearsed(cache, key)
    rehearsed(cache, "other-x", repo="org/other")
    build(cache, "download-key", "download")
    keep = {"rehearsed/m-new", "download-key"}  # as the operator passes them in rehearsal mode
    with layout.entry_lock(cache, layout.REHEARSAL_LOCK_GROUP, "m-older", timeout_s=1):
        assert prune.prune(cache, "org/m", keep) == (["rehearsed/m-old"], ["rehearsed/m-older"])
    assert prune.prune(cache, "org/m", keep) == (["rehearsed/m-older"], [])
    assert sorted(p.name for p in cache.rehearsed.iterdir()) == ["m-new", "other-x"]
    assert [p.name for p in cache.compiled.iterdir()] == ["download-key"]
