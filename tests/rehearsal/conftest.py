"""Fixtures of the rehearsal tests: a local hub holding a tiny Llama that vLLM's CPU build runs.

vLLM's CPU attention takes head sizes of 32 and up (16 fails with "Unsupported CPU attention
configuration"), so the model is the tiny Llama with hidden size 128 and two heads of 64.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.devkit.hub import LocalHub
from tests.devkit.tiny_model import make_tiny_llama

TINY = "tiny/vllm-llama"


@pytest.fixture(scope="session")
def rehearsal_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    source = make_tiny_llama(
        tmp_path_factory.mktemp("vllm-llama"), hidden_size=128, num_heads=2, num_kv_heads=2
    )
    with LocalHub() as hub:
        hub.add_repo(TINY, source)
        yield hub


@pytest.fixture
def hub(rehearsal_hub: LocalHub) -> LocalHub:
    return rehearsal_hub


def entry_dir(cache: Path, summary: dict[str, object]) -> Path:
    return cache / str(summary["entry_key"])
