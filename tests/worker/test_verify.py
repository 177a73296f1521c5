"""`modelwarmup verify`, as a serving pod's init container runs it: match, other platform, partial, missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from . import runner
from .conftest import TINY, Warmed


def _verdict(run: runner.Run) -> dict[str, str]:
    stream = run.stdout if run.returncode == 0 and "WARNING" not in run.stderr else run.stderr
    parsed: dict[str, str] = json.loads(stream.strip().splitlines()[0])
    return parsed


def _copy_compiled(warmed: Warmed, dest: Path) -> Path:
    """Only compiled/ (verify never reads the HF cache) of the warmed cache."""
    shutil.copytree(warmed.cache / "compiled", dest / "compiled")
    return dest


@pytest.mark.slow
def test_a_complete_entry_for_this_platform_matches(warmed: Warmed) -> None:
    # As the operator's init container calls it: the model key and the repo.
    run = runner.verify(
        warmed.cache, "--model-key", warmed.summary["model_key"], "--model-path", TINY, "--devices", "cpu"
    )
    assert run.returncode == 0, run
    verdict = _verdict(run)
    assert verdict["verify"] == "Match" and verdict["entry"] == str(warmed.entry)


@pytest.mark.slow
def test_an_entry_for_another_cpu_is_reported_by_what_differs(warmed: Warmed, tmp_path: Path) -> None:
    cache = _copy_compiled(warmed, tmp_path / "cache")
    manifest_path = cache / "compiled" / warmed.summary["entry_key"] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    built_isa = manifest["platform"]["cpu_vec_isa"]
    manifest["platform"]["cpu_vec_isa"] = "VecOtherCPU"
    manifest_path.write_text(json.dumps(manifest))

    run = runner.verify(cache, "--model-path", TINY, "--devices", "cpu")
    assert run.returncode == 22, run
    verdict = _verdict(run)
    assert verdict["verify"] == "OtherPlatform"
    assert f"cpu_vec_isa: built 'VecOtherCPU', here {built_isa!r}" in verdict["message"]

    lenient = runner.verify(cache, "--model-path", TINY, "--devices", "cpu", "--warn-only")
    assert lenient.returncode == 0, lenient
    assert _verdict(lenient)["verify"] == "OtherPlatform"
    assert "WARNING" in lenient.stderr and "start cold" in lenient.stderr


@pytest.mark.slow
def test_an_entry_without_manifest_is_incomplete(warmed: Warmed, tmp_path: Path) -> None:
    cache = _copy_compiled(warmed, tmp_path / "cache")
    (cache / "compiled" / warmed.summary["entry_key"] / "manifest.json").unlink()
    run = runner.verify(cache, "--model-path", TINY, "--devices", "cpu")
    assert run.returncode == 21, run
    assert _verdict(run)["verify"] == "Incomplete"


def test_no_entry_of_this_model_is_missing(tmp_path: Path) -> None:
    # Another model's half-built entry does not make this one "incomplete".
    (tmp_path / "compiled" / "other--model-0123456789abcdef" / ".0123456789abcdef.5a5a5a5a5a5a.tmp").mkdir(
        parents=True
    )
    run = runner.verify(tmp_path, "--model-path", TINY, "--devices", "cpu")
    assert run.returncode == 20, run
    assert _verdict(run)["verify"] == "Missing"
