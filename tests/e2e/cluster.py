"""A whole local "cluster" in one process: the emulated API server with the generated CRD, the
real operator (kopf, over HTTP), and optionally the local kubelet that runs warm-up Jobs.

The pytest fixtures of ``tests/operator`` build the same pieces one by one per test; this class
is for what outlives one test function: the demo (``python -m tests.e2e.demo``), the operator
benchmark, and module-scoped fixtures that share one expensive warm-up between tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import kopf

from modelwarmup.api import resource
from modelwarmup.controller import handlers
from modelwarmup.controller.settings import OperatorSettings
from tests.k8s.client import JOBS, KubeClient, Res
from tests.k8s.emulator import ApiServer
from tests.k8s.kopf_runner import OperatorThread
from tests.k8s.kubelet import LocalKubelet

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "modelwarmups.modelwarmup.dev.yaml"
MW = Res(resource.API_VERSION, resource.PLURAL)
WORKER_IMAGE = "modelwarmup/worker:test"


def operator_settings(kubeconfig: Path, **changes: Any) -> OperatorSettings:
    """Settings for an operator run against a local API server (no metrics or liveness ports)."""
    values: dict[str, Any] = {
        "kubeconfig": str(kubeconfig),
        "metrics_port": 0,
        "liveness_port": 0,
        "worker_image": WORKER_IMAGE,
    }
    return OperatorSettings(**{**values, **changes})


class LocalCluster:
    """``with LocalCluster(root) as cluster:`` — ``cluster.kube``, ``.server``, ``.kubelet``, ``.operator``."""

    def __init__(
        self,
        root: Path,
        *,
        kubelet_env: Mapping[str, str] | None = None,
        run_jobs: bool = True,
        settings: Mapping[str, Any] | None = None,
        configure: Callable[[kopf.OperatorSettings], None] | None = None,
        server_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = root
        self._kubelet_env = dict(kubelet_env or {})
        self._run_jobs = run_jobs
        self._settings = dict(settings or {})
        self._configure = configure
        self._server_options = dict(server_options or {})
        self._stack = contextlib.ExitStack()
        self.server: ApiServer
        self.kube: KubeClient
        self.kubelet: LocalKubelet | None = None
        self.operator: OperatorThread

    def __enter__(self) -> LocalCluster:
        try:
            self.server = self._stack.enter_context(ApiServer(**self._server_options))
            self.server.install_crd(str(CRD_PATH))
            self.kube = self.server.client()
            if self._run_jobs:
                kubelet = LocalKubelet(
                    self.server.access, root=self.root / "node", default_env=self._kubelet_env
                )
                self.kubelet = self._stack.enter_context(kubelet)
            kubeconfig = self.server.kubeconfig()
            settings = operator_settings(kubeconfig, **self._settings)
            self.operator = OperatorThread(
                kubeconfig,
                lambda registry: handlers.register(registry, settings),
                login=False,  # the product's handlers log in themselves
                configure=self._configure,
            )
            mark = self.server.mark()
            self._stack.enter_context(self.operator)
            self.server.wait_watching(MW, JOBS, since=mark)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self._stack.close()
