"""One rehearsal, start to finish: run the server cold, capture, verify, publish.

1. The key is computed before anything starts (model, image, command, the env that changes
   compilation, the engine cache path, the machine); a complete entry under it is a hit and no
   server is started.
2. Under the entry's lock, the server runs with every known compile cache redirected into the
   (emptied) engine cache path, is sent the warm-up requests and stopped with SIGTERM.
3. What it wrote is copied into a staging folder on the cache volume.
4. Verification: the capture is restored into the engine cache path, as a serving pod restores
   it, and the server starts once more. A compiled file it still writes, or a log line of the
   engine's that says it compiled again, means a serving pod would start cold: nothing is
   published, and the error says what missed.
5. The staging folder becomes the entry; its manifest is written last.

Standard library only, as the rest of :mod:`modelwarmup.rehearsal`.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelwarmup import __version__, errors
from modelwarmup.cache import layout
from modelwarmup.cache.layout import CacheLayout
from modelwarmup.contracts import checksums
from modelwarmup.contracts import rehearsal as contract
from modelwarmup.contracts.rehearsal import RehearsalManifest, Verification
from modelwarmup.rehearsal import capture, engines, facts, traffic
from modelwarmup.rehearsal.server import ServerProcess, WarmupRequest, check_ready_url, find_command

LOG_LINES_KEPT = 400


@dataclass(frozen=True)
class Rehearsal:
    """What one rehearsal needs; the model is already in ``cache_dir``'s HF cache."""

    cache_dir: Path
    repo: str
    commit: str
    model_key: str  # the download entry's: commit and file digests
    command: tuple[str, ...]
    ready_url: str
    engine_cache_path: Path
    server_env: Mapping[str, str]  # the server's own environment
    hf_home: Path | None = None  # default: cache_dir/hf
    requests: tuple[WarmupRequest, ...] = ()
    timeout_s: float = 1800.0
    stop_grace_s: float = 60.0
    image: str | None = None
    image_digest: str | None = None
    verify: bool = True
    force: bool = False
    download_seconds: float = 0.0
    lock_timeout_s: float = 3600.0


@dataclass
class _Run:
    """What one start of the server did."""

    ready_seconds: float
    request_seconds: dict[str, float]
    stop_seconds: float
    log: str
    engine_init_seconds: float | None = field(default=None)


def environment(spec: Rehearsal) -> tuple[dict[str, str], dict[str, str]]:
    """(the server's whole environment, the part a serving pod sets too)."""
    hf_home = spec.hf_home or spec.cache_dir / "hf"
    serving = {
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        **engines.serving_env(str(spec.engine_cache_path), spec.server_env),
    }
    return {**spec.server_env, **serving}, serving


def rehearse(spec: Rehearsal) -> dict[str, Any]:
    """Run the rehearsal; returns its summary. Raises modelwarmup errors on failure."""
    started = time.monotonic()
    ready = check_ready_url(spec.ready_url)
    env, serving_env = environment(spec)
    find_command(spec.command, env)
    inputs = facts.key_inputs(
        model_key=spec.model_key,
        image=spec.image,
        image_digest=spec.image_digest,
        command=spec.command,
        compile_env=engines.compile_env(env),
        engine_cache_path=str(spec.engine_cache_path),
        facts=facts.platform_facts(),
    )
    key = facts.rehearsal_key(spec.repo, inputs)
    cache = CacheLayout(spec.cache_dir)
    entry = cache.rehearsal_entry(key)
    if not spec.force and (found := layout.read_rehearsal(entry)) is not None:
        return _summary(found, cache_hit=True, seconds=time.monotonic() - started)
    with layout.entry_lock(cache, layout.REHEARSAL_LOCK_GROUP, key, timeout_s=spec.lock_timeout_s):
        if not spec.force and (found := layout.read_rehearsal(entry)) is not None:
            return _summary(found, cache_hit=True, seconds=time.monotonic() - started)
        with layout.staging_beside(entry) as staging:
            capture.prepare(spec.engine_cache_path)
            cold = _start_once(
                spec, env, staging / contract.SERVER_LOG_FILENAME, f"{ready.scheme}://{ready.netloc}"
            )
            if not capture.files(spec.engine_cache_path):
                raise errors.NothingCaptured(
                    f"the server wrote nothing under {spec.engine_cache_path} (redirected there: "
                    f"{', '.join(engines.CACHE_LOCATIONS)}); it compiles nothing, or keeps its caches elsewhere"
                )
            captured = staging / contract.CAPTURED_DIRNAME
            captured_bytes = capture.copy_files(spec.engine_cache_path, captured)
            verification = _verify(spec, env, staging, captured, f"{ready.scheme}://{ready.netloc}")
            _keep_tail(staging / contract.SERVER_LOG_FILENAME, cold.log)
            built = _manifest(spec, key, inputs, serving_env, captured, captured_bytes, cold, verification)
            layout.publish(staging, entry, built)
    return _summary(built, cache_hit=False, seconds=time.monotonic() - started)


def _start_once(spec: Rehearsal, env: Mapping[str, str], log_path: Path, base_url: str) -> _Run:
    server = ServerProcess(spec.command, env, log_path)
    server.start()
    try:
        ready_seconds = server.wait_ready(spec.ready_url, spec.timeout_s)
        request_seconds = traffic.send_warmup(server, base_url, spec.requests, spec.timeout_s)
    except BaseException:
        server.kill()
        raise
    stop_seconds = server.stop(spec.stop_grace_s)
    log = server.log()
    return _Run(
        ready_seconds=round(ready_seconds, 3),
        request_seconds=request_seconds,
        stop_seconds=round(stop_seconds, 3),
        log=log,
        engine_init_seconds=engines.engine_init_seconds(log),
    )


def _verify(
    spec: Rehearsal, env: Mapping[str, str], staging: Path, captured: Path, base_url: str
) -> Verification:
    """Start the server again from the capture, restored as a serving pod restores it."""
    if not spec.verify:
        return {
            "ran": False,
            "new_files": [],
            "evidence": [],
            "engine_init_seconds": None,
            "ready_seconds": None,
        }
    capture.restore_into(captured, spec.engine_cache_path)
    before = capture.files(spec.engine_cache_path)
    run = _start_once(spec, env, staging / "verify.log", base_url)
    (staging / "verify.log").unlink(missing_ok=True)
    new_files = sorted(capture.files(spec.engine_cache_path) - before)
    evidence = engines.miss_evidence(run.log)
    if new_files or evidence:
        hints = sorted({hint for _, hint in evidence})
        raise errors.CaptureNotReusable(
            "a start from the captured caches compiled again, so serving pods would start cold"
            + (f"; it wrote {len(new_files)} new files ({', '.join(new_files[:3])})" if new_files else "")
            + (f"; its log says: {evidence[0][0]}" if evidence else "")
            + (f". {' '.join(hints)}" if hints else "")
        )
    return {
        "ran": True,
        "new_files": [],
        "evidence": [],
        "engine_init_seconds": run.engine_init_seconds,
        "ready_seconds": run.ready_seconds,
    }


def _keep_tail(path: Path, log: str) -> None:
    path.write_text("\n".join(log.splitlines()[-LOG_LINES_KEPT:]) + "\n", encoding="utf-8")


def _manifest(
    spec: Rehearsal,
    key: str,
    inputs: dict[str, Any],
    serving_env: dict[str, str],
    captured: Path,
    captured_bytes: int,
    cold: _Run,
    verification: Verification,
) -> RehearsalManifest:
    recorded = checksums.record(captured)
    return {
        "manifest_version": contract.REHEARSAL_MANIFEST_VERSION,
        "worker_version": __version__,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "key": key,
        "key_inputs": inputs,
        "repo": spec.repo,
        "commit": spec.commit,
        "model_key": spec.model_key,
        "image": spec.image,
        "image_digest": spec.image_digest,
        "command": list(spec.command),
        "engine_cache_path": str(spec.engine_cache_path),
        "env": serving_env,
        "platform": inputs["platform"],
        "captured_bytes": captured_bytes,
        "captured_files": len(recorded),
        "checksums": {f"{contract.CAPTURED_DIRNAME}/{path}": value for path, value in recorded.items()},
        "timings": {
            "download_seconds": round(spec.download_seconds, 3),
            "ready_seconds": cold.ready_seconds,
            "stop_seconds": cold.stop_seconds,
            **cold.request_seconds,
        },
        "engine_init_seconds": cold.engine_init_seconds,
        "verification": verification,
    }


def _summary(entry: RehearsalManifest, *, cache_hit: bool, seconds: float) -> dict[str, Any]:
    verified = entry["verification"]
    return {
        "ok": True,
        "reason": "CacheHit" if cache_hit else "Rehearsed",
        "message": (
            f"complete rehearsal entry {entry['key']} already in the cache"
            if cache_hit
            else f"rehearsed {entry['repo']}@{entry['commit'][:12]}: captured {entry['captured_files']} files "
            f"({entry['captured_bytes']} bytes)"
            + (", verified by a warm start" if verified["ran"] else ", not verified")
        ),
        "permanent": False,
        "cache_hit": cache_hit,
        "entry_key": f"rehearsed/{entry['key']}",
        "key": entry["key"],
        "model_key": entry["model_key"],
        "commit": entry["commit"],
        "engine_cache_path": entry["engine_cache_path"],
        "env": entry["env"],
        "captured_bytes": entry["captured_bytes"],
        "engine_init_seconds": {
            "cold": entry["engine_init_seconds"],
            "verified": verified["engine_init_seconds"],
        },
        "timings": entry["timings"],
        "seconds": round(seconds, 3),
    }


def restore(entry_dir: Path, to: Path | None) -> dict[str, Any]:
    """Copy a rehearsed entry's caches into a writable folder (default: the rehearsal's own path);
    returns a summary with the env a server sets to use them."""
    found = layout.read_rehearsal(entry_dir)
    if found is None:
        raise errors.InvalidOptionError(f"--entry {entry_dir}: no complete rehearsal entry there")
    target = to or Path(found["engine_cache_path"])
    started = time.monotonic()
    problems = checksums.problems(entry_dir, found["checksums"], extras=False)
    if problems:
        raise errors.CorruptEntry(f"rehearsal entry {found['key']} is damaged: {'; '.join(problems[:5])}")
    copied = capture.restore_into(entry_dir / contract.CAPTURED_DIRNAME, target)
    env = dict(found["env"])
    if target != Path(found["engine_cache_path"]):
        env.update(engines.redirected_env(str(target)))
    return {
        "ok": True,
        "reason": "Restored",
        "message": f"restored {found['captured_files']} files of {found['key']} into {target}",
        "key": found["key"],
        "path": str(target),
        "bytes": copied,
        "env": env,
        "seconds": round(time.monotonic() - started, 3),
    }


def failure(error: errors.ModelWarmupError) -> dict[str, Any]:
    return {"ok": False, "reason": error.reason, "message": str(error), "permanent": error.permanent}


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(our arguments, the server command after ``--``)."""
    if "--" not in argv:
        return list(argv), []
    at = list(argv).index("--")
    return list(argv[:at]), list(argv[at + 1 :])
