"""Resolve a repository to a commit and download what serving needs into the HF cache layout.

The files land in ``<cache>/hf/hub`` exactly as ``huggingface_hub`` lays them out (blobs,
snapshots, refs), so any server with ``HF_HOME=<cache>/hf`` and ``HF_HUB_OFFLINE=1`` finds them.
``hf_hub_download`` does the layout. Large (LFS) files are fetched first by
:mod:`modelwarmup.worker.resumable`, because huggingface_hub 2.x writes each attempt into a new,
uniquely named partial file and so starts from zero whenever a pod is killed and restarted.
Every file is verified: LFS files by sha256 against the hub's metadata, small files by their
git blob id; a mismatch removes the file and fails (transient: the next attempt downloads again).
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from modelwarmup import errors
from modelwarmup.api.spec import COMMIT
from modelwarmup.cache import layout
from modelwarmup.cache.layout import CacheLayout
from modelwarmup.contracts import checksums
from modelwarmup.contracts.manifest import RepoRecord
from modelwarmup.worker import hub_errors, resumable
from modelwarmup.worker.request import RepoRequest

# What a server needs besides the weights: config, tokenizer, chat template, generation config.
SERVING_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "model.safetensors.index.json",
    "adapter_config.json",
    # Mistral's own format (vLLM --tokenizer-mode/--config-format mistral): small, so always taken.
    "params.json",
    "tekken.json",
    # sentence-transformers: which modules (pooling, normalisation, dense layers) follow the model.
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
# The module folders modules.json names ("1_Pooling", "2_Dense", "3_Normalize"): without them a
# sentence-transformers or text-embeddings server computes other (CLS-pooled, unnormalised)
# vectors, silently. Their files come too, other weight formats than safetensors excepted.
SENTENCE_TRANSFORMERS_MODULE = re.compile(r"^[0-9]+_[A-Za-z]+/[^/]+$")
OTHER_WEIGHT_FORMATS = ("*.bin", "*.pt", "*.pth", "*.h5", "*.msgpack", "*.onnx", "*.ot")
SERVING_PATTERNS = ("tokenizer.model.v*",)  # Mistral's versioned SentencePiece tokenizers
# Mistral's repositories carry the weights twice: HF shards and one consolidated file.
CONSOLIDATED = "consolidated*.safetensors"
# Files downloaded at a time (snapshot_download uses 8): shards of a large model in parallel.
DOWNLOAD_WORKERS = 4
T = TypeVar("T")
log = logging.getLogger("modelwarmup.worker")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a resolved commit, with what the hub says it must hash to."""

    path: str
    size: int | None
    blob_id: str | None
    sha256: str | None  # LFS files only

    @property
    def digest(self) -> str:
        return self.sha256 or self.blob_id or ""


@dataclass(frozen=True)
class ResolvedRepo:
    """A repository pinned to commits, with the files to download from each."""

    request: RepoRequest
    commit: str
    weight_commit: str
    files: tuple[RemoteFile, ...]
    weights: tuple[RemoteFile, ...]

    def record(self) -> RepoRecord:
        """This repo as the entry's manifest records it."""
        every = (*self.files, *self.weights)
        return {
            "role": self.request.role,
            "repo": self.request.repo,
            "revision": self.request.revision,
            "commit": self.commit,
            "weight_commit": self.weight_commit,
            "files": {f.path: f.digest for f in every},
            "sizes": {f.path: f.size for f in every if f.size is not None},
        }

    def key_inputs(self) -> dict[str, Any]:
        """What of this repo goes into the model key: its commits and its files' digests (which
        fix their sizes too)."""
        record = self.record()
        return {name: record[name] for name in ("repo", "commit", "weight_commit", "files")}


@dataclass
class DownloadStats:
    files: int = 0
    bytes: int = 0
    fetched_bytes: int = 0
    resumed_bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class HubClient:
    """How to reach the hub: endpoint and token, passed explicitly (never logged)."""

    endpoint: str
    token: str | None
    layout: CacheLayout

    def api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token or False)


ATTEMPTS = 3  # a hub's passing 5xx or dropped connection is retried here, not by a new pod
RETRY_BACKOFF_S = 0.5


def retried(call: Callable[[], T], what: str) -> T:
    """``call()``, again after a transient hub error (HubUnavailable), up to :data:`ATTEMPTS`
    times with a doubling pause; the last error is raised. A pod restart (on a GPU node: a new
    schedule, maybe a new image pull) is left for what outlasts a few seconds."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except errors.HubUnavailable as error:
            if attempt == ATTEMPTS:
                raise
            pause = RETRY_BACKOFF_S * 2 ** (attempt - 1)
            log.warning(
                "%s: %s; retrying in %.1f s (attempt %d of %d)", what, error, pause, attempt + 1, ATTEMPTS
            )
            time.sleep(pause)
    raise AssertionError("unreachable")


def _listing(
    hub: HubClient, repo: str, revision: str, pinned: str | None = None
) -> tuple[str, list[RemoteFile]]:
    return retried(lambda: _listing_once(hub, repo, revision, pinned), f"listing {repo}@{pinned or revision}")


def _listing_once(
    hub: HubClient, repo: str, revision: str, pinned: str | None = None
) -> tuple[str, list[RemoteFile]]:
    """The commit ``revision`` stands for and its files; the ``pinned`` commit when given."""
    try:
        info = hub.api().model_info(repo, revision=pinned or revision, files_metadata=True)
    except Exception as error:  # mapped to our permanent/transient errors, or re-raised
        raise hub_errors.translate(error, repo=repo, revision=pinned or revision) from None
    if pinned is not None and info.sha != pinned:
        raise errors.RevisionNotFound(
            f"{repo}: the hub answered commit {info.sha} for pinned commit {pinned}"
        )
    if not re.fullmatch(COMMIT, str(info.sha)):  # joined to snapshots/ below
        raise errors.UnsafeHubListing(
            f"{repo}@{revision}: the hub answered {str(info.sha)[:80]!r} for a commit"
        )
    for sibling in info.siblings or []:
        _check_listed_name(repo, sibling.rfilename)
    files = [
        RemoteFile(
            path=s.rfilename,
            size=s.size,
            blob_id=s.blob_id,
            sha256=s.lfs.sha256 if s.lfs is not None else None,
        )
        for s in info.siblings or []
    ]
    return str(info.sha), files


def _check_listed_name(repo: str, name: str) -> None:
    """A file name from the hub's listing is joined to the snapshot folder: a hostile mirror
    listing ``../../x`` or ``/etc/x`` must not make us write outside the cache."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise errors.UnsafeHubListing(
            f"{repo}: the hub lists a file named {name!r}, which is not a plain relative path"
        )


def _weights(listing: list[RemoteFile], ignore_patterns: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    """The top-level safetensors that transformers loads. Mistral's ``consolidated*.safetensors``
    (the same weights again, in its own format) only when there are no others: taking both
    doubles the download (29 GB instead of 14.5 GB for Mistral-7B). Serving the Mistral format
    instead takes ``allowPatterns: [consolidated*.safetensors]``."""
    top = [
        f
        for f in listing
        if f.path.endswith(".safetensors") and "/" not in f.path and not _matches(f.path, ignore_patterns)
    ]
    hf_format = [f for f in top if not fnmatch.fnmatch(f.path, CONSOLIDATED)]
    return tuple(hf_format or top)


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(path, p) for p in patterns)


def resolve(request: RepoRequest, hub: HubClient) -> ResolvedRepo:
    """Pin a repository's revision(s) to commits and choose the files serving needs."""
    allow_patterns, ignore_patterns = request.allow_patterns, request.ignore_patterns
    commit, listing = _listing(hub, request.repo, request.revision, request.pinned)
    weight_commit, weight_listing = commit, listing
    if request.weight_revision and request.weight_revision not in (request.revision, commit):
        weight_commit, weight_listing = _listing(hub, request.repo, request.weight_revision)

    sentence_transformers = any(f.path == "modules.json" for f in listing)

    def wanted(path: str) -> bool:
        if _matches(path, ignore_patterns):
            return False
        if sentence_transformers and SENTENCE_TRANSFORMERS_MODULE.match(path):
            return not _matches(path, OTHER_WEIGHT_FORMATS)
        if "/" not in path and (
            path in SERVING_FILES
            or _matches(path, SERVING_PATTERNS)
            or (request.trust_remote_code and path.endswith(".py"))
        ):
            return True
        return _matches(path, allow_patterns)

    files = tuple(f for f in listing if wanted(f.path))
    if request.weight_paths:
        by_path = {f.path: f for f in weight_listing}
        missing = [p for p in request.weight_paths if p not in by_path]
        if missing:
            raise errors.FileNotOnHub(
                f"weight file(s) {', '.join(missing)} not in {request.repo}@{weight_commit[:12]}"
            )
        weights = tuple(by_path[p] for p in request.weight_paths)
    else:
        weights = _weights(weight_listing, ignore_patterns)
    if not weights:
        raise errors.FileNotOnHub(
            f"{request.repo}@{weight_commit[:12]} has no safetensors weights at its top level; "
            "modelwarmup downloads safetensors only (name other files with --weight-path)"
        )
    if request.role != "lora" and not any(f.path == "config.json" for f in files):
        raise errors.FileNotOnHub(f"{request.repo}@{commit[:12]} has no config.json")
    return ResolvedRepo(
        request=request, commit=commit, weight_commit=weight_commit, files=files, weights=weights
    )


def _verify_small_file(path: Path, remote: RemoteFile, where: str) -> None:
    if remote.blob_id and checksums.git_blob_id(path) != remote.blob_id:
        blob = path.resolve()
        blob.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        raise errors.ChecksumMismatch(
            f"{where}/{remote.path}: content does not match the hub's git blob id; removed"
        )


def bytes_to_fetch(resolved: ResolvedRepo, hub: HubClient) -> int:
    """What downloading ``resolved`` still adds to the volume, from the hub's listed sizes: a blob
    already there counts nothing, a partial one what it lacks."""
    blobs = hub.layout.repo_dir(resolved.request.repo) / "blobs"
    needed = 0
    for remote, commit in [(f, resolved.weight_commit) for f in resolved.weights] + [
        (f, resolved.commit) for f in resolved.files
    ]:
        size = remote.size or 0
        if remote.sha256:
            blob, partial = blobs / remote.sha256, blobs / f"{remote.sha256}.incomplete"
            if blob.is_file() and blob.stat().st_size == size and not resolved.request.force_download:
                continue
            needed += size - (partial.stat().st_size if partial.is_file() else 0)
        elif (
            resolved.request.force_download
            or not (hub.layout.snapshot_dir(resolved.request.repo, commit) / remote.path).exists()
        ):
            needed += size
    return max(needed, 0)


def remove_partials(resolved: ResolvedRepo, hub: HubClient) -> None:
    """Delete this repository's partial downloads (after the volume ran full: they would keep it
    full for every other warm-up)."""
    blobs = hub.layout.repo_dir(resolved.request.repo) / "blobs"
    for partial in blobs.glob("*.incomplete") if blobs.is_dir() else ():
        partial.unlink(missing_ok=True)


def download(resolved: ResolvedRepo, hub: HubClient, *, progress: bool) -> DownloadStats:
    """Download the resolved files into the HF cache, several at a time; every file verified.

    Raises the first failure (a hub error or ChecksumMismatch) once the transfers in flight end.
    """
    request = resolved.request
    started = time.monotonic()
    # Like snapshot_download, several files at once: the largest (weight shards) first.
    jobs = sorted(
        [(f, resolved.weight_commit) for f in resolved.weights]
        + [(f, resolved.commit) for f in resolved.files],
        key=lambda job: -(job[0].size or 0),
    )
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=min(DOWNLOAD_WORKERS, len(jobs)), thread_name_prefix="download"
    )
    try:
        futures = [
            pool.submit(
                retried,
                lambda remote=remote, commit=commit: _download_file(resolved, remote, commit, hub, progress),
                f"{resolved.request.repo}/{remote.path}",
            )
            for remote, commit in jobs
        ]
        results = [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    _record_ref(hub.layout.repo_dir(request.repo), request.revision, resolved.commit)
    return DownloadStats(
        files=len(results),
        bytes=sum(r.bytes for r in results),
        fetched_bytes=sum(r.fetched_bytes for r in results),
        resumed_bytes=sum(r.resumed_bytes for r in results),
        seconds=round(time.monotonic() - started, 3),
    )


def _download_file(
    resolved: ResolvedRepo, remote: RemoteFile, commit: str, hub: HubClient, progress: bool
) -> DownloadStats:
    """One file into the cache: LFS files through the resumable fetch, then linked by hf_hub_download."""
    from huggingface_hub import hf_hub_download

    request = resolved.request
    result = DownloadStats(files=1)
    snapshot = hub.layout.snapshot_dir(request.repo, commit) / remote.path
    if remote.sha256:
        fetch = _fetch(
            request,
            commit,
            url=_file_url(hub, request.repo, remote.path, commit),
            headers=_headers(hub),
            blob=hub.layout.repo_dir(request.repo) / "blobs" / remote.sha256,
            sha256=remote.sha256,
            size=remote.size,
            force=request.force_download,
            progress=progress,
            label=remote.path,
        )
        result.fetched_bytes, result.resumed_bytes = fetch.fetched, fetch.resumed_from
    elif request.force_download or not snapshot.exists():
        result.fetched_bytes = remote.size or 0
    try:
        local = hf_hub_download(
            request.repo,
            remote.path,
            revision=commit,
            cache_dir=hub.layout.hub_cache,
            endpoint=hub.endpoint,
            token=hub.token or False,
            force_download=request.force_download and not remote.sha256,
        )
    except Exception as error:
        raise hub_errors.translate(error, repo=request.repo, revision=commit) from None
    path = Path(local)
    if not remote.sha256:
        _verify_small_file(path, remote, f"{request.repo}@{commit[:12]}")
    result.bytes = path.stat().st_size
    return result


def _fetch(request: RepoRequest, commit: str, **kwargs: Any) -> resumable.FetchResult:
    try:
        return resumable.fetch_blob(**kwargs)
    except errors.ModelWarmupError:
        raise
    except Exception as error:
        raise hub_errors.translate(error, repo=request.repo, revision=commit) from None


def _record_ref(repo_dir: Path, revision: str, commit: str) -> None:
    """refs/<branch> → commit, as huggingface_hub writes it, so offline servers resolve the branch."""
    if revision == commit:
        return
    ref = repo_dir / "refs" / revision
    if not os.path.normpath(ref).startswith(os.path.normpath(repo_dir / "refs") + os.sep):
        raise errors.InvalidOptionError(
            f"revision {revision!r} would be written outside the cache"
        )  # defence in depth
    if not ref.exists() or ref.read_text().strip() != commit:
        layout.write_text_atomic(ref, commit)


def _file_url(hub: HubClient, repo: str, path: str, commit: str) -> str:
    from huggingface_hub import hf_hub_url

    return str(hf_hub_url(repo, path, revision=commit, endpoint=hub.endpoint))


def _headers(hub: HubClient) -> dict[str, str]:
    from huggingface_hub.utils._headers import build_hf_headers

    return dict(build_hf_headers(token=hub.token or False))
