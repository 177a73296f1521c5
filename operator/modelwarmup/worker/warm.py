"""One warm-up, start to finish: resolve, download, compile, publish, report.

The order matters for safety: the entry's lock is taken before anything is built, the complete
entry is re-checked under the lock (a racing worker may have finished it), artifacts are built in
a staging directory and the manifest is written last. A second run for the same request finds
its entry through a small ref file and returns without calling the hub.
"""

from __future__ import annotations

import datetime
import errno
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelwarmup import __version__, errors
from modelwarmup.cache import integrity, keys, layout
from modelwarmup.cache.layout import CacheLayout
from modelwarmup.compilation import devices
from modelwarmup.compilation.settings import CompileSettings
from modelwarmup.contracts import digest, manifest
from modelwarmup.contracts.checksums import Checksums
from modelwarmup.contracts.checksums import record as record_checksums
from modelwarmup.contracts.manifest import EntryManifest
from modelwarmup.contracts.summary import WorkerSummary
from modelwarmup.worker import download, model_checks, report
from modelwarmup.worker.request import WarmCacheRequest, with_device


def read_token(token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The hub token from a file or HF_TOKEN; held in memory only, never logged or stored."""
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip() or None
        except OSError as error:
            raise errors.InvalidOptionError(
                f"--token-file {token_file}: cannot read it ({error.strerror})"
            ) from None
    return environ.get("HF_TOKEN") or None


def request_ref(request: WarmCacheRequest, platform_key: str) -> str:
    """The digest of what was asked for (not yet resolved): the name of the ref file."""
    return digest.digest(
        {
            "request": request.model_dump(
                mode="json",
                include={
                    "model",
                    "draft",
                    "loras",
                    "compile",
                    "allow_dtype_cast",
                    "custom_architectures",
                    "chat_template",
                },
            ),
            "platform": platform_key,
        },
        length=32,
    )


def _ref_path(cache: CacheLayout, ref: str) -> Path:
    return cache.root / "refs" / f"{ref}.json"


def _platform(request: WarmCacheRequest) -> tuple[str, dict[str, str], str]:
    """(device, fingerprint, key) for this node."""
    if request.compile is None:
        return "none", {}, manifest.DOWNLOAD_ONLY_PLATFORM
    from modelwarmup.compilation import platform

    device = devices.resolve_device(request.devices, request.target)
    fingerprint = platform.platform_fingerprint(device)
    return device, fingerprint, platform.platform_key(fingerprint)


def _summary(entry: EntryManifest, **fields: Any) -> WorkerSummary:
    """A successful run's summary: what the entry's manifest says, and this run's figures."""
    return WorkerSummary(
        ok=True,
        entry_key=entry["entry_key"],
        model_key=entry["model_key"],
        platform_key=entry["platform_key"],
        commit=entry["commit"],
        bytes=entry["bytes"],
        platform=entry["platform"],
        **fields,
    )


def _intact(cache: CacheLayout, entry: Path, found: EntryManifest) -> bool:
    """Whether an entry about to be reused is what its manifest says, weights hashed too (about
    1.7 GB/s of CPU here: the Job is what vouches for the entry). A broken one is built again:
    its weights re-verified blob by blob (bad ones fetched again), then published over it."""
    problems = integrity.entry_problems(cache, entry, found, full=True)
    if problems:
        report.phase_line("corrupt-entry", entry_key=found["entry_key"], problems=problems[:10])
    return not problems


def _hit(entry: EntryManifest, started: float, how: str) -> WorkerSummary:
    report.phase_line("cache-hit", entry_key=entry["entry_key"], how=how)
    return _summary(
        entry,
        cache_hit=True,
        reason="CacheHit",
        message=f"complete entry {entry['entry_key']} already in the cache",
        download_seconds=0.0,
        compile_seconds=0.0,
        seconds=round(time.monotonic() - started, 3),
    )


def compute_model_key(
    request: WarmCacheRequest, repos: list[download.ResolvedRepo], settings: CompileSettings | None
) -> str:
    """The model key: resolved commits and file digests of every repo, and every compile setting."""
    return keys.model_key(
        repo=request.model.repo,
        inputs={
            "repos": [r.key_inputs() for r in repos],
            "compile": settings.cache_fields() if settings is not None else None,
            "allow_dtype_cast": request.allow_dtype_cast,
            "custom_architectures": list(request.custom_architectures),
            "chat_template": digest.digest(request.chat_template) if request.chat_template else None,
        },
    )


def warm_cache(request: WarmCacheRequest, environ: Mapping[str, str]) -> WorkerSummary:
    """Run the warm-up; returns the summary. Raises modelwarmup errors on failure."""
    started = time.monotonic()
    cache = CacheLayout(request.cache_dir)
    if request.resolve_only:
        return _resolve_only(request, cache, environ, started)
    device, fingerprint, platform_key = _platform(request)

    ref = _ref_path(cache, request_ref(request, platform_key))
    broken: Path | None = None  # an entry found corrupt here is built again, not checked twice
    if not (request.force or request.model.force_download) and ref.exists():
        known_entry = cache.compiled / ref.read_text().strip()
        known = layout.read_manifest(known_entry)
        if known is not None:
            if _intact(cache, known_entry, known):
                return _hit(known, started, how="ref")
            broken = known_entry

    hub = _hub(request, cache, environ)
    repos = _resolve(request, hub)
    settings = with_device(request.compile, device) if request.compile is not None else None
    model_key = compute_model_key(request, repos, settings)
    entry_key = f"{model_key}/{platform_key}"
    entry = cache.entry(model_key, platform_key)

    with layout.entry_lock(cache, model_key, platform_key, timeout_s=request.lock_timeout_s):
        existing = layout.read_manifest(entry)
        if existing is not None and not request.force and entry != broken and _intact(cache, entry, existing):
            _write_ref(ref, entry_key)
            return _hit(existing, started, how="manifest")
        layout.remove_stale_staging(cache, model_key, platform_key)
        _check_capacity(cache, repos, hub, settings)
        try:
            return _build(
                request,
                cache,
                repos,
                hub,
                settings,
                started,
                ref=ref,
                entry=entry,
                model_key=model_key,
                platform_key=platform_key,
                fingerprint=fingerprint,
            )
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            for resolved in repos:
                download.remove_partials(resolved, hub)
            free = shutil.disk_usage(cache.root).free
            raise errors.InsufficientStorage(
                f"the cache volume ran full while warming {entry_key} ({free} bytes free now); "
                "the partial downloads were removed: give the volume more room"
            ) from None


def _check_capacity(
    cache: CacheLayout, repos: list[download.ResolvedRepo], hub: download.HubClient, settings: Any
) -> None:
    """Fail before the first byte when the volume cannot hold what is still to fetch, plus room
    for the compiled artifacts (256 MiB; with an AOTInductor package, which embeds the weights,
    the weights' size again)."""
    cache.root.mkdir(parents=True, exist_ok=True)
    needed = sum(download.bytes_to_fetch(r, hub) for r in repos)
    weights = sum(f.size or 0 for r in repos for f in r.weights)
    margin = 0 if settings is None else COMPILE_MARGIN + (weights if settings.aot_inductor else 0)
    free = shutil.disk_usage(cache.root).free
    if needed + margin > free:
        raise errors.InsufficientStorage(
            f"the cache volume has {free} bytes free; this warm-up needs {needed + margin} "
            f"({needed} still to download{f' + {margin} for compiled artifacts' if margin else ''})"
        )


COMPILE_MARGIN = 256 << 20


def _build(
    request: WarmCacheRequest,
    cache: CacheLayout,
    repos: list[download.ResolvedRepo],
    hub: download.HubClient,
    settings: Any,
    started: float,
    *,
    ref: Path,
    entry: Path,
    model_key: str,
    platform_key: str,
    fingerprint: dict[str, str],
) -> WorkerSummary:
    """Download, compile and publish one entry (holding its lock)."""
    entry_key = f"{model_key}/{platform_key}"
    progress = os.isatty(2)
    download_seconds = 0.0
    stats = []
    for resolved in repos:
        with report.timed("download", repo=resolved.request.repo, role=resolved.request.role) as fields:
            result = download.download(resolved, hub, progress=progress)
            fields.update(
                files=result.files,
                bytes=result.bytes,
                fetched=result.fetched_bytes,
                resumed_from=result.resumed_bytes,
            )
        download_seconds += result.seconds
        stats.append(result)
    with layout.staging_dir(cache, model_key, platform_key) as staging:
        compile_report, settings = _compile(request, settings, repos, hub, staging)
        if request.chat_template:
            (staging / layout.CHAT_TEMPLATE_FILENAME).write_text(request.chat_template, encoding="utf-8")
        built = _manifest(
            request=request,
            repos=repos,
            model_key=model_key,
            platform_key=platform_key,
            fingerprint=fingerprint,
            settings=settings,
            compile_report=compile_report,
            weights_bytes=sum(s.bytes for s in stats),
            artifacts_bytes=layout.tree_size(staging),
            download_seconds=download_seconds,
            checksums=record_checksums(staging),
        )
        layout.publish(staging, entry, built)
    _write_ref(ref, entry_key)
    report.phase_line("published", entry_key=entry_key, bytes=built["bytes"])
    return _summary(
        built,
        reason="Warmed",
        message=f"warmed {request.model.repo}@{repos[0].commit[:12]} into {entry_key}",
        download_seconds=round(download_seconds, 3),
        compile_seconds=built["timings"]["compile_seconds"],
        resumed_bytes=sum(s.resumed_bytes for s in stats),
        seconds=round(time.monotonic() - started, 3),
    )


def _hub(request: WarmCacheRequest, cache: CacheLayout, environ: Mapping[str, str]) -> download.HubClient:
    return download.HubClient(
        endpoint=environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/"),
        token=read_token(request.token_file, environ),
        layout=cache,
    )


def _resolve(request: WarmCacheRequest, hub: download.HubClient) -> list[download.ResolvedRepo]:
    """Every repository of the request pinned to commits, with the files to download."""
    with report.timed("resolve", repo=request.model.repo, revision=request.model.revision) as fields:
        repos = [download.resolve(repo, hub) for repo in request.repos]
        fields["commit"] = repos[0].commit
    return repos


def _resolve_only(
    request: WarmCacheRequest, cache: CacheLayout, environ: Mapping[str, str], started: float
) -> WorkerSummary:
    """Resolve every revision to a commit (listing its files, so a missing file fails here too)
    and report them as pins; the operator passes the pins to every target's warm-up."""
    repos = _resolve(request, _hub(request, cache, environ))
    pins = tuple(f"{r.request.pin}={r.commit}" for r in repos)
    return WorkerSummary(
        ok=True,
        reason="Resolved",
        message=f"resolved {request.model.pin} to {repos[0].commit[:12]}",
        commit=repos[0].commit,
        pins=pins,
        seconds=round(time.monotonic() - started, 3),
    )


def _write_ref(ref: Path, entry_key: str) -> None:
    layout.write_text_atomic(ref, entry_key)


def _compile(
    request: WarmCacheRequest,
    settings: CompileSettings | None,
    repos: list[download.ResolvedRepo],
    hub: download.HubClient,
    staging: Path,
) -> tuple[dict[str, Any] | None, CompileSettings | None]:
    """Compile into ``staging``; returns the report and the settings compiled with (fitted to the
    model: these are what the manifest records and serving compiles with)."""
    if settings is None:
        return None, None
    from modelwarmup.compilation import compiler

    model = repos[0]
    source = _source_dir(staging, hub, model)
    weights = [source / w.path for w in model.weights]
    settings, notes = model_checks.fit_to_model(settings, weights, source)
    for note in notes:
        report.log.warning("modelwarmup: %s", note)
    model_checks.check_weight_dtype(weights, settings.dtype, request.allow_dtype_cast)
    registered = model_checks.register_custom_architectures(request.custom_architectures)
    draft = next((_source_dir(staging, hub, r) for r in repos if r.request.role == "draft"), None)
    adapters = {r.request.repo: _source_dir(staging, hub, r) for r in repos if r.request.role == "lora"}
    with report.timed(
        "compile", device=settings.device, dtype=settings.dtype, regional=settings.regional
    ) as fields:
        try:
            result = compiler.compile_model(source, settings, staging, draft_dir=draft, adapters=adapters)
        except Exception as error:
            failure = compiler.deterministic_failure(error)
            if failure is None:
                raise
            raise failure from error
        fields.update(compile_seconds=result.compile_seconds)
    for warning in result.warnings:
        report.log.warning("modelwarmup: %s", warning)
    data: dict[str, Any] = result.model_dump(mode="json")
    data["custom_architectures"] = registered
    for merged in staging.glob(".source*"):
        for link in merged.iterdir():
            link.unlink()
        merged.rmdir()
    return data, settings


def _source_dir(staging: Path, hub: download.HubClient, resolved: download.ResolvedRepo) -> Path:
    """Where a downloaded repository's files are, config and weights together."""
    source = hub.layout.snapshot_dir(resolved.request.repo, resolved.commit)
    if resolved.weight_commit == resolved.commit:
        return source
    return _merged_source(
        staging, source, hub.layout.snapshot_dir(resolved.request.repo, resolved.weight_commit), resolved
    )


def _merged_source(staging: Path, config_dir: Path, weights_dir: Path, model: download.ResolvedRepo) -> Path:
    """Config and tokenizer from one commit, weights from another: one directory of links."""
    merged = staging / f".source-{model.request.role}-{len(list(staging.glob('.source*')))}"
    merged.mkdir()
    for remote in model.files:
        (merged / remote.path).symlink_to(config_dir / remote.path)
    for remote in model.weights:
        (merged / remote.path).symlink_to(weights_dir / remote.path)
    return merged


def _manifest(
    *,
    request: WarmCacheRequest,
    repos: list[download.ResolvedRepo],
    model_key: str,
    platform_key: str,
    fingerprint: dict[str, str],
    settings: Any,
    compile_report: dict[str, Any] | None,
    weights_bytes: int,
    artifacts_bytes: int,
    download_seconds: float,
    checksums: Checksums,
) -> EntryManifest:
    main = repos[0]
    return {
        "manifest_version": manifest.MANIFEST_VERSION,
        "worker_version": __version__,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "entry_key": f"{model_key}/{platform_key}",
        "model_key": model_key,
        "platform_key": platform_key,
        "repo": main.request.repo,
        "revision": main.request.revision,
        "commit": main.commit,
        "weight_commit": main.weight_commit,
        "repos": [r.record() for r in repos],
        "hf_home": "hf",
        "platform": fingerprint,
        "compile": settings.model_dump(mode="json") if settings is not None else None,
        "compile_report": compile_report,
        "artifacts": {
            "inductor": layout.INDUCTOR_DIRNAME,
            "megacache": layout.MEGACACHE_FILENAME,
            "aoti": str(layout.AOTI_RELPATH) if settings is not None and settings.aot_inductor else None,
            "chat_template": layout.CHAT_TEMPLATE_FILENAME if request.chat_template else None,
        },
        "checksums": checksums,
        "bytes": weights_bytes + artifacts_bytes,
        "weights_bytes": weights_bytes,
        "artifacts_bytes": artifacts_bytes,
        "timings": {
            "download_seconds": round(download_seconds, 3),
            "compile_seconds": (compile_report or {}).get("compile_seconds", 0.0),
        },
        "served_model_name": request.served_model_name,
        "server_options": request.server_options,
    }
