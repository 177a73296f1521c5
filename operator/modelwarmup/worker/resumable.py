"""Fetch one large file into the HF cache's blob store, resuming from the bytes already there.

huggingface_hub 2.x downloads into ``blobs/<etag>.<random>.incomplete`` and deletes it on error,
so a pod killed mid-download leaves an orphan that no later process reuses: the restart begins
at zero. This module keeps the partial bytes under a stable name, ``blobs/<sha256>.incomplete``
(the name huggingface_hub's cache scan and prune already know), continues them with an HTTP
Range request, adopts the largest orphan a killed huggingface_hub left (and deletes the rest),
checks size and sha256 and only then renames the blob into place, where ``hf_hub_download``
finds it and just links the snapshot (a HEAD, no GET). It holds the client's own per-blob lock
(``.locks/<repo>/<sha256>.lock``), so it never races a huggingface_hub download of the same blob.
huggingface_hub itself never checks a blob's sha256 in cache mode: a corrupted transfer would
otherwise be cached under the right name and reused silently.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelwarmup import errors
from modelwarmup.cache import layout

if TYPE_CHECKING:
    from hashlib import _Hash

CHUNK = 1 << 20
log = logging.getLogger("modelwarmup.worker")


@dataclass(frozen=True)
class FetchResult:
    fetched: int  # bytes transferred by this call
    resumed_from: int  # bytes that were already on the volume when it started


@contextlib.contextmanager
def _blob_lock(blob: Path) -> Iterator[None]:
    """The lock huggingface_hub takes for the same blob (flock: freed if the holder dies)."""
    lock = layout.blob_lock_file(blob)
    lock.parent.mkdir(parents=True, exist_ok=True)
    blob.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _adopt_orphans(blob: Path, partial: Path) -> None:
    """Keep the longest partial download left behind; delete the others."""
    orphans = sorted(
        (p for p in blob.parent.glob(f"{blob.name}.*.incomplete") if p != partial),
        key=lambda p: p.stat().st_size,
    )
    if orphans and (not partial.exists() or orphans[-1].stat().st_size > partial.stat().st_size):
        os.replace(orphans.pop(), partial)
    for orphan in orphans:
        orphan.unlink(missing_ok=True)


def _sha256_of(path: Path) -> _Hash:
    """A running sha256 over a file's current bytes (the partial download to continue)."""
    sha = hashlib.sha256()
    if path.exists():
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                sha.update(chunk)
    return sha


def fetch_blob(
    *,
    url: str,
    headers: dict[str, str],
    blob: Path,
    sha256: str,
    size: int | None,
    force: bool,
    progress: bool,
    label: str,
) -> FetchResult:
    """Make ``blob`` exist with the given sha256; raises ChecksumMismatch or a hub error."""
    with _blob_lock(blob):
        if blob.exists() and not force:
            # Reused only if it still hashes to its name: a flipped bit on the volume, or a hand
            # edit, would otherwise be published (and served) as the model.
            if (size is None or blob.stat().st_size == size) and _sha256_of(blob).hexdigest() == sha256:
                return FetchResult(fetched=0, resumed_from=0)
            log.warning("%s: the cached blob differs from the hub's sha256 or size; fetching it again", label)
            blob.unlink()
        if force:
            blob.unlink(missing_ok=True)
        partial = blob.with_name(blob.name + ".incomplete")
        if force:
            partial.unlink(missing_ok=True)
        _adopt_orphans(blob, partial)
        resumed_from = partial.stat().st_size if partial.exists() else 0
        if size is not None and resumed_from > size:
            partial.unlink()
            resumed_from = 0
        fetched = 0
        sha = _sha256_of(partial)  # the bytes already there; the transfer adds the rest as it writes
        if size is None or resumed_from < size:
            fetched, sha, resumed_from = _get(
                url, headers, partial, resumed_from, size, sha, progress=progress, label=label
            )
        actual = sha.hexdigest()
        if size is not None and partial.stat().st_size != size:
            partial.unlink(missing_ok=True)
            raise errors.ChecksumMismatch(
                f"{label}: got {fetched + resumed_from} bytes, the hub says {size}; removed"
            )
        if actual != sha256:
            partial.unlink(missing_ok=True)
            raise errors.ChecksumMismatch(
                f"{label}: sha256 {actual[:12]}… differs from the hub's {sha256[:12]}…; removed"
            )
        with partial.open("rb") as stream:
            os.fsync(stream.fileno())
        os.replace(partial, blob)
        return FetchResult(fetched=fetched, resumed_from=resumed_from)


def _get(
    url: str,
    headers: dict[str, str],
    partial: Path,
    offset: int,
    size: int | None,
    sha: _Hash,
    *,
    progress: bool,
    label: str,
) -> tuple[int, _Hash, int]:
    """GET the bytes from ``offset`` on into ``partial``: (bytes written, running sha256, offset kept).

    The digest is updated as the bytes are written, so the file is not read a second time. A server
    that ignores the Range header answers 200: the partial bytes are dropped and the offset is 0.
    """
    from huggingface_hub import get_session, hf_raise_for_status

    request_headers = {**headers, "Accept-Encoding": "identity"}
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    written = 0
    with get_session().stream(
        "GET", url, headers=request_headers, follow_redirects=True, timeout=60
    ) as response:
        hf_raise_for_status(response)
        resumed = response.status_code == 206 and response.headers.get("Content-Range", "").startswith(
            f"bytes {offset}-"
        )
        mode = "ab" if offset and resumed else "wb"  # 200: the server ignored Range; start over
        start = offset if mode == "ab" else 0
        if mode == "wb":
            sha = hashlib.sha256()
        bar = _progress_bar(label, size, start) if progress else None
        # Hash each chunk on a helper thread while the next one is written and received (hashlib
        # and file writes release the GIL): verifying costs no extra time and no second read.
        with partial.open(mode) as stream, concurrent.futures.ThreadPoolExecutor(1, "sha256") as hasher:
            hashed: concurrent.futures.Future[None] | None = None
            for chunk in response.iter_bytes(CHUNK):
                if hashed is not None:
                    hashed.result()
                hashed = hasher.submit(sha.update, chunk)
                stream.write(chunk)
                written += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if hashed is not None:
                hashed.result()
            stream.flush()
        if bar is not None:
            bar.close()
    return written, sha, start


def _progress_bar(label: str, total: int | None, initial: int) -> Any:
    from huggingface_hub.utils.tqdm import tqdm  # honours HF_HUB_DISABLE_PROGRESS_BARS

    return tqdm(
        total=total, initial=initial, unit="B", unit_scale=True, desc=label, file=sys.stderr, leave=False
    )  # type: ignore[no-untyped-call]
