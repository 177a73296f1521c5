"""The `modelwarmup` command's shared surface: help, version, CRD and manifest validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from modelwarmup import __version__, crdgen

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelwarmup.cli", *args], capture_output=True, text=True)


def test_version_and_help() -> None:
    assert run("--version").stdout.strip() == f"modelwarmup {__version__}"
    help_text = run("--help").stdout
    assert "crd" in help_text and "validate" in help_text


def test_crd_prints_the_generated_crd() -> None:
    assert run("crd").stdout == crdgen.render_crd()


def test_validate_accepts_examples_and_names_bad_fields(tmp_path: Path) -> None:
    ok = run("validate", *map(str, sorted((ROOT / "examples").glob("*.yaml"))))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "examples" / "minimal.yaml").read_text().replace("devices: cpu", "devices: tpu"))
    result = run("validate", str(bad))
    assert result.returncode == 10
    assert "spec.targets[0].devices: String should match pattern" in result.stderr
