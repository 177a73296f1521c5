"""Downloads: what lands in the HF cache, tokens, hub errors and their exit codes, checksums, resume.

These runs pass --no-compile: the download path is the same with or without compilation, and
skipping it keeps each run at about a second.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.devkit import tiny_model
from tests.devkit.hub import LocalHub
from tests.devkit.hub_repo import HubFile

from . import runner
from .conftest import BIG, DRAFT, GATED, LORA, TINY, TOKEN, UNWANTED, MiB, Warmed, repo_dir, sha256

SERVING = tiny_model.FILES
LOAD_OFFLINE = """
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt")
ids = ids["input_ids"] if not hasattr(ids, "shape") else ids
print(json.dumps({"vocab": model(input_ids=ids).logits.shape[-1], "tokens": int(ids.shape[-1])}))
"""


def _snapshot(cache: Path, repo: str, commit: str) -> Path:
    return repo_dir(cache, repo) / "snapshots" / commit


def _blobs_ok(cache: Path, repo: str) -> None:
    """No partial file, and every sha256-named (LFS) blob has exactly that content."""
    blobs = repo_dir(cache, repo) / "blobs"
    assert not list(blobs.glob("*.incomplete")), sorted(p.name for p in blobs.iterdir())
    for blob in blobs.iterdir():
        if len(blob.name) == 64:
            assert sha256(blob) == blob.name, blob


def test_only_what_serving_needs_lands_in_the_standard_hf_layout(hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run = runner.warm_cache(hub.endpoint, cache, "--model-path", TINY, "--no-compile")
    assert run.returncode == 0, run
    commit = hub.repo(TINY).branches["main"]
    assert run.summary["commit"] == commit and run.summary["platform_key"] == "portable"
    snapshot = _snapshot(cache, TINY, commit)
    assert {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if not p.is_dir()} == SERVING
    assert (repo_dir(cache, TINY) / "refs" / "main").read_text() == commit
    asked = {
        r.path.rsplit(f"{commit}/", 1)[-1] for r in hub.requests if "/resolve/" in r.path or r.host == "cdn"
    }
    assert not asked & set(UNWANTED), asked
    _blobs_ok(cache, TINY)
    assert [p["phase"] for p in run.phase_lines()] == ["resolve", "download", "published"]

    # Any HF-based server finds it with HF_HOME and no network.
    env = runner.clean_env(
        {"HF_HOME": str(cache / "hf"), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    )
    hub.clear_log()
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_OFFLINE, TINY], env=env, capture_output=True, text=True, timeout=120
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert result["vocab"] > 256 and result["tokens"] > 3
    assert hub.request_count == 0


def test_draft_model_and_lora_adapter_in_the_same_run(hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run = runner.warm_cache(
        hub.endpoint,
        cache,
        "--model-path",
        TINY,
        "--draft-model-path",
        DRAFT,
        "--lora-paths",
        f"{LORA}@main",
        "--no-compile",
    )
    assert run.returncode == 0, run
    manifest = Warmed(cache, run, ()).manifest
    assert [(r["role"], r["repo"]) for r in manifest["repos"]] == [
        ("model", TINY),
        ("draft", DRAFT),
        ("lora", LORA),
    ]
    for repo, wanted in [(DRAFT, SERVING), (LORA, {"adapter_config.json", "adapter_model.safetensors"})]:
        commit = hub.repo(repo).branches["main"]
        snapshot = _snapshot(cache, repo, commit)
        assert {p.name for p in snapshot.iterdir()} == wanted, repo
        _blobs_ok(cache, repo)
    downloads = [p for p in run.phase_lines() if p["phase"] == "download"]
    assert [(p["repo"], p["role"]) for p in downloads] == [(TINY, "model"), (DRAFT, "draft"), (LORA, "lora")]


@pytest.mark.parametrize("source", ["HF_TOKEN", "--token-file"])
def test_gated_repo_with_a_token_that_never_leaks(hub: LocalHub, tmp_path: Path, source: str) -> None:
    cache = tmp_path / "cache"
    args: list[str | Path] = ["--model-path", GATED, "--no-compile"]
    env = {}
    if source == "HF_TOKEN":
        env["HF_TOKEN"] = TOKEN
    else:
        secret = tmp_path / "secret" / "token"
        secret.parent.mkdir()
        secret.write_text(TOKEN + "\n")
        args += ["--token-file", secret]
    run = runner.warm_cache(hub.endpoint, cache, *args, env=env)
    assert run.returncode == 0, run
    assert any(r.authorization and r.host == "hub" for r in hub.requests)
    _blobs_ok(cache, GATED)
    assert TOKEN not in run.stdout + run.stderr
    assert run.termination_log is not None and TOKEN not in run.termination_log.read_text()
    files = [p for p in cache.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "manifest.json" for p in files)
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), path
        assert TOKEN not in str(path)


ERRORS = {
    "missing-repo": (["--model-path", "nobody/nothing"], {}, 10, "RepositoryNotFound"),
    "missing-revision": (
        ["--model-path", TINY, "--huggingface-model-revision", "no-such-branch"],
        {},
        10,
        "RevisionNotFound",
    ),
    "missing-weight-file": (
        ["--model-path", TINY, "--weight-path", "nope.safetensors"],
        {},
        10,
        "FileNotFound",
    ),
    "gated-without-token": (["--model-path", GATED], {}, 10, "GatedRepository"),
    "gated-wrong-token": (["--model-path", GATED], {"HF_TOKEN": "hf_notTheRightOne"}, 10, "GatedRepository"),
    "hub-5xx": (["--model-path", TINY], {"fail": "503"}, 11, "HubUnavailable"),
    "cdn-5xx": (["--model-path", TINY], {"fail": "500:model.safetensors"}, 11, "HubUnavailable"),
    "hub-unreachable": (["--model-path", TINY], {"HF_ENDPOINT": "http://127.0.0.1:9"}, 11, "HubUnavailable"),
    "token-file-missing": (
        ["--model-path", GATED, "--token-file", "/nonexistent/token"],
        {},
        10,
        "InvalidOption",
    ),
}


@pytest.mark.parametrize(("args", "env", "code", "reason"), ERRORS.values(), ids=ERRORS.keys())
def test_hub_errors_map_to_exit_codes(
    hub: LocalHub, tmp_path: Path, args: list[str], env: dict[str, str], code: int, reason: str
) -> None:
    env = dict(env)
    if "fail" in env:
        status, _, path = env.pop("fail").partition(":")
        hub.fail_next(20, status=int(status), path_contains=path or None)  # more than the client retries
    run = runner.warm_cache(hub.endpoint, tmp_path / "cache", *args, "--no-compile", env=env)
    assert run.returncode == code, run
    summary = run.summary
    assert summary["reason"] == reason and summary["permanent"] is (code == 10), summary
    assert "\n" not in summary["message"] and len(summary["message"]) < 400
    assert run.stderr.strip().splitlines()[-1] == f"modelwarmup warm-cache: {reason}: {summary['message']}"
    assert "Traceback" not in run.stderr
    assert run.termination_message == summary
    assert not list((tmp_path / "cache").rglob("manifest.json"))


def test_corrupted_lfs_bytes_fail_transiently_and_leave_no_bad_blob(hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    hub.corrupt("model.safetensors")
    run = runner.warm_cache(hub.endpoint, cache, "--model-path", TINY, "--no-compile")
    assert run.returncode == 11, run
    assert run.summary["reason"] == "ChecksumMismatch" and "model.safetensors" in run.summary["message"]
    blobs = repo_dir(cache, TINY) / "blobs"
    assert not [p for p in blobs.iterdir() if p.stat().st_size > 100_000], "the corrupted weights stayed"
    _blobs_ok(cache, TINY)

    hub.reset_faults()  # the next attempt (the Job's retry) succeeds
    again = runner.warm_cache(hub.endpoint, cache, "--model-path", TINY, "--no-compile")
    assert again.returncode == 0, again
    _blobs_ok(cache, TINY)


def _weights(hub: LocalHub, repo: str) -> tuple[str, int]:
    f = hub.repo(repo).commits[hub.repo(repo).branches["main"]].files["model.safetensors"]
    return f.sha256, f.size


def _ranges(hub: LocalHub) -> list[str | None]:
    """The Range header of every GET of the weights that reached the byte server (the CDN)."""
    return [
        r.range
        for r in hub.requests
        if r.method == "GET" and r.host == "cdn" and r.path.endswith("model.safetensors")
    ]


def _assert_resumed(
    hub: LocalHub, cache: Path, run: runner.Run, had: int, *, small_files_cached: bool = True
) -> None:
    digest, size = _weights(hub, BIG)
    assert run.returncode == 0, run
    assert run.summary["resumed_bytes"] == had > 0
    assert _ranges(hub) == [f"bytes={had}-"]
    download = next(p for p in run.phase_lines() if p["phase"] == "download")
    files = hub.repo(BIG).commits[hub.repo(BIG).branches["main"]].files
    small = sum(f.size for name, f in files.items() if name in SERVING and name != "model.safetensors")
    fetched_small = 0 if small_files_cached else small
    assert (
        download["fetched"] == size - had + fetched_small
    )  # of the weights, only the rest came over the wire
    blob = repo_dir(cache, BIG) / "blobs" / digest
    assert blob.stat().st_size == size and sha256(blob) == digest
    _blobs_ok(cache, BIG)


def test_a_cut_download_resumes_with_a_range_request(hub: LocalHub, tmp_path: Path) -> None:
    """The connection drops mid-weights: the worker's own retry continues from the bytes it has
    (a Range request), in the same process; a killed process's restart does too (next test)."""
    cache = tmp_path / "cache"
    _, size = _weights(hub, BIG)
    assert size > 6 * MiB
    cut = 3 * MiB + 12345
    hub.cut_after("model.safetensors", cut)
    run = runner.warm_cache(hub.endpoint, cache, "--model-path", BIG, "--no-compile")
    assert "retrying in 0.5 s" in run.stderr, run
    assert run.returncode == 0, run
    had = run.summary["resumed_bytes"]  # what reached the disk before the cut (whole chunks)
    assert 0 < had <= cut, run.summary
    assert _ranges(hub) == [None, f"bytes={had}-"]  # the whole file, cut; then only the rest
    digest, _ = _weights(hub, BIG)
    blob = repo_dir(cache, BIG) / "blobs" / digest
    assert blob.stat().st_size == size and sha256(blob) == digest
    _blobs_ok(cache, BIG)


def test_a_killed_download_resumes_after_a_restart(hub: LocalHub, tmp_path: Path) -> None:
    """The pod is killed mid-transfer (SIGKILL, nothing cleaned up); its restart continues."""
    cache = tmp_path / "cache"
    digest, _ = _weights(hub, BIG)
    hub.cut_after("model.safetensors", 4 * MiB + 1, stall=True)
    worker = runner.start_warm_cache(hub.endpoint, cache, "--model-path", BIG, "--no-compile")
    partial = repo_dir(cache, BIG) / "blobs" / f"{digest}.incomplete"
    snapshot = _snapshot(cache, BIG, hub.repo(BIG).branches["main"])
    deadline = time.monotonic() + 60
    # Until the weights stall after 4 MiB and the small files (downloaded alongside) are in.
    while not (partial.exists() and partial.stat().st_size >= 4 * MiB and len(list(snapshot.glob("*"))) == 5):
        assert worker.poll() is None and time.monotonic() < deadline, runner.finish(worker)
        time.sleep(0.05)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    had = partial.stat().st_size

    hub.clear_log()
    _assert_resumed(
        hub, cache, runner.warm_cache(hub.endpoint, cache, "--model-path", BIG, "--no-compile"), had
    )


def test_partial_files_of_a_killed_huggingface_hub_are_adopted_or_removed(
    hub: LocalHub, big_dir: Path, tmp_path: Path
) -> None:
    """huggingface_hub 2.x writes <etag>.<random>.incomplete and never reuses it: we keep the longest."""
    cache = tmp_path / "cache"
    digest, _ = _weights(hub, BIG)
    blobs = repo_dir(cache, BIG) / "blobs"
    blobs.mkdir(parents=True)
    content = (big_dir / "model.safetensors").read_bytes()
    orphans = {
        blobs / f"{digest}.{tag}.incomplete": n for tag, n in [("1a2b3c4d", MiB), ("5e6f7a8b", 5 * MiB // 2)]
    }
    for path, n in orphans.items():
        path.write_bytes(content[:n])

    run = runner.warm_cache(hub.endpoint, cache, "--model-path", BIG, "--no-compile")
    _assert_resumed(hub, cache, run, 5 * MiB // 2, small_files_cached=False)
    assert not any(path.exists() for path in orphans)


def test_an_unexpected_failure_still_writes_a_summary(hub: LocalHub, tmp_path: Path) -> None:
    """Not one of ours (here: the cache volume is a file): exit 1, retried by the Job, reason Failed."""
    (tmp_path / "volume").write_text("not a directory")
    log = tmp_path / "termination-log"
    command = runner.warm_cache_argv(
        tmp_path / "volume" / "cache", "--model-path", TINY, "--no-compile", termination_log=log
    )
    run = runner.run(command, runner.clean_env({"HF_ENDPOINT": hub.endpoint}), termination_log=log)
    assert run.returncode == 1, run
    assert run.summary == {
        "ok": False,
        "reason": "Failed",
        "permanent": False,
        "message": run.summary["message"],
    }
    assert run.summary["message"].startswith("NotADirectoryError: ")
    assert run.termination_message == run.summary
    assert "Traceback" in run.stderr  # the details stay in the log


def test_resolve_only_reports_pins_and_a_pinned_run_downloads_that_commit_as_the_branch(
    hub: LocalHub, tmp_path: Path
) -> None:
    """The operator resolves a moving branch once (``--resolve-only``) and pins every target's
    warm-up to that commit (``--pin``), so a commit pushed in between changes no target."""
    repo = "tiny/moving"
    first = hub.add_repo(repo, tiny_model.make_tiny_llama(tmp_path / "v1", seed=1))
    cache = tmp_path / "cache"
    resolved = runner.warm_cache(
        hub.endpoint, cache, "--model-path", repo, "--lora-paths", f"{LORA}@main", "--resolve-only"
    )
    assert resolved.returncode == 0, resolved
    lora_commit = hub.repo(LORA).branches["main"]
    assert resolved.summary["reason"] == "Resolved" and resolved.summary["commit"] == first
    assert resolved.summary["pins"] == [f"{repo}@main={first}", f"{LORA}@main={lora_commit}"]
    assert resolved.termination_message["pins"] == resolved.summary["pins"]
    assert not (cache / "hf").exists()  # nothing downloaded

    second = hub.add_repo(repo, tiny_model.make_tiny_llama(tmp_path / "v2", seed=2))
    assert second != first
    pins = [arg for pin in resolved.summary["pins"] for arg in ("--pin", pin)]
    run = runner.warm_cache(
        hub.endpoint, cache, "--model-path", repo, "--lora-paths", f"{LORA}@main", *pins, "--no-compile"
    )
    assert run.returncode == 0, run
    assert run.summary["commit"] == first
    assert (repo_dir(cache, repo) / "refs" / "main").read_text() == first  # offline servers asking for main
    assert not _snapshot(cache, repo, second).exists()

    # A pin for a revision nobody asked for, or not a commit: refused before anything is fetched.
    for bad, says in [
        (f"{repo}@v2={first}", "names no requested revision"),
        (f"{repo}@main=abc", "REPO@REVISION=COMMIT"),
    ]:
        refused = runner.warm_cache(hub.endpoint, cache, "--model-path", repo, "--pin", bad, "--no-compile")
        assert refused.returncode == 10 and refused.summary["reason"] == "InvalidOption", refused
        assert says in refused.summary["message"], refused


def test_a_hub_listing_a_name_outside_the_snapshot_is_refused_before_any_write(
    hub: LocalHub, tmp_path: Path
) -> None:
    """A hostile mirror lists ``../../…``: joined to the snapshot folder it would land outside
    the cache. The whole listing is refused (exit 10, the name quoted); nothing is written."""
    repo = "tiny/hostile"
    sha = hub.add_repo(repo, tiny_model.make_tiny_llama(tmp_path / "model", seed=4))
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(b"not weights")
    name = "../../../../../escaped.safetensors"
    hub.repo(repo).commits[sha].files[name] = HubFile.from_disk(name, evil, lfs_threshold=1 << 30)
    cache = tmp_path / "cache"
    run = runner.warm_cache(
        hub.endpoint, cache, "--model-path", repo, "--allow-patterns", "*", "--no-compile"
    )
    assert run.returncode == 10 and run.summary["reason"] == "UnsafeFileName", run
    assert name in run.summary["message"]
    assert not [p for p in tmp_path.rglob("escaped*")]
    assert not (cache / "hf").exists() or not any((cache / "hf").rglob("*.safetensors"))


def test_revisions_that_would_climb_out_of_refs_are_refused(hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for revision in ("x/../../../../../../escaped-ref", "x/.hidden", "main.lock", "a//b"):
        run = runner.warm_cache(
            hub.endpoint,
            cache,
            "--model-path",
            TINY,
            "--huggingface-model-revision",
            revision,
            "--no-compile",
        )
        assert run.returncode == 10 and run.summary["reason"] == "InvalidOption", run
        assert "git's ref rules" in run.summary["message"]
    assert not [p for p in tmp_path.rglob("escaped-ref")] and not (cache / "hf").exists()


def test_credentials_in_the_hub_url_never_reach_the_output(hub: LocalHub, tmp_path: Path) -> None:
    """A mirror URL with userinfo (HF_ENDPOINT): the hub's error quotes the URL it was asked,
    and the worker's summary and logs quote it without the userinfo."""
    secret = "hf_mwLeakCheck0123456789abcdef"
    endpoint = hub.endpoint.replace("http://", f"http://mirror-user:{secret}@")
    hub.fail_next(1, status=404, path_contains="model.safetensors")  # the error quotes the file's URL
    run = runner.warm_cache(endpoint, tmp_path / "cache", "--model-path", TINY, "--no-compile")
    assert (
        run.returncode == 10 and run.summary["reason"] == "FileNotFound" and "404" in run.summary["message"]
    ), run
    assert "***@" in run.summary["message"]  # the URL is still named, without its credentials
    for output in (run.stdout, run.stderr, run.termination_log.read_text() if run.termination_log else ""):
        assert secret not in output and "mirror-user" not in output


def test_a_reused_entry_is_checked_and_a_corrupted_blob_fetched_again(hub: LocalHub, tmp_path: Path) -> None:
    """4 KB flipped in the weights blob (same size): the next warm-up does not call it a cache
    hit, fetches that blob again (and only it) and publishes an entry whose files hash right."""
    cache = tmp_path / "cache"
    first = runner.warm_cache(hub.endpoint, cache, "--model-path", TINY, "--no-compile")
    assert first.returncode == 0, first
    blob = (_snapshot(cache, TINY, first.summary["commit"]) / "model.safetensors").resolve()
    size = blob.stat().st_size
    data = bytearray(blob.read_bytes())
    data[size // 2 : size // 2 + 4096] = bytes(b ^ 0xFF for b in data[size // 2 : size // 2 + 4096])
    blob.write_bytes(bytes(data))

    again = runner.warm_cache(hub.endpoint, cache, "--model-path", TINY, "--no-compile")
    assert again.returncode == 0 and again.summary["cache_hit"] is False, again
    [corrupt] = [p for p in again.phase_lines() if p["phase"] == "corrupt-entry"]
    assert any("model.safetensors: content differs" in problem for problem in corrupt["problems"])
    [download] = [p for p in again.phase_lines() if p["phase"] == "download"]
    assert download["fetched"] == size  # that blob, again; nothing else
    assert sha256(blob) == blob.name
    verified = runner.verify(cache, "--model-key", again.summary["model_key"], "--full")
    assert verified.returncode == 0, verified


def _on_a_small_volume(cache: Path, options: str, *argv: str) -> list[str]:
    """``argv`` run with ``cache`` a fresh tmpfs of ``options`` (in a user and mount namespace, so
    no root is needed); after it, the files left on the volume are listed to ``cache``.left."""
    script = 'mount -t tmpfs -o "$1" tmpfs "$0" || exit 97; shift; "$@"; rc=$?; find "$0" -type f > "$0.left"; exit $rc'
    return ["unshare", "-rm", "sh", "-c", script, str(cache), options, *argv]


def _small_volumes_work() -> bool:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


small_volume = pytest.mark.skipif(not _small_volumes_work(), reason="no mount namespace for a tmpfs here")


def _warm_on_a_small_volume(hub: LocalHub, tmp_path: Path, options: str) -> tuple[runner.Run, list[str]]:
    """``warm-cache`` of tiny/big (9 MB) onto a fresh tmpfs; the run and the files it left there."""
    cache, log = tmp_path / "cache", tmp_path / "log"
    cache.mkdir()
    argv = runner.warm_cache_argv(cache, "--model-path", BIG, "--no-compile", termination_log=log)
    env = runner.clean_env({"HF_ENDPOINT": hub.endpoint})
    run = runner.run(_on_a_small_volume(cache, options, *argv), env, termination_log=log)
    return run, (tmp_path / "cache.left").read_text().splitlines()


@small_volume
def test_a_volume_too_small_fails_before_the_first_byte_with_both_numbers(
    hub: LocalHub, tmp_path: Path
) -> None:
    run, left = _warm_on_a_small_volume(hub, tmp_path, "size=4m")
    assert run.returncode == 10 and run.termination_message["reason"] == "InsufficientStorage", run
    message = run.termination_message["message"]
    assert "bytes free" in message and "needs" in message, message
    assert not [r for r in hub.requests if "/resolve/" in r.path or r.host == "cdn"]  # not one byte fetched
    assert not [line for line in left if "blobs" in line]


@small_volume
def test_a_volume_running_full_mid_download_leaves_no_partial(hub: LocalHub, tmp_path: Path) -> None:
    """Bytes enough, inodes not (a tmpfs with 20): the write fails with ENOSPC half-way."""
    run, left = _warm_on_a_small_volume(hub, tmp_path, "size=64m,nr_inodes=20")
    assert run.returncode == 10 and run.termination_message["reason"] == "InsufficientStorage", run
    assert "ran full" in run.termination_message["message"]
    assert not [line for line in left if line.endswith(".incomplete")], left


def test_a_passing_hub_error_is_retried_in_the_same_process(hub: LocalHub, tmp_path: Path) -> None:
    """One 503 of the listing and one of a file: no pod restart for either (on a GPU node a new
    pod means a new schedule and maybe a new image pull)."""
    hub.fail_next(1, status=503, path_contains=f"/api/models/{TINY}")
    run = runner.warm_cache(hub.endpoint, tmp_path / "cache", "--model-path", TINY, "--no-compile")
    assert run.returncode == 0, run
    assert "retrying in 0.5 s (attempt 2 of 3)" in run.stderr


def test_a_hub_answering_a_commit_that_is_a_path_is_refused(hub: LocalHub, tmp_path: Path) -> None:
    """The commit is joined to snapshots/: a hostile mirror's ``../../x`` must not climb out."""
    repo = "tiny/hostile-sha"
    sha = hub.add_repo(repo, tiny_model.make_tiny_llama(tmp_path / "model", seed=5))
    hostile = hub.repo(repo)
    evil = "../../../../../escaped-snapshot"
    hostile.commits[evil] = dataclasses.replace(hostile.commits[sha], sha=evil)
    hostile.branches["main"] = evil
    cache = tmp_path / "cache"
    run = runner.warm_cache(hub.endpoint, cache, "--model-path", repo, "--no-compile")
    assert run.returncode == 10 and run.summary["reason"] == "UnsafeFileName", run
    assert "escaped-snapshot" in run.summary["message"]
    assert not [p for p in tmp_path.rglob("escaped-snapshot")]


def _warm_a_new_repo(hub: LocalHub, tmp_path: Path, repo: str, source: Path) -> tuple[runner.Run, Path]:
    """Publish ``source`` as ``repo`` and warm it (download only) into tmp_path/cache: the run,
    and the snapshot folder of the commit (named after it)."""
    commit = hub.add_repo(repo, source)
    run = runner.warm_cache(hub.endpoint, tmp_path / "cache", "--model-path", repo, "--no-compile")
    assert run.returncode == 0, run
    return run, _snapshot(tmp_path / "cache", repo, commit)


def test_a_repository_in_mistrals_layout_downloads_its_weights_once_and_its_own_files(
    hub: LocalHub, tmp_path: Path
) -> None:
    """Shards for transformers, ``consolidated.safetensors`` (the same weights again) for Mistral's
    format, and ``params.json``/``tekken.json``/``tokenizer.model.v3`` that Mistral-format serving reads."""
    source = tiny_model.make_tiny_llama(tmp_path / "mistral", seed=6)
    shutil.copy(source / "model.safetensors", source / "consolidated.safetensors")
    (source / "params.json").write_text(json.dumps({"dim": 64, "n_layers": 2}))
    (source / "tekken.json").write_text(json.dumps({"config": {}, "vocab": []}))
    (source / "tokenizer.model.v3").write_bytes(b"sentencepiece")
    repo = "tiny/mistral-layout"
    run, snapshot = _warm_a_new_repo(hub, tmp_path, repo, source)
    names = {p.name for p in snapshot.iterdir()}
    assert {"model.safetensors", "params.json", "tekken.json", "tokenizer.model.v3"} <= names, names
    assert "consolidated.safetensors" not in names
    weights = (source / "model.safetensors").stat().st_size
    [download] = [p for p in run.phase_lines() if p["phase"] == "download"]
    assert weights <= download["fetched"] < 2 * weights  # the weights once

    # Serving Mistral's format instead: asked for by name.
    mistral = runner.warm_cache(
        hub.endpoint,
        tmp_path / "cache2",
        "--model-path",
        repo,
        "--allow-patterns",
        "consolidated*.safetensors",
        "--no-compile",
    )
    assert mistral.returncode == 0, mistral
    assert (_snapshot(tmp_path / "cache2", repo, snapshot.name) / "consolidated.safetensors").is_file()


def test_a_sentence_transformers_repository_brings_its_pooling_and_normalisation_modules(
    hub: LocalHub, tmp_path: Path
) -> None:
    """modules.json names the modules after the transformer; their folders come with the model
    (safetensors weights of a Dense layer included, other formats not)."""
    source = tiny_model.make_tiny_llama(tmp_path / "embedder", seed=7)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (source / "modules.json").write_text(json.dumps(modules))
    (source / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    (source / "1_Pooling").mkdir()
    (source / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (source / "2_Dense").mkdir()
    (source / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 64, "out_features": 32}))
    shutil.copy(source / "model.safetensors", source / "2_Dense" / "model.safetensors")
    (source / "2_Dense" / "pytorch_model.bin").write_bytes(b"pickle")
    (source / "3_Normalize").mkdir()
    (source / "3_Normalize" / ".gitkeep").write_text("")
    _, snapshot = _warm_a_new_repo(hub, tmp_path, "tiny/embedder", source)
    got = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if not p.is_dir()}
    assert {
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
        "3_Normalize/.gitkeep",
    } <= got, got
    assert "2_Dense/pytorch_model.bin" not in got
