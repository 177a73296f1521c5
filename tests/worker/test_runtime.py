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
from modelwarmup.compilation import isa_checks, recipe
from modelwarmup.runtime import loader

settings = CompileSettings.model_validate(json.load(open(sys.argv[1]))["compile"])
model = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=getattr(torch, settings.dtype)).eval()
if sys.argv[3] == "compile":
    model = recipe.compile_for_serving(model, settings)
ids = torch.randint(0, 250, (1, 13), generator=torch.Generator().manual_seed(7))  # length 13: never compiled
with torch.no_grad():
    logits = model(input_ids=ids, use_cache=False).logits
    tokens = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
print(json.dumps({"next_token": int(logits[0, -1].argmax()), "activated": os.environ.get("MODELWARMUP_ACTIVATED", ""),
                  "tokens": tokens[0, 13:].tolist(), "stats": recipe.cache_stats(), "modelwarmup": loader.__file__,
                  "isa_checks_run": isa_checks.ran()}))
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
    """A scoring forward and then generate(): prefill and every decoding step come from the entry."""
    result, stderr = _serve(
        warmed, tmp_path, cache=warmed.cache, key=warmed.summary["model_key"], mode="compile"
    )
    assert f"entry {warmed.summary['entry_key']} matches this platform" in stderr
    assert result["activated"].startswith(str(tmp_path))
    lines = [line for line in stderr.splitlines() if line.startswith('modelwarmup: {"compile_cache"')]
    assert lines, stderr[-4000:]
    stats = json.loads(lines[0].removeprefix("modelwarmup: "))["compile_cache"]
    assert stats["fxgraph_cache_hit"] > 0 and stats["fxgraph_cache_miss"] == 0, stats
    # The scoring graph, then prefill, the first step and the later steps of generate().
    assert result["stats"]["fxgraph_cache_hit"] == 4 and result["stats"]["fxgraph_cache_miss"] == 0, result
    assert "WARNING" not in stderr
    # The worker saved Inductor's ISA checks' answers; the server took them instead of checking.
    assert json.loads((warmed.entry / "isa_checks.json").read_text())["answers"]
    assert result["isa_checks_run"] == 0, result
    eager, _ = _serve(warmed, tmp_path, cache=warmed.cache, key="tiny--llama-0000000000000000", mode="eager")
    assert result["tokens"] == eager["tokens"] and len(result["tokens"]) == 12


def _guide_snippet() -> str:
    guide = (runner.ROOT / "docs" / "guide.md").read_text()
    section = guide[guide.index("In a server of your own, call it explicitly:") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


GUIDE = """
import json, sys, torch
from pathlib import Path
from transformers import AutoModelForCausalLM
from modelwarmup.compilation import recipe

entry_dir = Path(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype="auto").eval()
ids = torch.randint(0, 250, (1, 21), generator=torch.Generator().manual_seed(3))
inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
with torch.no_grad():
    reference = model.generate(**inputs, max_new_tokens=64, do_sample=False)
    exec(sys.argv[3])
print(json.dumps({"stats": recipe.cache_stats(), "same": output.tolist() == reference.tolist(), "aoti": aoti is None}))
"""


def test_the_guides_server_snippet_runs_as_written_and_generates_warm(warmed: Warmed, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", GUIDE, str(warmed.entry), TINY, _guide_snippet()],
        env=runner.clean_env(
            {"HF_HOME": str(warmed.cache / "hf"), "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
        ),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["stats"]["fxgraph_cache_miss"] == 0 and result["stats"]["fxgraph_cache_hit"] == 3, result
    assert result["same"] and result["aoti"]  # the tokens of eager; this entry has no AOTI package


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


def _flip(path: Path, at: int = 64, count: int = 16) -> None:
    """Flip ``count`` bytes in place: the size stays, the content does not."""
    data = bytearray(path.read_bytes())
    at = min(at, max(0, len(data) - count))
    for i in range(at, at + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupted_kernel_is_found_by_verify_and_the_server_starts_cold_instead_of_crashing(
    warmed: Warmed, tmp_path: Path
) -> None:
    cache = warmed.copy(tmp_path / "cache")
    entry = cache / "compiled" / warmed.summary["entry_key"]
    kernels = sorted((entry / "inductor").rglob("*.so"))
    assert kernels, sorted(p.name for p in (entry / "inductor").rglob("*"))
    _flip(kernels[0])
    relative = kernels[0].relative_to(entry).as_posix()

    verdict = runner.verify(cache, "--model-key", warmed.summary["model_key"], "--devices", "cpu")
    assert verdict.returncode == 23, verdict
    assert '"verify": "Corrupt"' in verdict.stderr and relative in verdict.stderr

    result, stderr = _serve(warmed, tmp_path, cache=cache, key=warmed.summary["model_key"], mode="compile")
    assert "modelwarmup: WARNING: CorruptEntry" in stderr and relative in stderr
    assert "content differs from its recorded sha256" in stderr and "starting cold" in stderr
    assert result["activated"] == ""
    eager, _ = _serve(warmed, tmp_path, cache=warmed.cache, key=warmed.summary["model_key"], mode="eager")
    assert result["next_token"] == eager["next_token"]  # compiled cold, and right


def test_missing_resized_or_changed_weights_are_named_by_verify(warmed: Warmed, tmp_path: Path) -> None:
    key = warmed.summary["model_key"]
    for case in ("deleted", "truncated", "flipped"):
        cache = warmed.copy(tmp_path / case)
        snapshot = next((cache / "hf" / "hub").glob("models--tiny--llama/snapshots/*"))
        blob = (snapshot / "model.safetensors").resolve()
        if case == "deleted":
            blob.unlink()
        elif case == "truncated":
            blob.write_bytes(blob.read_bytes()[:-4096])
        else:
            _flip(blob, at=blob.stat().st_size // 2, count=4096)
        run = runner.verify(cache, "--model-key", key, "--devices", "cpu")
        full = runner.verify(cache, "--model-key", key, "--devices", "cpu", "--full")
        said = {
            "deleted": "missing",
            "truncated": "bytes, recorded",
            "flipped": "differs from the hub's digest",
        }[case]
        if case == "flipped":  # same size: only the digests tell, and those cost a read of every weight
            assert run.returncode == 0, run
        else:
            assert run.returncode == 23 and said in run.stderr and "model.safetensors" in run.stderr, run
        assert full.returncode == 23 and said in full.stderr and "model.safetensors" in full.stderr, full
