"""What an entry's files must be: their sizes and sha256, recorded by the worker, checked by
``verify``, the serving loader and a worker that reuses an entry.

A shared volume goes bad in ways no lock prevents (a node dying mid-write on NFS, a flipped bit,
a hand edit); a corrupted kernel ``.so`` crashes the serving process inside its first compiled
call. So every file of an entry is recorded at publish time, and one function compares a tree
with the record. Standard library only: the serving runtime runs it in other people's images.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final

# Relative path -> [size in bytes, sha256 hex]. A list, not a tuple: it is JSON in the manifest.
Checksums = dict[str, list[int | str]]
MANIFEST: Final = "manifest.json"  # written after the record
LOCKS: Final = "locks"  # Inductor's lock files, wherever its cache folder is: never loaded
_CHUNK: Final = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_id(path: Path) -> str:
    """The git object id of a file's content, as the hub reports for non-LFS files."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hub_digest(path: Path, expected: str) -> str:
    """The file's digest in the hub's terms: sha256 for an LFS file (64 hex), else its git blob id."""
    return sha256_of(path) if len(expected) == 64 else git_blob_id(path)


def _files(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            relative = path.relative_to(root).as_posix()
            if (
                path.is_symlink()
                or not path.is_file()
                or relative == MANIFEST
                or LOCKS in relative.split("/")[:-1]
            ):
                continue
            found[relative] = path
    return found


def record(root: Path) -> Checksums:
    """The size and sha256 of every regular file under ``root``."""
    return {rel: [path.stat().st_size, sha256_of(path)] for rel, path in sorted(_files(root).items())}


def problems(root: Path, expected: Checksums, *, contents: bool = True, extras: bool = True) -> list[str]:
    """How the files under ``root`` differ from ``expected``: a missing file, another size, other
    content (with ``contents``: sizes first, then digests), a file nobody recorded (``extras``:
    Inductor would load an unrecorded kernel as readily as a recorded one). Empty when they match."""
    found = _files(root)
    issues: list[str] = []
    for rel, (size, _) in sorted(expected.items()):
        path = found.get(rel)
        if path is None:
            issues.append(f"{rel}: missing")
        elif path.stat().st_size != size:
            issues.append(f"{rel}: {path.stat().st_size} bytes, recorded {size}")
    if contents and not issues:
        issues += [
            f"{rel}: content differs from its recorded sha256"
            for rel, (_, sha256) in sorted(expected.items())
            if sha256_of(found[rel]) != sha256
        ]
    if extras:
        issues += [f"{rel}: not recorded in the manifest" for rel in sorted(set(found) - set(expected))]
    return issues
