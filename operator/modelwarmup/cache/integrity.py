"""Is a published entry still what its manifest says? Its compiled files and the weights it was
built from, checked against the manifest's record (:mod:`modelwarmup.contracts.checksums`).

Compiled artifacts are small (kernels, graphs): their sizes and sha256 are always checked. The
weights are large (15 GB for a 7B model in bf16; sha256 ran at 1.7 GB/s on this machine's CPU,
in memory, so a full check costs about 9 s of CPU plus reading 15 GB from the volume, far more
on NFS): their presence and sizes are always checked, their digests only with ``full``.
"""

from __future__ import annotations

from pathlib import Path

from modelwarmup.cache.layout import CacheLayout
from modelwarmup.contracts import checksums
from modelwarmup.contracts.manifest import EntryManifest


def entry_problems(cache: CacheLayout, entry: Path, found: EntryManifest, *, full: bool = False) -> list[str]:
    """What is wrong with ``entry`` (compiled files, then weights), each naming its file; empty
    when it is intact."""
    issues = [f"{entry.name}/{p}" for p in checksums.problems(entry, found["checksums"])]
    return issues + weight_problems(cache, found, full=full)


def weight_problems(cache: CacheLayout, found: EntryManifest, *, full: bool = False) -> list[str]:
    """Missing, resized or (with ``full``) changed files of the repositories an entry was built from."""
    issues: list[str] = []
    for record in found["repos"]:
        sizes = record.get("sizes", {})
        for rel, digest in sorted(record["files"].items()):
            commit = record["weight_commit"] if rel.endswith(".safetensors") else record["commit"]
            path = cache.snapshot_dir(record["repo"], commit) / rel
            where = f"{record['repo']}@{commit[:12]}/{rel}"
            if not path.is_file():  # a dangling link (its blob deleted) is missing too
                issues.append(f"{where}: missing")
            elif rel in sizes and path.stat().st_size != sizes[rel]:
                issues.append(f"{where}: {path.stat().st_size} bytes, recorded {sizes[rel]}")
            elif full and digest and checksums.hub_digest(path, digest) != digest:
                issues.append(f"{where}: content differs from the hub's digest")
    return issues
