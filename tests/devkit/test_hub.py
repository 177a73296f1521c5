"""The local hub against the real ``huggingface_hub`` client.

Besides checking the server, these tests pin down client behaviour the worker relies on (resume,
checksums); if a ``huggingface_hub`` upgrade changes it, they say so.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx2
import pytest
from huggingface_hub import HfApi, constants, file_download, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import _http

from tests.devkit.hub import LocalHub
from tests.devkit.hub_repo import git_blob_sha1
from tests.devkit.tiny_model import make_tiny_llama

REPO = "devkit/tiny-llama"
WEIGHTS = "model.safetensors"
MiB = 1024 * 1024
CHUNK = constants.DOWNLOAD_CHUNK_SIZE  # the client keeps this much in memory before writing


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 12 MiB weights file: bigger than the client's 10 MiB in-memory chunk."""
    d = tmp_path_factory.mktemp("big")
    (d / "big.safetensors").write_bytes(hashlib.sha256(b"x").digest() * (12 * MiB // 32))
    return d


@pytest.fixture(autouse=True)
def _client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the environment says: online, no Xet, no telemetry, no stored token, no backoff sleeps."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    no_sleep = types.SimpleNamespace(sleep=lambda seconds: None)
    monkeypatch.setattr(file_download, "time", no_sleep)
    monkeypatch.setattr(_http, "time", no_sleep)


@pytest.fixture
def hub(tiny_dir: Path) -> Iterator[LocalHub]:
    with LocalHub() as hub:
        hub.add_repo(REPO, tiny_dir, tags=["v1"])
        yield hub


def _sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _download(
    hub: LocalHub, cache: Path, filename: str = WEIGHTS, repo: str = REPO, *,
    revision: str | None = None, token: str | bool = False,
) -> str:  # fmt: skip
    return hf_hub_download(
        repo, filename, revision=revision, cache_dir=cache, endpoint=hub.endpoint, token=token
    )


def test_snapshot_download_with_allow_patterns(hub: LocalHub, tiny_dir: Path, tmp_path: Path) -> None:
    path = snapshot_download(
        REPO,
        cache_dir=tmp_path,
        endpoint=hub.endpoint,
        token=False,
        allow_patterns=["*.json", "*.safetensors"],
    )
    got = sorted(p.name for p in Path(path).iterdir())
    want = sorted(p.name for p in tiny_dir.iterdir() if p.suffix in (".json", ".safetensors"))
    assert got == want and "chat_template.jinja" not in got
    for name in got:
        assert (Path(path) / name).read_bytes() == (tiny_dir / name).read_bytes()
    assert Path(path).name == hub.repo(REPO).branches["main"]
    resolved = [r.path for r in hub.requests if "/resolve/" in r.path]
    assert not any(p.endswith("chat_template.jinja") for p in resolved)


def test_warmed_cache_loads_offline_with_transformers(hub: LocalHub, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    snapshot_download(REPO, cache_dir=tmp_path, endpoint=hub.endpoint, token=False)
    hub.clear_log()
    model = AutoModelForCausalLM.from_pretrained(REPO, cache_dir=tmp_path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(REPO, cache_dir=tmp_path, local_files_only=True)
    assert model(**tokenizer("hi", return_tensors="pt")).logits.shape[-1] == len(tokenizer)
    assert hub.request_count == 0


def test_revisions_resolve_by_branch_tag_and_sha(hub: LocalHub, tiny_dir: Path, tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    shutil.copytree(tiny_dir, v2)
    (v2 / "config.json").write_text(json.dumps({**json.loads((v2 / "config.json").read_text()), "v": 2}))
    first = hub.repo(REPO).branches["main"]
    second = hub.add_repo(REPO, v2, tags=["v2"])
    assert len({first, second}) == 2 and all(len(s) == 40 for s in (first, second))
    api = HfApi(endpoint=hub.endpoint, token=False)
    for revision, want in [(None, second), ("main", second), ("v1", first), ("v2", second),
                           (first, first), (first[:10], first)]:  # fmt: skip
        assert api.model_info(REPO, revision=revision).sha == want, revision
    cache = tmp_path / "cache"
    assert json.loads(Path(_download(hub, cache, "config.json")).read_text())["v"] == 2
    assert "v" not in json.loads(Path(_download(hub, cache, "config.json", revision="v1")).read_text())
    assert (cache / "models--devkit--tiny-llama" / "refs" / "v1").read_text() == first
    refs = api.list_repo_refs(REPO)
    assert {(b.name, b.target_commit) for b in refs.branches} == {("main", second)}
    assert {(t.name, t.target_commit) for t in refs.tags} == {("v1", first), ("v2", second)}


def test_file_metadata_matches_real_hub_conventions(hub: LocalHub, tiny_dir: Path) -> None:
    api = HfApi(endpoint=hub.endpoint, token=False)
    siblings = {s.rfilename: s for s in api.model_info(REPO, files_metadata=True).siblings or []}
    assert set(siblings) == {p.name for p in tiny_dir.iterdir()}
    weights = siblings[WEIGHTS]
    assert weights.lfs is not None
    assert weights.lfs.sha256 == _sha256(tiny_dir / WEIGHTS)
    assert weights.size == weights.lfs.size == (tiny_dir / WEIGHTS).stat().st_size
    config = siblings["config.json"]
    assert config.lfs is None and config.blob_id == git_blob_sha1((tiny_dir / "config.json").read_bytes())
    tree = {f.path: f for f in api.list_repo_tree(REPO, recursive=True) if isinstance(f, RepoFile)}
    tree_lfs = tree[WEIGHTS].lfs
    assert tree_lfs is not None and tree_lfs.sha256 == weights.lfs.sha256
    assert sorted(api.list_repo_files(REPO)) == sorted(siblings)
    head = httpx2.head(f"{hub.endpoint}/{REPO}/resolve/main/{WEIGHTS}")
    assert head.status_code == 302 and head.headers["Location"].startswith(hub.cdn_endpoint)
    assert head.headers["X-Linked-Etag"] == f'"{weights.lfs.sha256}"'
    assert head.headers["X-Linked-Size"] == str(weights.size)
    assert head.headers["X-Repo-Commit"] == hub.repo(REPO).branches["main"]


def test_gated_repo_needs_the_token(hub: LocalHub, tiny_dir: Path, tmp_path: Path) -> None:
    hub.add_repo("org/gated", tiny_dir, required_token="hf_secret")
    api = HfApi(endpoint=hub.endpoint, token=False)
    assert api.model_info("org/gated").gated == "manual"  # metadata stays public, like the real hub
    with pytest.raises(GatedRepoError) as no_token:
        _download(hub, tmp_path, "config.json", repo="org/gated")
    assert no_token.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as wrong_token:
        _download(hub, tmp_path, "config.json", repo="org/gated", token="hf_wrong")
    assert wrong_token.value.response.status_code == 403
    path = _download(hub, tmp_path, repo="org/gated", token="hf_secret")
    assert _sha256(path) == _sha256(tiny_dir / WEIGHTS)
    cdn = [r for r in hub.requests if r.host == "cdn"]
    assert cdn and not any(r.authorization for r in cdn)  # the token stays on the hub origin


@pytest.mark.parametrize(
    ("repo", "revision", "filename", "error"),
    [
        ("org/private", None, "config.json", RepositoryNotFoundError),
        ("org/missing", None, "config.json", RepositoryNotFoundError),
        (REPO, "no-such-branch", "config.json", RevisionNotFoundError),
        (REPO, None, "no-such-file.json", RemoteEntryNotFoundError),
    ],
)
def test_errors_map_to_client_exceptions(
    hub: LocalHub, tiny_dir: Path, tmp_path: Path, repo: str, revision: str | None, filename: str,
    error: type[Exception],
) -> None:  # fmt: skip
    hub.add_repo("org/private", tiny_dir, required_token="hf_secret", access="private")
    with pytest.raises(error) as raised:
        _download(hub, tmp_path, filename, repo=repo, revision=revision)
    assert type(raised.value) is error  # GatedRepoError subclasses RepositoryNotFoundError
    if filename == "config.json":
        with pytest.raises(error):
            HfApi(endpoint=hub.endpoint, token=False).model_info(repo, revision=revision)


def test_server_errors(hub: LocalHub, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.endpoint, token=False)
    hub.fail_next(1, status=503)
    with pytest.raises(HfHubHTTPError) as raised:
        api.model_info(REPO)  # model_info does not retry
    assert raised.value.response.status_code == 503
    hub.fail_next(2, status=500, path_contains="/resolve/")
    assert _sha256(_download(hub, tmp_path, "config.json"))  # hf_hub_download retries its HEAD
    assert [r.status for r in hub.requests if "/resolve/" in r.path][:3] == [500, 500, 200]


def test_range_requests(hub: LocalHub, tiny_dir: Path) -> None:
    data = (tiny_dir / WEIGHTS).read_bytes()
    url = f"{hub.endpoint}/{REPO}/resolve/main/{WEIGHTS}"
    for header, want in [("bytes=100-", data[100:]), ("bytes=10-19", data[10:20]), ("bytes=-7", data[-7:])]:
        r = httpx2.get(url, headers={"Range": header}, follow_redirects=True)
        assert (r.status_code, r.content) == (206, want), header
        first = len(data) - len(want) if header.startswith("bytes=-") else int(header[6:].split("-")[0])
        assert r.headers["Content-Range"] == f"bytes {first}-{first + len(want) - 1}/{len(data)}"
    r = httpx2.get(url, headers={"Range": f"bytes={len(data)}-"}, follow_redirects=True)
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    small = httpx2.get(f"{hub.endpoint}/{REPO}/resolve/main/config.json", headers={"Range": "bytes=0-1"})
    assert (small.status_code, small.content) == (206, b"{\n")


def test_cut_connection_makes_client_raise(hub: LocalHub, tmp_path: Path) -> None:
    hub.cut_after(WEIGHTS, 1000, times=6)  # first try + the client's 5 in-process retries
    with pytest.raises(httpx2.RemoteProtocolError):
        _download(hub, tmp_path)
    gets = [r for r in hub.requests if r.method == "GET"]
    assert len(gets) == 6 and all(r.range is None for r in gets)  # < 10 MiB kept: nothing to resume
    assert not list((tmp_path / "models--devkit--tiny-llama" / "blobs").iterdir())  # partial deleted


def test_client_resumes_in_process_only_from_whole_chunks(
    hub: LocalHub, big_dir: Path, tmp_path: Path
) -> None:
    hub.add_repo("org/big", big_dir)
    hub.cut_after("big.safetensors", 11 * MiB)
    path = _download(hub, tmp_path, "big.safetensors", repo="org/big")
    assert _sha256(path) == _sha256(big_dir / "big.safetensors")
    assert [r.range for r in hub.requests if r.method == "GET"] == [None, f"bytes={CHUNK}-"]


def test_client_does_not_resume_across_processes(hub: LocalHub, big_dir: Path, tmp_path: Path) -> None:
    hub.add_repo("org/big", big_dir)
    hub.cut_after("big.safetensors", 11 * MiB, stall=True)
    code = (
        "import sys; from huggingface_hub import hf_hub_download\n"
        "hf_hub_download('org/big', 'big.safetensors', cache_dir=sys.argv[1], endpoint=sys.argv[2], token=False)"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    worker = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), hub.endpoint], env=env)
    blobs = tmp_path / "models--org--big" / "blobs"
    deadline = time.monotonic() + 30
    while not [p for p in blobs.glob("*.incomplete") if p.stat().st_size == CHUNK]:
        assert time.monotonic() < deadline and worker.poll() is None
        time.sleep(0.02)
    worker.kill()
    worker.wait()
    (orphan,) = blobs.glob("*.incomplete")
    sha = _sha256(big_dir / "big.safetensors")
    assert orphan.name.startswith(f"{sha}.") and orphan.name.count(".") == 2  # <sha256>.<8 hex>.incomplete
    hub.clear_log()
    _download(hub, tmp_path, "big.safetensors", repo="org/big")
    assert [r.range for r in hub.requests if r.method == "GET"] == [None]  # from zero
    assert orphan.exists() and (blobs / sha).stat().st_size == 12 * MiB  # old partial left behind


def test_client_adopts_a_preseeded_blob_without_downloading(
    hub: LocalHub, tiny_dir: Path, tmp_path: Path
) -> None:
    sha = _sha256(tiny_dir / WEIGHTS)
    blob = tmp_path / "models--devkit--tiny-llama" / "blobs" / sha
    blob.parent.mkdir(parents=True)
    shutil.copyfile(tiny_dir / WEIGHTS, blob)
    path = Path(_download(hub, tmp_path))
    assert path.is_symlink() and path.resolve() == blob.resolve()
    assert [(r.method, r.status) for r in hub.requests] == [("HEAD", 302)]


def test_corrupted_bytes_pass_the_client_unnoticed(hub: LocalHub, tiny_dir: Path, tmp_path: Path) -> None:
    hub.corrupt(WEIGHTS)
    path = _download(hub, tmp_path)
    expected = _sha256(tiny_dir / WEIGHTS)
    assert _sha256(path) != expected and Path(path).resolve().name == expected  # poisoned blob
    verification = HfApi(endpoint=hub.endpoint, token=False).verify_repo_checksums(REPO, cache_dir=tmp_path)
    assert [m["path"] for m in verification.mismatches] == [WEIGHTS]


def test_async_context_manager(tiny_dir: Path) -> None:
    async def scenario() -> None:
        async with LocalHub(lfs_redirect=False) as hub, aiohttp.ClientSession() as session:
            sha = hub.add_repo(REPO, tiny_dir)
            async with session.get(f"{hub.endpoint}/api/models/{REPO}/revision/main") as r:
                assert (await r.json())["sha"] == sha
            async with session.head(f"{hub.endpoint}/{REPO}/resolve/{sha}/{WEIGHTS}") as r:
                assert r.status == 200 and r.headers["ETag"] == f'"{_sha256(tiny_dir / WEIGHTS)}"'

    asyncio.run(scenario())


def test_command_line_entrypoint(tiny_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.devkit.hub", "--repo", f"{REPO}={tiny_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        endpoint = lines[1].strip().removeprefix("HF_ENDPOINT=")
        sha = lines[0].split("main=")[1].split()[0]
        assert HfApi(endpoint=endpoint, token=False).model_info(REPO).sha == sha
    finally:
        proc.terminate()
        proc.wait(timeout=10)
