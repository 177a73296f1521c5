"""Start a serving pod on this host, from a Deployment's pod template as the operator patched it.

What a node would do with one replica: run the init containers (the operator's ``modelwarmup
verify --install-runtime``) with their volumes mapped to host folders, then the serving container
with its environment (``HF_HOME``, ``HF_HUB_OFFLINE``, ``MODELWARMUP_*``, ``PYTHONPATH`` to the
installed runtime loader), paths rewritten to the host like the kubelet does for Jobs
(:class:`tests.k8s.kubelet.Sandbox`). The serving image is not ours, so its command is replaced by
``serve_tiny.py``, a stand-in server that compiles the model as modelwarmup does and answers once.

:func:`run_cold` starts the same program without the wiring: weights from the same cache, but an
empty Inductor cache, as a pod that was never warmed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.k8s import kubelet
from tests.k8s.client import KubeClient
from tests.k8s.kubelet import Sandbox

PROGRAM = Path(__file__).with_name("serve_tiny.py")


class ServingError(RuntimeError):
    """The serving process failed or did not answer in time."""


@dataclasses.dataclass
class ServingRun:
    """What one serving process did."""

    seconds_to_first_output: float
    result: dict[str, Any]
    compile_cache_lines: list[dict[str, int]]  # the runtime loader's `modelwarmup: {"compile_cache": ...}`
    stderr: str
    init_output: str = ""

    @property
    def warm(self) -> bool:
        stats = self.compile_cache_lines[-1] if self.compile_cache_lines else self.result["stats"]
        return stats.get("fxgraph_cache_hit", 0) > 0 and stats.get("fxgraph_cache_miss", 0) == 0


def _program_args(repo: str, revision: str, manifest: Path, length: int) -> list[str]:
    return [
        sys.executable,
        str(PROGRAM),
        "--repo",
        repo,
        "--revision",
        revision,
        "--manifest",
        str(manifest),
        "--length",
        str(length),
    ]


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> ServingRun:
    """Run the server to its first output; kill its whole process group after (helpers too)."""
    out, err = cwd / "stdout", cwd / "stderr"
    started = time.time()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=stdout, stderr=stderr, start_new_session=True
        )
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    stdout_text, stderr_text = out.read_text(errors="replace"), err.read_text(errors="replace")
    if code != 0:
        what = f"timed out after {timeout:.0f}s" if code is None else f"exited {code}"
        raise ServingError(f"serving process {what}:\n{stdout_text[-2000:]}\n{stderr_text[-4000:]}")
    result = json.loads([line for line in stdout_text.splitlines() if line.startswith("{")][-1])
    lines = [
        json.loads(line.removeprefix("modelwarmup: "))["compile_cache"]
        for line in stderr_text.splitlines()
        if line.startswith('modelwarmup: {"compile_cache"')
    ]
    return ServingRun(round(result["first_output_at"] - started, 3), result, lines, stderr_text)


def run_serving_pod(
    client: KubeClient,
    deployment: dict[str, Any],
    *,
    claims_root: Path,
    home: Path,
    repo: str,
    revision: str,
    manifest: Path,
    container: str = "server",
    length: int = 13,
    timeout: float = 300.0,
) -> ServingRun:
    """Run the template's init containers, then ``serve_tiny.py`` as ``container``."""
    meta = deployment["metadata"]
    template = deployment["spec"]["template"]
    sandbox = Sandbox(
        client=client,
        namespace=meta["namespace"],
        pod_name=f"{meta['name']}-local",
        pod_spec=template["spec"],
        home=home,
        claims_root=claims_root,
    )
    init_output = []
    for init in template["spec"].get("initContainers") or []:
        config = sandbox.config(init)
        done = subprocess.run(
            config.argv,
            env=config.env,
            cwd=config.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        init_output.append(done.stdout + done.stderr)
        if done.returncode != 0:
            raise ServingError(
                f"init container {init['name']} exited {done.returncode}: {done.stderr[-2000:]}"
            )
    spec = next(c for c in template["spec"]["containers"] if c["name"] == container)
    config = sandbox.config(spec)
    run = _run(_program_args(repo, revision, manifest, length), config.env, config.cwd, timeout)
    run.init_output = "".join(init_output)
    return run


def run_cold(
    *,
    cache_dir: Path,
    home: Path,
    repo: str,
    revision: str,
    manifest: Path,
    length: int = 13,
    timeout: float = 300.0,
) -> ServingRun:
    """The same server, never warmed: weights from ``cache_dir``'s hub cache, an empty Inductor cache."""
    for sub in ("home", "tmp", "work"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    inductor = Path(tempfile.mkdtemp(prefix="inductor-", dir=home))
    env = {
        **kubelet.base_env(home=home / "home", tmp=home / "tmp", hostname="cold"),
        "HF_HOME": str(cache_dir / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TORCHINDUCTOR_CACHE_DIR": str(inductor),
    }
    return _run(_program_args(repo, revision, manifest, length), env, home / "work", timeout)
