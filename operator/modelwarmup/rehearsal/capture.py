"""The engine cache path: made empty before the server writes to it, copied out after, restored in.

The folder is cleared before each start, so what is captured is exactly what this server wrote;
but only a folder modelwarmup made (it holds :data:`MARKER`) is ever cleared: pointing
``--engine-cache-path`` at someone's data is an error, never a deletion.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from modelwarmup import errors
from modelwarmup.contracts.checksums import LOCKS

MARKER = ".modelwarmup-engine-cache"


def prepare(path: Path) -> None:
    """Make ``path`` an empty engine cache folder of ours (created if missing)."""
    if path.exists() and not path.is_dir():
        raise errors.InvalidOptionError(f"--engine-cache-path {path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise errors.InvalidOptionError(
                f"--engine-cache-path {path}: not empty and not made by modelwarmup; "
                "give an empty or new folder (nothing in it is deleted)"
            )
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text(
        "made by modelwarmup rehearse/restore: cleared at each start\n", encoding="utf-8"
    )


def files(path: Path) -> set[str]:
    """Relative paths of the regular files a server wrote (lock files and our marker left out)."""
    found = set()
    for current, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if d != LOCKS]
        for name in names:
            full = Path(current, name)
            if name == MARKER or name.endswith(".lock") or full.is_symlink() or not full.is_file():
                continue
            found.add(str(full.relative_to(path)))
    return found


def copy_files(source: Path, destination: Path) -> int:
    """Copy the files a server wrote under ``source`` into ``destination``; returns the bytes."""
    destination.mkdir(parents=True, exist_ok=True)
    copied = 0
    for relative in sorted(files(source)):
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, target)
        copied += target.stat().st_size
    return copied


def restore_into(captured: Path, path: Path) -> int:
    """Restore captured caches into a fresh engine cache folder; returns the bytes copied."""
    prepare(path)
    return copy_files(captured, path)
