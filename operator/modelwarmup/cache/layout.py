"""Where things live in a modelwarmup cache volume, and how an entry becomes complete.

    <cache>/hf/                         the Hugging Face cache (HF_HOME), shared by every entry
    <cache>/compiled/<model>/<platform>/ one complete entry: artifacts plus manifest.json
    <cache>/compiled/<model>/.<platform>.<random>.tmp/  an entry being built
    <cache>/locks/<model>.<platform>.lock                one builder per entry at a time
    <cache>/rehearsed/<key>/            what a serving engine compiled in a rehearsal, and its manifest

An entry is complete when, and only when, its ``manifest.json`` exists: the builder writes the
artifacts into a temporary directory on the same volume, fsyncs them, renames the directory into
place and writes the manifest last (itself through a temporary file and a rename). A reader that
finds no manifest treats the entry as absent, whatever else lies there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from modelwarmup import errors
from modelwarmup.contracts import manifest, rehearsal
from modelwarmup.contracts.manifest import EntryManifest
from modelwarmup.contracts.rehearsal import RehearsalManifest

MANIFEST = "manifest.json"
REHEARSAL_LOCK_GROUP = "rehearsal"  # rehearsals lock locks/rehearsal.<key>.lock
# An entry's artifacts (the manifest's "artifacts" names them too).
INDUCTOR_DIRNAME = "inductor"  # an Inductor cache folder (FX graphs, kernels, Triton on GPU)
MEGACACHE_FILENAME = "megacache.bin"  # torch's Mega-Cache
AOTI_RELPATH = Path("aoti") / "model.pt2"  # an AOTInductor package
CHAT_TEMPLATE_FILENAME = "chat_template.jinja"
ISA_CHECKS_FILENAME = "isa_checks.json"  # Inductor's vector-ISA check answers (compilation.isa_checks)


@dataclass(frozen=True)
class CacheLayout:
    """Paths inside one cache volume (or its subPath)."""

    root: Path

    @property
    def hf_home(self) -> Path:
        return self.root / "hf"

    @property
    def hub_cache(self) -> Path:
        return self.hf_home / "hub"

    @property
    def compiled(self) -> Path:
        return self.root / "compiled"

    @property
    def rehearsed(self) -> Path:
        return self.root / "rehearsed"

    def rehearsal_entry(self, key: str) -> Path:
        return self.rehearsed / key

    def repo_dir(self, repo: str) -> Path:
        """A repository's folder in the HF cache, as huggingface_hub names it."""
        return self.hub_cache / ("models--" + repo.replace("/", "--"))

    def snapshot_dir(self, repo: str, commit: str) -> Path:
        """Where the downloaded files of a commit are linked in the HF cache."""
        return self.repo_dir(repo) / "snapshots" / commit

    def entry(self, model_key: str, platform_key: str) -> Path:
        return self.compiled / model_key / platform_key

    def manifest(self, model_key: str, platform_key: str) -> Path:
        return self.entry(model_key, platform_key) / MANIFEST

    def rehearsal_lock(self, key: str) -> Path:
        """The lock a rehearsal of ``key`` holds while it runs and publishes."""
        return self.lock_file(REHEARSAL_LOCK_GROUP, key)

    def lock_file(self, model_key: str, platform_key: str) -> Path:
        return self.root / "locks" / f"{model_key}.{platform_key}.lock"

    def entries_of(self, model_key: str) -> list[Path]:
        """Complete entries of a model, one per platform warmed."""
        base = self.compiled / model_key
        if not base.is_dir():
            return []
        return sorted(p for p in base.iterdir() if read_manifest(p) is not None)


def blob_lock_file(blob: Path) -> Path:
    """The lock huggingface_hub (and the worker) take for one blob of the HF cache."""
    repo_dir = blob.parent.parent
    return repo_dir.parent / ".locks" / repo_dir.name / f"{blob.name}.lock"


def _manifest_data(entry: Path) -> object:
    try:
        return json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except json.JSONDecodeError:
        return None  # cannot happen with our atomic writes; a hand-made file is not trusted


def read_manifest(entry: Path) -> EntryManifest | None:
    """The entry's manifest, or None when the entry is absent, incomplete or of another version."""
    return manifest.parse(_manifest_data(entry))


def read_rehearsal(entry: Path) -> RehearsalManifest | None:
    """A rehearsed entry's manifest (``rehearsed/<key>/``), or None as :func:`read_manifest`."""
    return rehearsal.parse(_manifest_data(entry))


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), reverse=True):
        flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
        if path.is_symlink():
            continue
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Mapping[str, object]) -> None:
    """Write JSON so that a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2, sort_keys=True)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a small text file so that a reader sees the old content or the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


@contextlib.contextmanager
def staging_dir(layout: CacheLayout, model_key: str, platform_key: str) -> Iterator[Path]:
    """A fresh temporary directory beside the entry, removed unless it was published."""
    with staging_beside(layout.entry(model_key, platform_key)) as staging:
        yield staging


@contextlib.contextmanager
def staging_beside(entry: Path) -> Iterator[Path]:
    """A fresh temporary directory beside ``entry`` (same volume: the rename is atomic)."""
    parent = entry.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{entry.name}.{uuid.uuid4().hex[:12]}.tmp"
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, entry: Path, built: Mapping[str, object]) -> None:
    """Move a fully built staging directory into place, then write its manifest last."""
    (staging / MANIFEST).unlink(missing_ok=True)
    _fsync_tree(staging)
    if entry.exists():
        # An incomplete leftover (no manifest) of a killed builder: move it aside, then delete.
        graveyard = entry.with_name(f".{entry.name}.{uuid.uuid4().hex[:12]}.stale")
        os.replace(entry, graveyard)
        shutil.rmtree(graveyard, ignore_errors=True)
    os.replace(staging, entry)
    _fsync_dir(entry.parent)
    write_json_atomic(entry / MANIFEST, built)


def remove_stale_staging(
    layout: CacheLayout, model_key: str, platform_key: str, older_than_s: float = 0.0
) -> int:
    """Delete staging directories that killed builders of this entry left behind; returns how many.

    Call it holding the entry's lock: then no live builder of this entry can own one of them.
    """
    parent = layout.compiled / model_key
    if not parent.is_dir():
        return 0
    removed = 0
    now = time.time()
    for path in parent.iterdir():
        leftover = path.name.startswith(f".{platform_key}.") and path.name.endswith((".tmp", ".stale"))
        if leftover and now - path.stat().st_mtime >= older_than_s:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


@contextlib.contextmanager
def entry_lock(layout: CacheLayout, model_key: str, platform_key: str, *, timeout_s: float) -> Iterator[None]:
    """Hold the entry's builder lock (flock: released by the kernel if the holder dies)."""
    path = layout.lock_file(model_key, platform_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with path.open("a+") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise errors.CacheLockTimeout(
                        f"another worker is building this entry ({path.name}); retry later"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def tree_size(path: Path) -> int:
    """Bytes of the regular files under a path."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
