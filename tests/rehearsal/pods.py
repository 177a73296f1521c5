"""Start a serving pod of a rehearsal-wired Deployment on this host, as a node would run it.

The init containers (the operator's ``modelwarmup restore``) run first, with their volumes mapped
to host folders (:class:`tests.k8s.kubelet.Sandbox`), then the server container's own command
(vLLM from its venv), until it is ready and has served one completion.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelwarmup.rehearsal import capture, engines
from tests.k8s.client import KubeClient
from tests.k8s.kubelet import Sandbox
from tests.rehearsal.vllm import first_completion


@dataclass
class ServedPod:
    seconds_to_completion: float
    completion: dict[str, Any]
    log: str
    init_output: str
    engine_cache: Path  # the host folder of the pod's engine-cache emptyDir
    files_before: set[str]
    files_after: set[str]

    @property
    def engine_init_seconds(self) -> float | None:
        return engines.engine_init_seconds(self.log)


def serve_once(
    client: KubeClient,
    deployment: dict[str, Any],
    *,
    claims_root: Path,
    home: Path,
    engine_volume: str,
    model: str,
) -> ServedPod:
    meta, template = deployment["metadata"], deployment["spec"]["template"]
    sandbox = Sandbox(
        client=client,
        namespace=meta["namespace"],
        pod_name=f"{meta['name']}-local",
        pod_spec=template["spec"],
        home=home,
        claims_root=claims_root,
    )
    started = time.monotonic()
    init_output = ""
    for init in template["spec"].get("initContainers") or []:
        config = sandbox.config(init)
        done = subprocess.run(
            config.argv, env=config.env, cwd=config.cwd, capture_output=True, text=True, timeout=300
        )
        init_output += done.stdout + done.stderr
        assert done.returncode == 0, f"init container {init['name']}: {done.stdout}{done.stderr}"
    engine_cache = sandbox.volumes()[engine_volume]
    before = capture.files(engine_cache)
    server = template["spec"]["containers"][0]
    config = sandbox.config(server)
    port = next(int(a) for i, a in enumerate(config.argv) if i and config.argv[i - 1] == "--port")
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            config.argv, env=config.env, cwd=config.cwd, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        completion = first_completion(process, log_path, port, model, started=started)
        seconds = time.monotonic() - started
    finally:
        process.terminate()
        process.wait(60)
    return ServedPod(
        seconds,
        completion,
        log_path.read_text(),
        init_output,
        engine_cache,
        before,
        capture.files(engine_cache),
    )
