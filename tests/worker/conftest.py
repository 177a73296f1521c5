"""Fixtures of the worker's end-to-end tests: a local hub with tiny repos, and one warmed cache.

* ``hub`` — the session's LocalHub, with its faults reset and its request log cleared for the test.
  Repos: ``tiny/llama`` (the tiny Llama plus files serving must not download), ``tiny/draft``,
  ``tiny/lora`` (an adapter for tiny/llama), ``tiny/gated`` (needs :data:`TOKEN`) and ``tiny/big``
  (about 9 MB of weights, for resume tests).
* ``warmed`` — ``tiny/llama`` compiled once for the session by a real worker process (CPU, the
  compile defaults, a few server-only options); tests that change the cache work on a copy of it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.devkit.hub import LocalHub
from tests.devkit.tiny_model import make_tiny_llama, make_tiny_lora

from . import runner

TINY = "tiny/llama"
DRAFT = "tiny/draft"
LORA = "tiny/lora"
GATED = "tiny/gated"
BIG = "tiny/big"
# Looks like a real token, so that a leak would be found wherever it ended up.
TOKEN = "hf_mwTestSecret7f3c9a1e5b2d8c4f6a0e"
# Files of tiny/llama that serving does not need (a second copy of the weights, docs, other formats).
UNWANTED = ("README.md", "pytorch_model.bin", "onnx/model.onnx", "original/consolidated.safetensors")
# The compile defaults (dtype auto, maxLength 2048) on purpose: `warmed` shows they fit the tiny model.
COMPILE = ("--devices", "cpu")
SERVER_OPTIONS = ("--enable-prefix-caching", "--max-num-steps", "4", "--served-model-name", "tiny")
MiB = 1024 * 1024


@dataclass(frozen=True)
class Warmed:
    """A cache that one worker run filled with a compiled tiny/llama."""

    cache: Path
    run: runner.Run
    args: tuple[str, ...]

    @property
    def summary(self) -> dict[str, Any]:
        return self.run.summary

    @property
    def entry(self) -> Path:
        return self.cache / "compiled" / self.summary["entry_key"]

    @property
    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.entry / "manifest.json").read_text())
        return data

    def copy(self, dest: Path) -> Path:
        """A private copy of the whole cache volume (HF cache symlinks kept relative)."""
        shutil.copytree(self.cache, dest, symlinks=True)
        return dest


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def repo_dir(cache: Path, repo: str) -> Path:
    return cache / "hf" / "hub" / ("models--" + repo.replace("/", "--"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    (repo / "README.md").write_text("# tiny llama\n")
    (repo / "pytorch_model.bin").write_bytes(b"\0" * 4096)
    for path in ("onnx/model.onnx", "original/consolidated.safetensors"):
        (repo / path).parent.mkdir(exist_ok=True)
        (repo / path).write_bytes(b"\1" * 4096)
    return repo


@pytest.fixture(scope="session")
def big_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights of about 9 MB: several of the worker's 1 MiB download chunks."""
    return make_tiny_llama(tmp_path_factory.mktemp("big-llama"), hidden_size=256, num_layers=4, seed=3)


@pytest.fixture(scope="session")
def hub_server(tiny_dir: Path, big_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    draft = make_tiny_llama(tmp_path_factory.mktemp("draft"), seed=1, num_layers=1)
    lora = make_tiny_lora(tmp_path_factory.mktemp("lora"), tiny_dir, base_model_id=TINY)
    gated = make_tiny_llama(tmp_path_factory.mktemp("gated"), seed=2)
    with LocalHub() as hub:
        hub.add_repo(TINY, tiny_dir, tags=["v1"])
        hub.add_repo(DRAFT, draft)
        hub.add_repo(LORA, lora)
        hub.add_repo(GATED, gated, required_token=TOKEN)
        hub.add_repo(BIG, big_dir)
        yield hub


@pytest.fixture
def hub(hub_server: LocalHub) -> LocalHub:
    hub_server.reset_faults()
    hub_server.clear_log()
    return hub_server


@pytest.fixture(scope="session")
def warmed(hub_server: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Warmed:
    """tiny/llama compiled once (about 15 s on 2 cores) for every test that only reads the result."""
    hub_server.reset_faults()
    cache = tmp_path_factory.mktemp("warmed") / "cache"
    args = ("--model-path", TINY, *COMPILE, *SERVER_OPTIONS)
    run = runner.warm_cache(hub_server.endpoint, cache, *args)
    assert run.returncode == 0, run
    assert run.summary["cache_hit"] is False
    return Warmed(cache=cache, run=run, args=args)
