"""The manifest of a rehearsed entry: what a serving engine compiled in a rehearsal, versioned.

``modelwarmup rehearse`` writes ``manifest.json`` last into ``<cache>/rehearsed/<key>/``, beside
``caches/`` (the engine cache path's files as the server left them) and ``server.log`` (the tail of
the server's log, for evidence). ``modelwarmup restore`` and the operator read it, the first in
serving images with nothing but the standard library: hence a ``TypedDict``, as the compile entry's
manifest (:mod:`modelwarmup.contracts.manifest`).
"""

from __future__ import annotations

from typing import Any, Final, TypedDict, cast

from modelwarmup.contracts.checksums import Checksums

REHEARSAL_MANIFEST_VERSION: Final = 1
CAPTURED_DIRNAME: Final = "caches"
SERVER_LOG_FILENAME: Final = "server.log"


class Verification(TypedDict):
    """The second start, from the captured caches restored as a serving pod restores them."""

    ran: bool
    new_files: list[str]  # compiled files the verification start still wrote (a few named)
    evidence: list[str]  # log lines of the engine that show a cache miss
    engine_init_seconds: float | None
    ready_seconds: float | None


class RehearsalManifest(TypedDict):
    manifest_version: int
    worker_version: str
    created_at: str  # RFC 3339
    key: str  # <repo-slug>-<digest>: the folder under rehearsed/
    key_inputs: dict[str, Any]  # what the key was computed from (no secrets: see engines.compile_env)
    repo: str
    commit: str
    model_key: str  # the download entry's model key
    image: str | None
    image_digest: str | None
    command: list[str]
    engine_cache_path: str  # where the server wrote, and where serving pods restore
    env: dict[str, str]  # what a serving process sets to use the entry
    platform: dict[str, str]
    captured_bytes: int
    captured_files: int
    checksums: Checksums  # of every file under caches/
    timings: dict[str, float]
    engine_init_seconds: float | None  # the rehearsal's own (cold) start, from the engine's log
    verification: Verification


def parse(data: Any) -> RehearsalManifest | None:
    """``data`` as a rehearsal manifest of this version, or None when it is not one."""
    if not isinstance(data, dict) or data.get("manifest_version") != REHEARSAL_MANIFEST_VERSION:
        return None
    if not RehearsalManifest.__required_keys__ <= data.keys():
        return None
    if not all(isinstance(data[name], str) and data[name] for name in ("key", "engine_cache_path")):
        return None
    if not isinstance(data["env"], dict) or not isinstance(data["checksums"], dict):
        return None
    return cast(RehearsalManifest, data)
