"""Copies of modelwarmup's own modules for processes in images we do not control.

A serving image has no modelwarmup installed. An init container of ours copies the few parts a
process there needs onto an emptyDir it shares with the server: the runtime loader
(:data:`modelwarmup.runtime.autoload.RUNTIME_PARTS`) or the rehearsal's launcher
(:data:`modelwarmup.worker.rehearse.LAUNCHER_PARTS`). Each part is a module or a subpackage of
``modelwarmup``; the copy holds no bytecode (the image's Python may be another version).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path


def copy_parts(parts: Iterable[str], target: Path) -> Path:
    """Copy these parts of the installed ``modelwarmup`` into ``target/modelwarmup``; return it."""
    import modelwarmup

    source = Path(modelwarmup.__file__).parent
    package = target / "modelwarmup"
    package.mkdir(parents=True, exist_ok=True)
    for part in parts:
        if (source / part).is_dir():
            shutil.copytree(
                source / part,
                package / part,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        else:
            shutil.copy2(source / part, package / part)
    return package
