"""What can be checked of the images without a Docker engine: entrypoints exist as console
scripts, and the versions the Dockerfiles pin agree with pyproject.toml and the Makefile."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerfile(name: str) -> str:
    return (ROOT / "image" / name / "Dockerfile").read_text()


def arg(text: str, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", text, re.M)
    assert match, f"ARG {name} not pinned"
    return match.group(1)


def test_console_script_is_installed_and_entrypoints_use_it() -> None:
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["modelwarmup"] == "modelwarmup.cli:main" == PYPROJECT["project"]["scripts"]["modelwarmup"]
    assert 'ENTRYPOINT ["modelwarmup", "warm-cache"]' in dockerfile("worker")
    assert 'ENTRYPOINT ["modelwarmup"]' in dockerfile("operator") and 'CMD ["operator"]' in dockerfile(
        "operator"
    )


def test_versions_agree() -> None:
    version = PYPROJECT["project"]["version"]
    makefile = (ROOT / "Makefile").read_text()
    torch_pin = re.search(r"^TORCH_PIN := torch==(\S+)$", makefile, re.M)
    assert torch_pin is not None
    assert arg(dockerfile("worker"), "TORCH_VERSION") == torch_pin.group(1)
    for name in ("operator", "worker"):
        assert arg(dockerfile(name), "MODELWARMUP_VERSION") == version
    python = arg(dockerfile("operator"), "PYTHON_VERSION")
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split(".")[:2])) >= tuple(map(int, minimum.split(".")))


def test_images_run_as_non_root_from_pinned_bases() -> None:
    for name in ("operator", "worker"):
        text = dockerfile(name)
        assert re.search(r"^USER 1000:1000$", text, re.M), name
        for base in re.findall(r"^FROM (\S+)", text, re.M):
            if base.startswith("${"):
                base = arg(text, base.strip("${}"))
            assert ":" in base and not base.endswith(":latest"), f"{name}: unpinned base {base}"
    assert "AS build" in dockerfile("operator") and "AS build" in dockerfile("worker")
    instructions = [line for line in dockerfile("operator").splitlines() if not line.lstrip().startswith("#")]
    assert not any("torch" in line for line in instructions), "the operator image must not install torch"
