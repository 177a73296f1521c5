"""Start a serving process warm from a compile entry.

A compile entry (written by :func:`modelwarmup.compilation.compiler.compile_model`) holds
``inductor/`` (an Inductor cache folder: FX graph cache, AOTAutograd cache, kernels' .so/.cpp,
Triton kernels on GPU), ``megacache.bin`` (torch's portable Mega-Cache) and, optionally,
``aoti/model.pt2`` (an AOTInductor package); :mod:`modelwarmup.cache.layout` names them.

Inductor takes file locks inside its cache folder, so a read-only volume cannot be used in place:
:func:`activate` copies it to a private writable folder first, then points Inductor there with
:func:`modelwarmup.compilation.recipe.configure_inductor`, the same switches the Job compiled with.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelwarmup.cache import layout
from modelwarmup.compilation import isa_checks, recipe
from modelwarmup.contracts import checksums
from modelwarmup.contracts.manifest import EntryManifest

if TYPE_CHECKING:
    from modelwarmup.compilation.settings import CompileSettings


class CorruptEntry(RuntimeError):
    """The entry's files differ from its manifest's record: it must not be loaded (a corrupted
    kernel crashes the process inside its first compiled call)."""


@dataclass(frozen=True)
class ActivationResult:
    """Where a serving process now compiles from, and what it found in the entry."""

    entry_dir: Path
    inductor_dir: Path
    copied_files: int
    copy_seconds: float
    megacache_loaded: bool
    megacache_artifacts: dict[str, int]
    aoti_package: Path | None
    compile_record: dict[str, Any] | None = None
    """The settings the entry was compiled with, as its manifest records them (None for a bare
    compile output, which has no manifest)."""

    @property
    def settings(self) -> CompileSettings:
        """The entry's compile settings, to hand to :func:`compile_for_serving` as they are (a
        hit needs exactly these). Needs pydantic; raises LookupError for an entry without a
        manifest or one that compiled nothing."""
        if self.compile_record is None:
            raise LookupError(f"{self.entry_dir}: no compile settings recorded (no manifest, or no compile)")
        from modelwarmup.compilation.settings import CompileSettings

        return CompileSettings.model_validate(self.compile_record)


def activate(
    entry_dir: Path, *, private_dir: Path | None = None, published: bool = False
) -> ActivationResult:
    """Copy ``entry_dir/inductor`` to a private writable folder and compile from there.

    ``private_dir`` defaults to a new folder under the temp dir. Also hot-loads
    ``megacache.bin`` when present. Call before the first torch.compile'd call. The files are
    checked against the entry's manifest first (:class:`CorruptEntry` on a mismatch); a
    ``published`` entry must have one, a bare :func:`compile_model` output has none to check.
    """
    started = time.perf_counter()
    source = entry_dir / layout.INDUCTOR_DIRNAME
    target = private_dir
    if target is None:
        target = Path(tempfile.mkdtemp(prefix="modelwarmup-inductor-"))
        atexit.register(shutil.rmtree, target, ignore_errors=True)  # the copy lives as long as we do
    copied = 0
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        copied = sum(1 for path in target.rglob("*") if path.is_file())
    # Stale locks from the Job would only make serving wait.
    shutil.rmtree(target / "locks", ignore_errors=True)
    found = _check(entry_dir, target, published=published)
    isa_checks.load([entry_dir / layout.ISA_CHECKS_FILENAME])  # before the first kernel asks for them
    inductor_dir = recipe.configure_inductor(target)
    copy_seconds = time.perf_counter() - started

    loaded, artifacts = False, {}
    megacache = entry_dir / layout.MEGACACHE_FILENAME
    if megacache.is_file():
        import torch

        info = torch.compiler.load_cache_artifacts(megacache.read_bytes())
        loaded = info is not None
        if info is not None:
            artifacts = {kind: len(keys) for kind, keys in info.artifacts.items()}
    aoti = entry_dir / layout.AOTI_RELPATH
    return ActivationResult(
        entry_dir=entry_dir,
        inductor_dir=inductor_dir,
        copied_files=copied,
        copy_seconds=round(copy_seconds, 3),
        megacache_loaded=loaded,
        megacache_artifacts=artifacts,
        aoti_package=aoti if aoti.is_file() else None,
        compile_record=dict(found["compile"]) if found is not None and found["compile"] is not None else None,
    )


def _check(entry_dir: Path, inductor_copy: Path, *, published: bool) -> EntryManifest | None:
    """The private copy and the entry's other artifacts, against the manifest: after the copy, so
    what is checked is what will be loaded. Returns the manifest (None for a bare compile output);
    raises :class:`CorruptEntry` naming the files."""
    found = layout.read_manifest(entry_dir)
    if found is None:
        if not published:
            return None  # a bare compile output: no record to hold it to
        raise CorruptEntry(f"{entry_dir}: no manifest (removed or unreadable)")
    prefix = layout.INDUCTOR_DIRNAME + "/"
    recorded = found["checksums"]
    copied = {rel[len(prefix) :]: value for rel, value in recorded.items() if rel.startswith(prefix)}
    others = {rel: value for rel, value in recorded.items() if not rel.startswith(prefix)}
    issues = [prefix + p for p in checksums.problems(inductor_copy, copied)]
    issues += checksums.problems(entry_dir, others, extras=False)
    if issues:
        shutil.rmtree(inductor_copy, ignore_errors=True)
        raise CorruptEntry(f"{entry_dir.parent.name}/{entry_dir.name}: {'; '.join(issues[:5])}")
    return found


def load_aoti(entry_dir: Path) -> Callable[..., Any] | None:
    """The AOTInductor package of an entry, loaded and callable like the model; None if absent.

    Call it as the warm-up Job exported it: ``fn(input_ids=ids)`` returns the model's output.
    Needs no C++ compiler.
    """
    package = entry_dir / layout.AOTI_RELPATH
    if not package.is_file():
        return None
    recipe.pin_environment()  # no vector-ISA probe: no C++ compiler needed
    from torch._inductor import aoti_load_package

    loaded: Callable[..., Any] = aoti_load_package(str(package))
    return loaded
