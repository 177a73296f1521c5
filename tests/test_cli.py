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


def test_validate_reports_every_unreadable_file_and_goes_on(tmp_path: Path) -> None:
    """One line per problem, no traceback; the files after a bad one are still checked."""
    minimal = (ROOT / "examples" / "minimal.yaml").read_text()
    files = {
        "quoted.yaml": minimal + '  compile:\n    maxLength: "2048"\n',  # the API server wants a number
        "broken.yaml": "spec: [\n",
        "latin1.yaml": "",
        "configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (tmp_path / "folder").mkdir()
    paths = [tmp_path / name for name in files] + [tmp_path / "folder", tmp_path / "missing.yaml"]
    result = run("validate", *map(str, paths), str(ROOT / "examples" / "minimal.yaml"))
    assert result.returncode == 10 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    expected = {
        "quoted.yaml": "spec.compile.maxLength: Input should be a valid integer",
        "broken.yaml": "not valid YAML at line 2",
        "latin1.yaml": "not UTF-8 text",
        "configmap.yaml": "no ModelWarmup in it",
        "folder": "is a directory",
        "missing.yaml": "no such file",
    }
    for name, says in expected.items():
        assert any(line.startswith(f"{tmp_path / name}: ") and says in line for line in lines), (name, lines)
    assert result.stdout.strip().endswith("minimal.yaml: qwen-small: valid")  # checked after all of them
