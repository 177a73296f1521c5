"""The entry manifest: what a published cache entry says about itself, versioned.

The worker writes ``manifest.json`` last into an entry, and its presence is what makes the entry
complete (see :mod:`modelwarmup.cache.layout`). ``prune``, ``verify`` and the serving runtime read
it. It is a documented ``TypedDict`` rather than a pydantic model on purpose: the serving runtime
reads it in other people's images, with nothing but the standard library to rely on.

A manifest of another ``manifest_version``, or one lacking a required field, is no manifest: the
entry is treated as absent and built again, never half-understood.
"""

from __future__ import annotations

from typing import Any, Final, TypedDict, cast

from modelwarmup.contracts.checksums import Checksums

MANIFEST_VERSION: Final = 3  # 2: "cache_key" became "entry_key"; 3: checksums and sizes of every file
DOWNLOAD_ONLY_PLATFORM: Final = "portable"  # the platform key of an entry with weights only


class RepoRecord(TypedDict):
    """One repository the entry was built from: the model, its draft model or a LoRA adapter."""

    role: str  # "model", "draft" or "lora"
    repo: str
    revision: str  # as asked for
    commit: str  # what it resolved to
    weight_commit: str
    files: dict[str, str]  # path -> sha256 (weights) or git blob id
    sizes: dict[str, int]  # path -> bytes


class Artifacts(TypedDict):
    """Paths relative to the entry; None where the entry has no such artifact."""

    inductor: str
    megacache: str
    aoti: str | None
    chat_template: str | None


class Timings(TypedDict):
    download_seconds: float
    compile_seconds: float


class EntryManifest(TypedDict):
    manifest_version: int
    worker_version: str
    created_at: str  # RFC 3339
    entry_key: str  # <model_key>/<platform_key>
    model_key: str
    platform_key: str
    repo: str
    revision: str
    commit: str
    weight_commit: str
    repos: list[RepoRecord]
    hf_home: str  # relative to the cache root
    platform: dict[str, str]  # the fingerprint the entry was built for; {} when download-only
    compile: dict[str, Any] | None  # the compile settings, None when download-only
    compile_report: dict[str, Any] | None
    artifacts: Artifacts
    checksums: Checksums  # every file of the entry (relative to it): [size, sha256]
    bytes: int
    weights_bytes: int
    artifacts_bytes: int
    timings: Timings
    served_model_name: str | None
    server_options: dict[str, Any]  # recorded for the server, never part of a key


_TEXT_FIELDS: Final = ("entry_key", "model_key", "platform_key", "repo", "commit")


def parse(data: Any) -> EntryManifest | None:
    """``data`` as a manifest of this version, or None when it is not one."""
    if not isinstance(data, dict) or data.get("manifest_version") != MANIFEST_VERSION:
        return None
    if not EntryManifest.__required_keys__ <= data.keys():
        return None
    if not all(isinstance(data[name], str) and data[name] for name in _TEXT_FIELDS):
        return None
    if not isinstance(data["platform"], dict) or not isinstance(data["repos"], list):
        return None
    if not isinstance(data["checksums"], dict):
        return None
    return cast(EntryManifest, data)
