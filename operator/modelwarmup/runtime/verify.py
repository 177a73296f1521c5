"""`modelwarmup verify`: does the cache hold a complete entry for this node's platform?

Run as a serving pod's init container, it sees the node's hardware (CPU instruction set, GPU
model and compute capability) but not the serving container's software, which may differ from
the init image's. So it matches entries on the hardware part of the fingerprint only; the loader
inside the serving process checks the rest. Exit codes: 0 a matching complete entry exists;
20 no entry; 21 only incomplete entries (a warm-up is running or was killed); 22 entries exist
for other platforms only; 23 the matching entry's files differ from its manifest (a compiled
file's size or sha256, a weight file missing or resized; with ``--full`` the weights' digests too). With ``--warn-only`` it prints the same reason and exits 0, so a
mismatch means a cold start with a clear warning instead of a pod that never starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from modelwarmup import errors
from modelwarmup.cache import integrity, keys, layout
from modelwarmup.cache.layout import CacheLayout
from modelwarmup.contracts import manifest, startlog

# Fingerprint keys that describe the node rather than the software in a container.
HARDWARE_KEYS = (
    "machine",
    "device_type",
    "cpu_vec_isa",
    "cpu_vec_isa_bits",
    "cpu_flags",
    "gpu_name",
    "gpu_capability",
    "gpu_arch",
)


@dataclass(frozen=True)
class Verdict:
    code: int
    reason: str
    message: str
    entry: Path | None = None


def _candidates(cache: CacheLayout, model_key: str | None, repo: str | None) -> tuple[list[Path], int]:
    """Entry directories that may serve (complete ones) and how many incomplete ones lie around."""
    if model_key:
        model_dirs = [cache.compiled / model_key]
    elif cache.compiled.is_dir():
        # Only this repo's model keys: another model's half-built entry is none of our business.
        prefix = keys.repo_slug(repo) + "-" if repo else ""
        model_dirs = sorted(p for p in cache.compiled.iterdir() if p.is_dir() and p.name.startswith(prefix))
    else:
        model_dirs = []
    complete: list[Path] = []
    incomplete = 0
    for model_dir in model_dirs:
        if not model_dir.is_dir():
            continue
        for entry in sorted(model_dir.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                incomplete += entry.name.endswith(".tmp")
                continue
            found = layout.read_manifest(entry)
            if found is None:
                incomplete += 1
            elif repo is None or found["repo"] == repo:
                complete.append(entry)
    return complete, incomplete


def hardware_differences(built_for: dict[str, str], here: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {
        k: (built_for.get(k, ""), here.get(k, ""))
        for k in HARDWARE_KEYS
        if k in built_for and built_for.get(k, "") != here.get(k, "")
    }


def verify(
    cache: CacheLayout,
    *,
    model_key: str | None,
    repo: str | None,
    node: dict[str, str],
    full: bool = False,
) -> Verdict:
    """Judge the cache for a node whose fingerprint is ``node``."""
    complete, incomplete = _candidates(cache, model_key, repo)
    what = model_key or repo or "any model"
    if not complete:
        if incomplete:
            return Verdict(
                errors.EXIT_VERIFY_INCOMPLETE,
                "Incomplete",
                f"{what}: only incomplete entries (no manifest) in {cache.compiled}",
            )
        return Verdict(errors.EXIT_VERIFY_MISSING, "Missing", f"{what}: no entry in {cache.compiled}")
    mismatches: list[str] = []
    for entry in complete:
        found = layout.read_manifest(entry)
        if found is None:  # removed since it was listed (a prune)
            continue
        portable = found["platform_key"] == manifest.DOWNLOAD_ONLY_PLATFORM
        differences = {} if portable else hardware_differences(found["platform"], node)
        if not differences:
            name = f"{entry.parent.name}/{entry.name}"
            if problems := integrity.entry_problems(cache, entry, found, full=full):
                return Verdict(
                    errors.EXIT_VERIFY_CORRUPT, "Corrupt", f"{name}: {'; '.join(problems[:5])}"[:2000], entry
                )
            what_matches = "weights only, any platform" if portable else "matches this node"
            return Verdict(errors.EXIT_OK, "Match", f"{name}: {what_matches}", entry)
        shown = ", ".join(f"{k}: built {a!r}, here {b!r}" for k, (a, b) in differences.items())
        mismatches.append(f"{entry.name} ({shown})")
    return Verdict(
        errors.EXIT_VERIFY_OTHER_PLATFORM,
        "OtherPlatform",
        f"{what}: entries only for other platforms: {'; '.join(mismatches)}",
    )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("verify", help="check that the cache holds a complete entry for this node")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--model-path", help="the model's repo id")
    parser.add_argument("--model-key", help="the model key whose entries to check (the operator passes it)")
    parser.add_argument("--devices", default=None, help="cpu, gpu or gpu:N; default: the first GPU if any")
    parser.add_argument("--warn-only", action="store_true", help="report a problem but exit 0 (serve cold)")
    parser.add_argument(
        "--full", action="store_true", help="also hash the weights (sizes are always checked): seconds per GB"
    )
    parser.add_argument(
        "--install-runtime", type=Path, default=None, help="also copy the runtime loader (sitecustomize) here"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from modelwarmup.compilation import devices, isa_checks, platform, recipe

    recipe.pin_environment()  # fingerprint the node as the worker and the loader do

    if args.install_runtime is not None:
        from modelwarmup.runtime import autoload

        autoload.install_runtime(args.install_runtime)
    model_key = args.model_key or None
    if model_key is not None and "/" in model_key:
        raise errors.InvalidOptionError(
            f"--model-key {model_key!r} is an entry key (<model-key>/<platform-key>); pass its model key"
        )
    device = devices.resolve_device(args.devices, None)
    isa_checks.load(isa_checks.saved_in(args.cache_dir, model_key))  # the fingerprint need not run them
    verdict = verify(
        CacheLayout(args.cache_dir),
        model_key=model_key,
        repo=args.model_path,
        node=platform.platform_fingerprint(device),
        full=args.full,
    )
    line = json.dumps(
        {"verify": verdict.reason, "message": verdict.message, "entry": str(verdict.entry or "")}
    )
    if verdict.code == errors.EXIT_OK:
        print(line)
        return errors.EXIT_OK
    print(line, file=sys.stderr)
    if args.warn_only:
        print(
            startlog.warning("the server will start cold (it compiles on its own)", "verify"), file=sys.stderr
        )
        return errors.EXIT_OK
    return verdict.code
