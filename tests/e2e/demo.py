"""The README's main job: the whole modelwarmup loop on this machine, offline, in about a minute.

    python -m tests.e2e.demo        (or: make demo)

1. A local Hugging Face hub serves a generated tiny Llama (``devkit/tiny-llama``).
2. An emulated Kubernetes API server gets the ModelWarmup CRD; the real operator runs against it
   over HTTP; a local kubelet runs the warm-up Jobs the operator creates as local processes.
3. A serving Deployment and a ModelWarmup (examples/minimal.yaml, pointed at the tiny model, with
   a CPU target) are applied; the resource's progress is printed as ``kubectl get mw`` shows it.
4. Once Ready, a serving process is started cold (an empty Inductor cache) and then warm (from the
   Deployment's pod template as the operator patched it), and both times to first output are
   printed.

Why it lives under tests/: it is built from the same parts as the integration tests (the API
server emulator, the kubelet, the serving-pod runner), which are test infrastructure, and it is a
check as much as a show: it exits non-zero when the loop does not close.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import serving
from tests.e2e.cluster import MW, ROOT, LocalCluster
from tests.k8s import printer
from tests.k8s.client import DEPLOYMENTS

NAMESPACE = "default"
REPO = "devkit/tiny-llama"
CLAIM = "modelwarmup-cache"
WIDTHS = (12, 6, 11, len(REPO), 40, 4)  # NAME READY REASON MODEL REVISION AGE, as `kubectl get -w` keeps them


def _say(text: str = "") -> None:
    print(text, flush=True)


def modelwarmup() -> dict[str, Any]:
    """examples/minimal.yaml for the tiny model: a CPU target, small compile shapes, serving wired."""
    body: dict[str, Any] = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text()))
    body["metadata"] = {"name": "tiny-llama", "namespace": NAMESPACE}
    body["spec"]["model"] = {"repo": REPO}
    body["spec"]["compile"] = {"dtype": "float32", "maxLength": 64, "sequenceLengths": [8]}
    body["spec"]["cache"] = {"create": {"name": CLAIM, "size": "1Gi"}}
    body["spec"]["serving"] = {"names": ["chat"], "containers": ["server"]}
    return body


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat", "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "chat"}},
            "template": {
                "metadata": {"labels": {"app": "chat"}},
                "spec": {"containers": [{"name": "server", "image": "example/llm-server:1"}]},
            },
        },
    }


def _ready(obj: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})


def watch(cluster: LocalCluster, name: str, *, timeout: float, every: float = 2.0) -> dict[str, Any]:
    """Print `kubectl get mw -w`-style rows until Ready is True (or a failure that stays)."""
    columns = printer.printer_columns(
        yaml.safe_load((ROOT / "crds" / "modelwarmups.modelwarmup.dev.yaml").read_text())
    )
    deadline = time.monotonic() + timeout
    header = True
    while True:
        obj = cluster.kube.get(MW, name, namespace=NAMESPACE)
        _say(printer.format_table(printer.rows([obj], columns), header=header, widths=WIDTHS))
        header = False
        ready = _ready(obj)
        if ready.get("status") == "True" or ready.get("reason") in ("JobFailed", "InvalidSpec"):
            return obj
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} not Ready after {timeout:.0f}s: {ready}")
        time.sleep(every)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.e2e.demo", description="modelwarmup's whole loop, locally."
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the cluster's files in this folder")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds to wait for Ready")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # kopf's and the hub's chatter stays out of the way
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modelwarmup-demo-") as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        return _demo(root, args.timeout, started)


def _demo(root: Path, timeout: float, started: float) -> int:
    from tests.devkit.hub import LocalHub
    from tests.devkit.tiny_model import make_tiny_llama

    _say(f"== a tiny Llama on a local Hugging Face hub ({REPO})")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model_dir = make_tiny_llama(root / "tiny-llama")
    with LocalHub() as hub:
        commit = hub.add_repo(REPO, model_dir)
        _say(f"   {hub.endpoint}  commit {commit[:12]}")
        _say("== an emulated API server with the ModelWarmup CRD, the operator, a local kubelet")
        with LocalCluster(root / "cluster", kubelet_env={"HF_ENDPOINT": hub.endpoint}) as cluster:
            assert cluster.kubelet is not None
            _say(f"   API server {cluster.server.url}")
            _say("== kubectl apply -f deployment.yaml -f modelwarmup.yaml")
            cluster.kube.create(DEPLOYMENTS, deployment(), namespace=NAMESPACE)
            cluster.kube.create(MW, modelwarmup(), namespace=NAMESPACE)
            _say("== kubectl get mw -w")
            obj = watch(cluster, "tiny-llama", timeout=timeout)
            if _ready(obj).get("status") != "True":
                _say(f"!! the warm-up failed: {_ready(obj).get('message')}")
                return 1
            return _serve(cluster, obj, root, started)


def _serve(cluster: LocalCluster, obj: dict[str, Any], root: Path, started: float) -> int:
    assert cluster.kubelet is not None
    status = obj["status"]
    [target] = status["targets"]
    _say(
        f"   target {target['name']}: Job {target['job']}, {target['bytes'] / 1e6:.1f} MB, "
        f"download {target['downloadSeconds']:.1f}s, compile {target['compileSeconds']:.1f}s"
    )
    live = cluster.kube.get(DEPLOYMENTS, "chat", namespace=NAMESPACE)
    key = live["spec"]["template"]["metadata"]["annotations"]["modelwarmup.dev/model-key"]
    _say(f"   Deployment chat: template annotation modelwarmup.dev/model-key={key}")

    cache = cluster.kubelet.claim_dir(NAMESPACE, CLAIM)
    manifest = cache / "compiled" / target["entryKey"] / "manifest.json"
    revision = status["resolvedRevision"]
    _say("== a serving process, cold (empty Inductor cache)")
    try:
        cold = serving.run_cold(
            cache_dir=cache, home=root / "cold", repo=REPO, revision=revision, manifest=manifest, timeout=150
        )
    except serving.ServingError as error:
        _say(f"!! {error}")
        return 1
    _say(f"   first output after {cold.seconds_to_first_output:.1f}s  ({_counts(cold.result['stats'])})")
    _say("== the same server from the patched pod template (verify init container, then warm)")
    try:
        warm = serving.run_serving_pod(
            cluster.kubelet.client, live, claims_root=cluster.kubelet.root / "claims", home=root / "warm",
            repo=REPO, revision=revision, manifest=manifest, timeout=90,
        )  # fmt: skip
    except serving.ServingError as error:
        _say(f"!! the warm start failed: {str(error)[:2000]}")
        return 1
    stats = warm.compile_cache_lines[-1] if warm.compile_cache_lines else warm.result["stats"]
    _say(f"   first output after {warm.seconds_to_first_output:.1f}s  ({_counts(stats)})")
    _say()
    _say(f"cold start: {cold.seconds_to_first_output:.1f}s   warm start: {warm.seconds_to_first_output:.1f}s")
    _say(f"(the whole demo took {time.monotonic() - started:.0f}s)")
    if not warm.warm:
        _say("!! the serving process did not start warm")
        return 1
    return 0


def _counts(stats: dict[str, int]) -> str:
    return f"FX graph cache: {stats.get('fxgraph_cache_hit', 0)} hit(s), {stats.get('fxgraph_cache_miss', 0)} miss(es)"


if __name__ == "__main__":
    sys.exit(main())
