"""The env-var switch in a serving process we don't control: warm from the entry, or cold with a warning.

The serving process is a fresh interpreter whose only link to modelwarmup is the environment the
operator sets (MODELWARMUP_AUTOLOAD, MODELWARMUP_CACHE_DIR, MODELWARMUP_MODEL_KEY) and a
PYTHONPATH entry holding what ``install_runtime`` wrote: the package copy and its sitecustomize.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelwarmup.runtime import autoload

from . import runner
from .conftest import TINY, Warmed

pytestmark = pytest.mark.slow

SERVE = """
import json, os, sys, torch
from transformers import AutoModelForCausalLM
from modelwarmup.compilation.settings import CompileSettings
from modelwarmup.compilation import recipe
from modelwarmup.runtime import loader

settings = CompileSettings.model_validate(json.load(open(sys.argv[1]))["compile"])
model = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=getattr(torch, settings.dtype)).eval()
if sys.argv[3] == "compile":
    model = recipe.compile_for_serving(model, settings)
ids = torch.randint(0, 250, (1, 13), generator=torch.Generator().manual_seed(7))  # length 13: never compiled
with torch.no_grad():
    logits = model(input_ids=ids, use_cache=False).logits
print(json.dumps({"next_token": int(logits[0, -1].argmax()), "activated": os.environ.get("MODELWARMUP_ACTIVATED", ""),
                  "modelwarmup": loader.__file__}))
"""


def _serve(warmed: Warmed, tmp_path: Path, *, cache: Path, key: str, mode: str) -> tuple[dict[str, Any], str]:
    runtime = tmp_path / "runtime"
    if not runtime.exists():
        autoload.install_runtime(runtime)
    env = runner.clean_env(
        {
            "PYTHONPATH": str(runtime),
            "MODELWARMUP_AUTOLOAD": "1",
            "MODELWARMUP_CACHE_DIR": str(cache),
            "MODELWARMUP_MODEL_KEY": key,
            "HF_HOME": str(cache / "hf"),
            "HF_HUB_OFFLINE": "1",
            "TMPDIR": str(tmp_path),  # the private Inductor copy lands here
        }
    )
    manifest = warmed.entry / "manifest.json"
    done = subprocess.run(
        [sys.executable, "-c", SERVE, str(manifest), TINY, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modelwarmup"].startswith(str(runtime)), result  # the installed copy, not this checkout
    return result, done.stderr


def test_autoload_serves_a_new_length_from_the_warmed_entry(warmed: Warmed, tmp_path: Path) -> None:
    result, stderr = _serve(
        warmed, tmp_path, cache=warmed.cache, key=warmed.summary["model_key"], mode="compile"
    )
    assert f"entry {warmed.summary['entry_key']} matches this platform" in stderr
    assert result["activated"].startswith(str(tmp_path))
    lines = [line for line in stderr.splitlines() if line.startswith('modelwarmup: {"compile_cache"')]
    assert lines, stderr[-4000:]
    stats = json.loads(lines[0].removeprefix("modelwarmup: "))["compile_cache"]
    assert stats["fxgraph_cache_hit"] > 0 and stats["fxgraph_cache_miss"] == 0, stats
    assert "WARNING" not in stderr


def test_autoload_without_an_entry_warns_and_serves_cold(warmed: Warmed, tmp_path: Path) -> None:
    result, stderr = _serve(
        warmed, tmp_path, cache=warmed.cache, key="tiny--llama-0000000000000000", mode="eager"
    )
    assert "modelwarmup: WARNING: no complete entry for tiny--llama-0000000000000000" in stderr
    assert "starting cold" in stderr and result["activated"] == ""
    assert stderr.count("modelwarmup: WARNING") == 1  # helper processes do not repeat it


def test_autoload_never_uses_another_platforms_entry(warmed: Warmed, tmp_path: Path) -> None:
    cache = warmed.copy(tmp_path / "cache")
    model_dir = cache / "compiled" / warmed.summary["model_key"]
    other = model_dir / "0123456789abcdef"
    shutil.move(model_dir / warmed.summary["platform_key"], other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["platform"]["num_threads"] = "64"
    (other / "manifest.json").write_text(json.dumps(manifest))

    result, stderr = _serve(warmed, tmp_path, cache=cache, key=warmed.summary["model_key"], mode="eager")
    assert "modelwarmup: WARNING: no entry for this platform" in stderr
    assert "0123456789abcdef differs in num_threads: built '64'" in stderr
    assert result["activated"] == ""
