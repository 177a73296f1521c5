"""Repositories, commits and file metadata for the local hub (see ``tests.devkit.hub``).

This is the data model only, no HTTP. It mirrors what the Hugging Face Hub reports about a repo:

* each ``add_commit`` snapshots a directory's file list into a new commit whose 40-hex sha is a
  sha1 over the parent sha and the sorted (path, git object id) pairs, so the same inputs always
  give the same sha;
* a file is stored "in LFS" when its extension is one the Hub's default ``.gitattributes`` sends
  to LFS (weights, archives, ...) or when it is at least ``lfs_threshold`` bytes. Its git object id
  is then the sha1 of the LFS pointer file, and its ETag is the sha256 of the content; a regular
  file's git object id and ETag are the git blob sha1 of its content. This is what the real hub
  does and what ``huggingface_hub`` names its cache blobs after;
* revisions resolve from a branch, a tag, a full commit sha or a unique prefix of 7+ hex digits.

File contents stay on disk and are read when served: do not modify a directory after adding it,
add a new commit from another directory instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

Access = Literal["public", "gated", "private"]

# Extensions the Hub's default .gitattributes stores with LFS (subset that matters for models).
LFS_EXTENSIONS = frozenset(
    {
        ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gguf", ".gz", ".h5", ".joblib",
        ".mlmodel", ".model", ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb",
        ".pickle", ".pkl", ".pt", ".pth", ".rar", ".safetensors", ".tar", ".tflite", ".tgz",
        ".wasm", ".xz", ".zip", ".zst",
    }
)  # fmt: skip
DEFAULT_LFS_THRESHOLD = 10 * 1024 * 1024
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_HEX_PREFIX = re.compile(r"[0-9a-f]{7,40}")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class HubFile:
    """One file of one commit, with the metadata the Hub reports for it."""

    path: str  # posix path inside the repo
    source: Path  # where the bytes live on disk
    size: int
    sha256: str
    git_oid: str  # blob sha1 of the content, or of the LFS pointer for LFS files
    is_lfs: bool

    @property
    def etag(self) -> str:
        """What the Hub sends as ETag / X-Linked-Etag: sha256 for LFS files, else the blob sha1."""
        return self.sha256 if self.is_lfs else self.git_oid

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the file (to the end when ``end`` is None)."""
        with self.source.open("rb") as f:
            f.seek(start)
            return f.read(-1 if end is None else end - start)

    @classmethod
    def from_disk(cls, path: str, source: Path, lfs_threshold: int) -> HubFile:
        sha256 = hashlib.sha256()
        size = 0
        with source.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha256.update(chunk)
                size += len(chunk)
        digest = sha256.hexdigest()
        is_lfs = Path(path).suffix.lower() in LFS_EXTENSIONS or size >= lfs_threshold
        content = lfs_pointer(digest, size) if is_lfs else source.read_bytes()
        return cls(path, source, size, digest, git_blob_sha1(content), is_lfs)


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    files: Mapping[str, HubFile]
    created_at: datetime
    message: str


@dataclass
class HubRepo:
    """A model repo: its commits, branches and tags, and who may read it."""

    repo_id: str
    access: Access = "public"
    required_token: str | None = None
    default_branch: str = "main"  # the first branch a commit went to
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def add_commit(
        self,
        directory: Path,
        *,
        branch: str = "main",
        tags: Iterable[str] = (),
        message: str = "",
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
    ) -> Commit:
        """Snapshot ``directory`` as a new commit on ``branch`` (created if needed) and tag it."""
        directory = Path(directory)
        if not directory.is_dir():
            raise NotADirectoryError(directory)
        files = {
            rel: HubFile.from_disk(rel, p, lfs_threshold)
            for p in sorted(directory.rglob("*"))
            if p.is_file() and not (rel := p.relative_to(directory).as_posix()).startswith(".git/")
        }
        if not self.branches:
            self.default_branch = branch
        parent = self.branches.get(branch)
        digest = hashlib.sha1(f"parent {parent}\n".encode())
        for rel, f in sorted(files.items()):
            digest.update(f"{rel}\0{f.git_oid}\n".encode())
        created_at = _EPOCH + timedelta(seconds=len(self.commits))
        commit = Commit(
            digest.hexdigest(), parent, files, created_at, message or f"Commit {len(self.commits) + 1}"
        )
        self.commits[commit.sha] = commit
        self.branches[branch] = commit.sha
        for tag in tags:
            self.tags[tag] = commit.sha
        return commit

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch, tag, full sha or unique sha prefix points to, or None."""
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and _HEX_PREFIX.fullmatch(revision):
            matches = [s for s in self.commits if s.startswith(revision)]
            sha = matches[0] if len(matches) == 1 else None
        return self.commits.get(sha) if sha is not None else None


def tree_entries(
    commit: Commit, path: str = "", *, recursive: bool = False
) -> list[dict[str, object]] | None:
    """``/api/models/{repo}/tree/{rev}/{path}`` entries (None if ``path`` is not a folder)."""
    prefix = f"{path.strip('/')}/" if path.strip("/") else ""
    folders: set[str] = set()
    entries: list[dict[str, object]] = []
    for rel, f in sorted(commit.files.items()):
        if not rel.startswith(prefix):
            continue
        parts = rel[len(prefix) :].split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            entries.append(file_entry(f))
    if prefix and not entries and not folders:
        return None
    for folder in sorted(folders):
        oid = hashlib.sha1(f"tree {commit.sha} {folder}".encode()).hexdigest()
        entries.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
    return entries


def file_entry(f: HubFile) -> dict[str, object]:
    entry: dict[str, object] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
    if f.is_lfs:
        entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
    return entry


def model_info(repo: HubRepo, commit: Commit, *, blobs: bool) -> dict[str, object]:
    """``/api/models/{repo}[/revision/{rev}]`` body; file sizes and LFS data only when ``blobs``."""
    siblings: list[dict[str, object]] = []
    for rel, f in sorted(commit.files.items()):
        sibling: dict[str, object] = {"rfilename": rel}
        if blobs:
            sibling.update(size=f.size, blobId=f.git_oid)
            if f.is_lfs:
                sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
        siblings.append(sibling)
    first = min(c.created_at for c in repo.commits.values())
    return {
        "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
        "sha": commit.sha,
        "lastModified": _iso(commit.created_at),
        "createdAt": _iso(first),
        "private": repo.access == "private",
        "gated": "manual" if repo.access == "gated" else False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": ["transformers", "safetensors"],
        "library_name": "transformers",
        "siblings": siblings,
        "spaces": [],
        "usedStorage": sum(f.size for f in commit.files.values()),
    }


def refs(repo: HubRepo) -> dict[str, object]:
    """``/api/models/{repo}/refs`` body."""

    def ref(kind: str, name: str, sha: str) -> dict[str, str]:
        return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}

    return {
        "branches": [ref("heads", n, s) for n, s in sorted(repo.branches.items())],
        "tags": [ref("tags", n, s) for n, s in sorted(repo.tags.items())],
        "converts": [],
    }


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
