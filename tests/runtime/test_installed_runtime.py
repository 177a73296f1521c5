"""What the init container installs into a serving pod runs on the standard library and torch alone.

Serving images are other people's: they may lack pydantic, kopf or a Kubernetes client. A serving
process started from the installed copy, with those made unimportable, decides warm or cold and
never crashes: here there is no entry, so it starts cold with one warning line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from modelwarmup.contracts import wiring
from modelwarmup.runtime import autoload

# Packages a serving image may lack; stand-ins that fail to import shadow the installed ones.
ABSENT = ("pydantic", "kopf", "kubernetes", "huggingface_hub", "yaml")
SERVER = """
import torch  # the server's own

compiled = torch.compile(lambda x: x * 2)
print(int(compiled(torch.ones(3)).sum()))
import modelwarmup
print(modelwarmup.__file__)
"""


def test_a_serving_process_without_pydantic_or_kopf_starts_cold_with_a_warning(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    autoload.install_runtime(runtime)
    installed = {p.name for p in (runtime / "modelwarmup").iterdir()}
    assert {"contracts", "cache", "compilation", "runtime", "errors.py"} <= installed
    assert not installed & {"controller", "worker", "api", "cli.py"}

    absent = tmp_path / "absent"
    for name in ABSENT:
        (absent / name).mkdir(parents=True)
        (absent / name / "__init__.py").write_text(f'raise ModuleNotFoundError("No module named {name!r}")\n')
    cache = tmp_path / "cache"
    (cache / "compiled").mkdir(parents=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MODELWARMUP_")},
        "PYTHONPATH": f"{absent}:{runtime}",  # sitecustomize runs at start, with these absent
        wiring.ENV_AUTOLOAD: "1",
        wiring.ENV_CACHE_DIR: str(cache),
        wiring.ENV_MODEL_KEY: "org--model-0123456789abcdef",
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
    }
    result = subprocess.run(
        [sys.executable, "-c", SERVER], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[0] == "6" and lines[1].startswith(str(runtime)), result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("modelwarmup:")]
    assert warnings == [
        f"modelwarmup: WARNING: no complete entry for org--model-0123456789abcdef in {cache}; "
        "starting cold (the server compiles on its own)"
    ], result.stderr
    assert "Traceback" not in result.stderr
